"""Output width for the CLI: whole table cells and help lines when output is piped or redirected.

Rich lays out for 80 columns when it cannot ask a terminal, so a table piped into a file or
``grep`` gets its cells cut (``Which elemen…``, ``acc…``). Every console of the CLI (``memory``,
``eval``, ``policy`` and Typer's help) reads ``COLUMNS`` when it renders, so one setting at start-up
covers them all without touching each module.
"""

from __future__ import annotations

import os
import sys
from typing import Any

# Wide enough that no table of ours is cut; tables are not expanded, so they keep their natural width.
PIPED_COLUMNS = 4096
# Help is drawn in full-width panels: wide enough for every option line, narrow enough to read.
PIPED_HELP_COLUMNS = 160


def widen_when_piped() -> bool:
    """Lay output out wide when stdout is not a terminal and the user has not set ``COLUMNS``.

    Returns:
        True if the width was changed.

    """
    if os.environ.get("COLUMNS") or sys.stdout.isatty():
        return False
    os.environ["COLUMNS"] = str(PIPED_COLUMNS)
    rich_utils: Any = sys.modules.get("typer.rich_utils")
    if rich_utils is None:
        # Typer reads TERMINAL_WIDTH when it imports its Rich help module, which only help and
        # error output need: importing it here would cost every piped command ~0.15 s.
        os.environ.setdefault("TERMINAL_WIDTH", str(PIPED_HELP_COLUMNS))
    elif getattr(rich_utils, "MAX_WIDTH", None) is None:
        rich_utils.MAX_WIDTH = PIPED_HELP_COLUMNS
    return True
