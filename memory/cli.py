"""`memento memory ...`: inspect and maintain the case bank."""

from __future__ import annotations

import typer

app = typer.Typer(help="Inspect and maintain the case bank.", no_args_is_help=True)
