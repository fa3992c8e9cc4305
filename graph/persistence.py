"""Checkpointers: a SQLite file by default, Postgres when a connection URL is configured."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

DEFAULT_CHECKPOINTS = os.path.join(".memento", "checkpoints.sqlite")


class CheckpointerError(RuntimeError):
    """The checkpoint store cannot be opened; the message names it and says what to check."""


def checkpoint_url(url: str | None = None) -> str:
    """The location: the argument (``Context.checkpoint_url``, ``--checkpoint-url``), else the SQLite default."""
    return url or DEFAULT_CHECKPOINTS


def _redact(url: str) -> str:
    """The URL without its password, fit for an error message."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in creds:
        return url
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"


@contextlib.asynccontextmanager
async def open_checkpointer(url: str | None = None) -> AsyncIterator[object]:
    """An async checkpointer for ``graph.ainvoke``.

    Args:
        url: ``postgresql://...`` for Postgres; a file path or ``sqlite:///path`` for SQLite.

    Raises:
        CheckpointerError: The store cannot be reached or created (raised on entry only: errors
            of the body pass through unchanged).

    """
    url = checkpoint_url(url)
    help_ = "check MEMENTO_CHECKPOINT_URL or --checkpoint-url"
    if url.startswith(("postgres://", "postgresql://")):
        import psycopg
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

        # Only opening and setup are translated; an error raised by the caller's body is its own.
        stack = contextlib.AsyncExitStack()
        try:
            saver = await stack.enter_async_context(AsyncPostgresSaver.from_conn_string(url))
            await saver.setup()
        except (psycopg.Error, OSError) as exc:
            await stack.aclose()
            reason = " ".join(str(exc).split())
            raise CheckpointerError(
                f"cannot open the Postgres checkpoint store {_redact(url)}: {reason} ({help_})"
            ) from None
        async with stack:
            yield saver
        return
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    path = url.removeprefix("sqlite:///")
    stack = contextlib.AsyncExitStack()
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        sqlite_saver = await stack.enter_async_context(AsyncSqliteSaver.from_conn_string(path))
        await sqlite_saver.setup()
    except (sqlite3.Error, OSError) as exc:
        await stack.aclose()
        raise CheckpointerError(f"cannot open the SQLite checkpoint store {path}: {exc} ({help_})") from None
    async with stack:
        yield sqlite_saver
