"""Process-wide handles the nodes share (bank, experience log), built from the run's Context."""

from __future__ import annotations

import functools

from graph.context import Context
from memory.bank import CaseBank, open_bank
from memory.experience import ExperienceLog


def bank_for(ctx: Context) -> CaseBank:
    """The case bank the context points at (one client per location per process)."""
    return open_bank(ctx.bank_path or None, ctx.chroma_url or None, ctx.namespace)


@functools.lru_cache(maxsize=8)
def _experience(path: str) -> ExperienceLog:
    return ExperienceLog(path)


def experience_for(ctx: Context) -> ExperienceLog:
    """The experience log the context points at."""
    return _experience(ctx.experience_path)
