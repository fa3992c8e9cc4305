"""Process-wide handles the nodes share (bank, experience log), built from the run's Context."""

from __future__ import annotations

import functools
import logging
import threading

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


def warm_resources(ctx: Context, question: str | None = None) -> threading.Thread:
    """Open the case bank and load the embedder on a daemon thread (CLI start-up, server start).

    The first retrieval then finds both ready, and with ``question`` its embedding is already
    cached. Failures are left for the node itself to raise with its own message.
    """

    def run() -> None:
        if ctx.memory_mode == "none" or ctx.k == 0:
            return
        try:
            from memory.embeddings import warm_embedder

            warm_embedder(query=question or "warm-up", cached=True).join()
            bank_for(ctx).count()
        except Exception:
            logging.getLogger(__name__).debug("warm-up failed", exc_info=True)

    thread = threading.Thread(target=run, name="memento-warmup", daemon=True)
    thread.start()
    return thread
