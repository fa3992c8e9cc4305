"""Embedded Chroma stores: one client per bank folder, reopened when another process wrote.

An embedded client keeps its HNSW index in memory and does not notice writes made by other
processes. Every write therefore stamps a generation token in the folder, and a store that sees a
token it did not write reopens its client (under the folder's write lock) before the next read.
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


class Store:
    """A Chroma client plus the collections opened through it (server mode: nothing to refresh)."""

    def __init__(self, client: Any):
        self.client = client
        self.collections: dict[str, Any] = {}
        self.mutex = threading.RLock()

    def refresh(self) -> None:
        """Reopen the client if another process wrote (embedded mode only)."""

    def mark_written(self) -> None:
        """Publish that this process wrote (embedded mode only)."""


class EmbeddedStore(Store):
    """One embedded client per bank folder per process, reopened when another process wrote."""

    def __init__(self, path: Path, lock_timeout: float):
        self.path = path
        self._settings: Any = None
        # One lock object per folder per process: two FileLock objects on one file in one
        # process would block each other (flock is per open file), so banks share this one.
        self.lock = FileLock(str(path / LOCK_FILE), timeout=lock_timeout)
        with self.locked(lock_timeout):
            self.seen = self._generation()
            super().__init__(self._open())
            manifest = path / MANIFEST
            if not manifest.exists():
                manifest.write_text(json.dumps({"format": BANK_FORMAT, "created_at": now()}))

    @contextlib.contextmanager
    def locked(self, timeout: float) -> Iterator[None]:
        """Hold the folder's write lock (re-entrant within a thread)."""
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

    def _open(self) -> Any:
        import chromadb

        try:
            if self._settings is None:
                # Built once per store: constructing Chroma's pydantic Settings (env and .env
                # parsing) took 34 ms of a 50 ms reopen, and a write by another process makes
                # every other writer reopen.
                from chromadb.config import Settings

                self._settings = Settings(anonymized_telemetry=False, allow_reset=False)
            client = chromadb.PersistentClient(path=str(self.path), settings=self._settings)
            client.list_collections()
        except BaseException as exc:
            if is_fatal(exc):
                raise
            raise BankError(
                f"the case bank at {self.path} cannot be opened ({type(exc).__name__}: {exc}); "
                "it looks corrupt. " + RECOVERY.format(path=self.path)
            ) from exc
        return client

    def _generation(self) -> str:
        try:
            return (self.path / GENERATION).read_text()
        except FileNotFoundError:
            return ""

    def refresh(self) -> None:
        """Reopen the client if another process wrote since this one last looked."""
        if self._generation() == self.seen:
            return
        # Reload under the write lock so no other process is halfway through writing the index.
        with self.locked(self.lock.timeout), self.mutex:
            gen = self._generation()
            if gen == self.seen:
                return
            with contextlib.suppress(Exception):
                self.client.close()
            _forget_shared_system(self.path)
            self.seen = gen
            self.client = self._open()
            self.collections = {}

    def mark_written(self) -> None:
        """Stamp a new generation token, so every other process reopens before its next read."""
        token = uuid.uuid4().hex
        tmp = self.path / f"{GENERATION}.{os.getpid()}.tmp"
        tmp.write_text(token)
        os.replace(tmp, self.path / GENERATION)
        self.seen = token


# The one process-wide registry left on purpose (not a cache: nothing ever needs clearing). It
# mirrors two per-process facts outside our control: Chroma shares one system per folder within a
# process (its own `SharedSystemClient` registry), and flock locks belong to open files, so two
# lock objects on one folder in one process would block each other. Every `CaseBank` on a folder
# (a graph's, a test's, a CLI command's) therefore shares one store and one generation view.
_STORES: dict[tuple[int, str], EmbeddedStore] = {}
_STORES_LOCK = threading.Lock()


def embedded_store(path: Path, lock_timeout: float) -> EmbeddedStore:
    """The store of a bank folder in this process (created on first use)."""
    # The pid in the key keeps forked children off the parent's store.
    key = (os.getpid(), str(path))
    with _STORES_LOCK:
        store = _STORES.get(key)
        if store is None:
            store = _STORES[key] = EmbeddedStore(path, lock_timeout)
        return store


def _forget_shared_system(path: Path) -> None:
    """Drop the folder's system from Chroma's private per-process registry (the one patch into Chroma).

    Another client object on this folder (outside the bank) keeps Chroma's shared system alive, so a
    reopened client would get the old in-memory index back. Chroma has no public way to forget it
    (``SharedSystemClient.clear_system_cache`` forgets every folder's), hence these two private dicts.
    """
    from chromadb.api.shared_system_client import SharedSystemClient

    ident = str(path)
    SharedSystemClient._identifier_to_system.pop(ident, None)
    SharedSystemClient._identifier_to_refcount.pop(ident, None)
