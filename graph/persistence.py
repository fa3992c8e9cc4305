"""Checkpointers: a SQLite file by default, Postgres when a connection URL is configured."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

DEFAULT_CHECKPOINTS = os.path.join(".memento", "checkpoints.sqlite")


def checkpoint_url(url: str | None = None) -> str:
    """The configured location: argument, then ``MEMENTO_CHECKPOINT_URL``, then the SQLite default."""
    return url or os.environ.get("MEMENTO_CHECKPOINT_URL") or DEFAULT_CHECKPOINTS


@contextlib.asynccontextmanager
async def open_checkpointer(url: str | None = None) -> AsyncIterator[object]:
    """An async checkpointer for ``graph.ainvoke``.

    Args:
        url: ``postgresql://...`` for Postgres; a file path or ``sqlite:///path`` for SQLite.

    """
    url = checkpoint_url(url)
    if url.startswith(("postgres://", "postgresql://")):
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

        try:
            async with AsyncPostgresSaver.from_conn_string(url) as saver:
                await saver.setup()
                yield saver
        except OSError as exc:
            raise RuntimeError(f"cannot connect to the Postgres checkpointer at {url}: {exc}") from exc
        return
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    path = url.removeprefix("sqlite:///")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    async with AsyncSqliteSaver.from_conn_string(path) as saver:
        yield saver
