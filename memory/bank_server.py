"""Chroma server mode: the HTTP client and collections whose calls retry transient server states."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from memory.bank_folder import BankError


def http_client(url: str) -> Any:
    """A client of the Chroma server at ``url`` that answered a heartbeat.

    Raises:
        BankError: The URL is invalid or the server unreachable.

    """
    from memory.chroma_import import import_chromadb

    chromadb = import_chromadb("http")
    from chromadb.config import Settings

    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise BankError(f"invalid Chroma server URL {url!r}: expected http://host:port")
    try:
        client = chromadb.HttpClient(
            host=parsed.hostname,
            port=parsed.port or (443 if parsed.scheme == "https" else 8000),
            ssl=parsed.scheme == "https",
            settings=Settings(anonymized_telemetry=False, allow_reset=False),
        )
        client.heartbeat()
    except Exception as exc:
        raise BankError(
            f"cannot reach the Chroma server at {url}: {exc}. Start it with "
            f"`chroma run --path <dir> --port {parsed.port or 8000}` or unset MEMENTO_CHROMA_URL "
            "to use the embedded bank."
        ) from exc
    return client


def is_fatal(exc: BaseException) -> bool:
    """Whether an exception must pass through untouched (an interrupt, an exit)."""
    # pyo3 panics from Chroma's Rust core derive from BaseException; only these three must pass.
    return isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit)


# Transient server-side states seen with `chroma run` under concurrent clients (a just-created
# collection has no index files yet); the same request succeeds moments later.
_TRANSIENT = ("Nothing found on disk", "database is locked")


class RetryingCollection:
    """A server collection whose calls retry transient errors (all our writes are idempotent)."""

    def __init__(self, col: Any, attempts: int = 8):
        self._col = col
        self._attempts = attempts

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._col, name)
        if name not in ("get", "query", "add", "upsert", "update", "delete", "count"):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

            retrying = Retrying(
                stop=stop_after_attempt(self._attempts),
                wait=wait_exponential(multiplier=0.05, max=2.0),
                retry=retry_if_exception(lambda e: any(t in str(e) for t in _TRANSIENT)),
                reraise=True,
            )
            return retrying(attr, *args, **kwargs)

        return call
