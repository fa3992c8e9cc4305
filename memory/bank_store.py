"""Embedded Chroma stores: each `CaseBank` owns one client per bank folder, reopened when another writer wrote.

An embedded client keeps its HNSW index in memory and does not notice writes made by other
processes (or by another store on the same folder in this process). Every write therefore stamps
a generation token in the folder, and a store that sees a token it did not write reopens its
client (under the folder's write lock) before the next read.

Nothing here is shared through a module global. Two per-process facts outside our control are
handled where they arise: flock locks belong to open files, so every store on a folder uses
filelock's one lock object per path (`bank_lock`); and Chroma shares one ``System`` per folder per
process through its private ``SharedSystemClient`` registry, so each store takes its client's
system out of that registry and owns it alone (`_private_client`): one store's reopen or close
never stops a system another store still reads through.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from memory.bank_folder import BANK_FORMAT, GENERATION, LOCK_FILE, MANIFEST, RECOVERY, BankError
from memory.bank_server import is_fatal
from memory.cases import now


def bank_lock(path: Path) -> FileLock:
    """The write lock of a bank folder: one object per lock file in this process.

    flock locks belong to open files: two lock objects on one file in one process would block
    each other (a bank writing from inside another bank's write on the same folder would wait for
    itself). filelock's singleton hands every caller the same re-entrant object instead (held per
    thread, so two threads still exclude each other). Its options must match on every call, so
    the timeout is passed to ``acquire``.
    """
    return FileLock(str(path / LOCK_FILE), is_singleton=True)


class Store:
    """A Chroma client plus the collections opened through it (server mode: nothing to refresh)."""

    def __init__(self, client: Any, url: str | None = None):
        self.client = client
        self.url = url
        self.collections: dict[str, Any] = {}
        self.mutex = threading.RLock()

    def refresh(self) -> None:
        """Reopen the client if another writer wrote (embedded mode only)."""

    def mark_written(self) -> None:
        """Publish that this store wrote (embedded mode only)."""

    def close(self) -> None:
        """Release the client (a server's HTTP client holds nothing worth releasing)."""


class EmbeddedStore(Store):
    """One embedded client on a bank folder, owned by its banks, reopened when another writer wrote."""

    def __init__(self, path: Path, lock_timeout: float):
        self.path = path
        self.lock_timeout = lock_timeout
        self._settings: Any = None
        self._system: Any = None
        self.lock = bank_lock(path)
        with self.locked(lock_timeout):
            self.seen = self._generation()
            client, self._system = self._open()
            super().__init__(client)
            manifest = path / MANIFEST
            if not manifest.exists():
                manifest.write_text(json.dumps({"format": BANK_FORMAT, "created_at": now()}))

    @contextlib.contextmanager
    def locked(self, timeout: float) -> Iterator[None]:
        """Hold the folder's write lock (re-entrant within a thread, across every store on the folder)."""
        try:
            self.lock.acquire(timeout=timeout)
        except Timeout as exc:
            from memory.lock_holder import break_if_stale, describe_holder

            # A lock left by a dead process on this machine (network filesystems without
            # flock) is broken once; a live holder is named instead, never overridden.
            if not break_if_stale(self.path / LOCK_FILE):
                raise BankError(describe_holder(self.path, self.path / LOCK_FILE, timeout)) from exc
            try:
                self.lock.acquire(timeout=timeout)
            except Timeout as again:
                raise BankError(describe_holder(self.path, self.path / LOCK_FILE, timeout)) from again
        try:
            if self.lock.lock_counter == 1:
                from memory.lock_holder import record_holder

                record_holder(self.path / LOCK_FILE)
            yield
        finally:
            self.lock.release()

    def _open(self) -> tuple[Any, Any]:
        """A new client on the folder and the Chroma system it owns alone."""
        try:
            if self._settings is None:
                # Built once per store: constructing Chroma's pydantic Settings (env and .env
                # parsing) took 34 ms of a 50 ms reopen.
                from chromadb.config import Settings

                self._settings = Settings(anonymized_telemetry=False, allow_reset=False)
            client, system = _private_client(self.path, self._settings)
            client.list_collections()
        except BaseException as exc:
            if is_fatal(exc):
                raise
            raise BankError(
                f"the case bank at {self.path} cannot be opened ({type(exc).__name__}: {exc}); "
                "it looks corrupt. " + RECOVERY.format(path=self.path)
            ) from exc
        return client, system

    def _generation(self) -> str:
        try:
            return (self.path / GENERATION).read_text()
        except FileNotFoundError:
            return ""

    def _check_open(self) -> None:
        if self._system is None:
            raise BankError(f"the case bank at {self.path} was closed; open it again")

    def refresh(self) -> None:
        """Reopen the client if another writer wrote since this store last looked."""
        self._check_open()
        if self._generation() == self.seen:
            return
        # Reload under the write lock so no other process is halfway through writing the index.
        with self.locked(self.lock_timeout), self.mutex:
            self._check_open()
            gen = self._generation()
            if gen == self.seen:
                return
            client, system = self._open()
            old, self._system = self._system, system
            self.seen = gen
            self.client = client
            self.collections = {}
            # This store alone used the old system: stopping it frees its index and threads now.
            with contextlib.suppress(Exception):
                old.stop()

    def mark_written(self) -> None:
        """Stamp a new generation token, so every other store reopens before its next read."""
        token = uuid.uuid4().hex
        tmp = self.path / f"{GENERATION}.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_text(token)
        os.replace(tmp, self.path / GENERATION)
        self.seen = token

    def close(self) -> None:
        """Stop this store's Chroma system (its index, SQLite connections and threads); idempotent."""
        with self.mutex:
            system, self._system = self._system, None
            self.collections = {}
        if system is not None:
            with contextlib.suppress(Exception):
                system.stop()


# Chroma's registry of systems is process-wide; opening a private client reads and edits it in
# three steps, which two threads opening the same folder must not interleave (they would share
# one system, and one's close would stop the other's). A lock around a foreign registry, not a
# cache: it holds nothing.
_REGISTRY_LOCK = threading.Lock()


def _private_client(path: Path, settings: Any) -> tuple[Any, Any]:
    """A ``PersistentClient`` on ``path`` whose Chroma system nobody else in this process shares.

    Chroma keeps one system per folder per process in ``SharedSystemClient``'s private class dicts
    and hands it to every client of that folder; a client opened while another one (of another
    store, or outside the bank) is alive would get the other's in-memory index back, and closing
    either would stop both. So the folder's entry is dropped before opening (the other client
    keeps its system; it only stops being shared) and the new system is taken out right after:
    the caller owns it and stops it itself. Chroma has no public way to do this
    (``clear_system_cache`` forgets every folder's), hence the private dicts. A client only reads
    the registry while it is constructed, so one whose entry is gone keeps working.
    """
    import chromadb
    from chromadb.api.shared_system_client import SharedSystemClient

    ident = str(path)
    with _REGISTRY_LOCK:
        SharedSystemClient._identifier_to_system.pop(ident, None)
        SharedSystemClient._identifier_to_refcount.pop(ident, None)
        try:
            client = chromadb.PersistentClient(path=ident, settings=settings)
        finally:
            # Taken out even when opening failed: a half-started system must not be handed on.
            system = SharedSystemClient._identifier_to_system.pop(ident, None)
            SharedSystemClient._identifier_to_refcount.pop(ident, None)
    return client, system
