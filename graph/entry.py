"""The ``memento`` console script: starts ``ask``'s bank worker before the CLI's own imports.

It also runs ``memento memory …`` on the bank commands alone (see `_memory`).

`memento ask` shows its first cases once a child process has imported Chroma and opened the bank
(`memory.bank_worker`). Started from inside the ``ask`` command, the child waited for Typer, Rich
and every CLI module to import first (0.3-0.6 s on 2 cores). This entry point starts it first, from
the settings alone, and hands it to the command, which keeps it only if the command's own
settings name the same bank; any doubt means no early worker and the command's usual path.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from memory.bank_worker import BankWorker

# Options of `ask` that change which bank it opens, or whether it retrieves at all: with any of
# them the command starts its worker itself, after parsing them.
_BANK_OPTIONS = (
    "--bank", "--chroma-url", "--namespace", "--memory", "--k", "--thread", "-t", "--approve", "--reject", "--help",
)  # fmt: skip


def early_bank_worker(argv: list[str]) -> BankWorker | None:
    """A bank worker for ``memento ask "question"`` as configured by the environment, or None.

    Args:
        argv: The command line after the program name.

    """
    if not argv or argv[0] != "ask" or not any(not a.startswith("-") for a in argv[1:]):
        return None
    if any(a.split("=", 1)[0] in _BANK_OPTIONS for a in argv[1:]):
        return None
    try:
        from graph.context import Context, load_env_file
        from memory.bank_worker import BankWorker, has_spare_core

        load_env_file()  # what the CLI's callback does first
        ctx = Context()
        if not (ctx.bank_worker and ctx.memory_mode != "none" and ctx.k > 0 and has_spare_core()):
            return None
        return BankWorker.start(ctx.bank_path or None, ctx.chroma_url or None, ctx.namespace)
    except Exception:  # a bad setting: the command reports it in its own words
        return None


def main() -> None:
    """Run the CLI, with ``ask``'s bank worker started first (see the module doc)."""
    argv = sys.argv[1:]
    if argv[:1] == ["memory"]:
        _memory(argv[1:])
        return
    worker = early_bank_worker(argv)
    try:
        from graph.cli import app

        app(prog_name="memento", obj={"bank_worker": worker})
    finally:
        if worker is not None:
            worker.close()  # the command closed it already if it used it; closing again is a no-op


def _memory(argv: list[str]) -> None:
    """Run ``memento memory …`` without the rest of the CLI.

    The bank commands are what a person waits on most often, and the agent's and the evals' command
    modules cost them ~0.07 s of imports.
    """
    from graph.context import load_env_file
    from graph.terminal import widen_when_piped
    from memory.cli import app

    widen_when_piped()
    load_env_file()  # what the full CLI's callback does before any command reads its settings
    app(args=argv, prog_name="memento memory")
