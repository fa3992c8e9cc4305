"""`memento policy ...`: train, evaluate and inspect the case-selection policy."""

from __future__ import annotations

import typer

app = typer.Typer(help="Train, evaluate and inspect the learned case-selection policy.", no_args_is_help=True)
