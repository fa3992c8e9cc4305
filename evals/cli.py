"""`memento eval`: run the agent over a dataset and report learning curves."""

from __future__ import annotations


def eval_command() -> None:
    """Run an evaluation (being built)."""
    raise NotImplementedError
