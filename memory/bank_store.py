"""Embedded Chroma stores: each `CaseBank` owns one client per bank folder, kept current with other writers.

What an embedded client sees of other writers (processes, or other stores on the folder in this
process), as measured with Chroma 1.5 and read in its Rust sources:

* records (count, get, metadata) live in SQLite and are always current;
* vectors live in an HNSW index held in memory, loaded from the folder's index files on a
  collection's first use and then replaying the SQLite log of writes made since those files were
  saved. After that the index only moves when this client writes: each write first replays the
  log from the last *saved* index position onward (Chroma's "backfill"), then prunes the log below
  that position. The index files are saved by whichever client crosses ``hnsw:sync_threshold``
  (1,000 vectors by default) while applying the log, and their position is recorded in SQLite
  (table ``max_seq_id``).

So a stale in-memory index is caught up without reopening the client by any write to its
collection, as long as nobody saved the index files since this store last caught up: the log
still holds every write after that point. If someone did save them, the log below their position
is gone and only a reload from the files brings the index back (worse, a write by the stale
client would save an index that misses those vectors, for every later reader).

Every write stamps a generation token in the folder. A store that sees a token it did not write
then, under the folder's write lock, reopens its client if the saved-index positions moved since it
last looked (rare: about once per ``hnsw:sync_threshold`` writes), and otherwise only marks its
loaded collections as stale. A read that needs vectors (a search, stored embeddings) catches a
stale collection up with a no-op write (deleting an id no case has), which replays the log tail; a
read of records needs nothing, and a write catches its collection up by itself. A collection's
first load also happens under the lock, so it never reads index files another writer is saving.

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
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from memory.bank_folder import BANK_FORMAT, GENERATION, LOCK_FILE, MANIFEST, RECOVERY, SQLITE_FILE, BankError
from memory.bank_server import is_fatal
from memory.bank_spool import Spool
from memory.cases import now

SavedPositions = frozenset[tuple[str, int | None]]


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
    """A Chroma client plus the collections opened through it (server mode: always current)."""

    def __init__(self, client: Any, url: str | None = None):
        self.client = client
        self.url = url
        self.collections: dict[str, Any] = {}
        self.mutex = threading.RLock()

    def refresh(self) -> None:
        """Account for writes other writers made (embedded mode only)."""

    def sync(self) -> None:
        """Before a write, with the lock held: account for other writers (embedded mode only)."""

    def forget(self, namespace: str) -> None:
        """Drop a namespace's collection (it was deleted)."""
        self.collections.pop(namespace, None)

    def needs_lock(self, namespace: str, vectors: bool) -> bool:
        """Whether a read of ``namespace`` must first load or catch up its index under the lock."""
        return False

    def loaded(self, namespace: str, collection: Any) -> Any:
        """Keep a newly fetched collection (embedded mode: after loading its index)."""
        self.collections[namespace] = collection
        return collection

    def missing(self, namespace: str) -> None:
        """Note that ``namespace`` has no collection (embedded mode only)."""

    def is_stale(self, namespace: str) -> bool:
        """Whether the namespace's in-memory index may miss other writers' writes."""
        return False

    def catch_up(self, namespace: str, collection: Any) -> bool:
        """Bring a collection's in-memory index up to date (lock held); False if the client was reopened."""
        return True

    def mark_written(self) -> None:
        """Publish that this store wrote (embedded mode only)."""

    def close(self) -> None:
        """Release the client (a server's HTTP client holds nothing worth releasing)."""


class EmbeddedStore(Store):
    """One embedded client on a bank folder, owned by its banks, kept current with other writers."""

    def __init__(self, path: Path, lock_timeout: float):
        self.path = path
        self.lock_timeout = lock_timeout
        self._settings: Any = None
        self._system: Any = None
        # Namespaces whose in-memory index may miss other writers' writes (see the module doc).
        self.stale: set[str] = set()
        # Namespaces without a collection as of `seen`: a read need not take the lock to look again.
        self.absent: set[str] = set()
        self.reopens = 0
        self.catch_ups = 0
        self.lock = bank_lock(path)
        self.spool = Spool(path)
        # The generation stamp as this store's last write left it (see `lock_unless`).
        self.written: tuple[int, int] | None = None
        with self.locked(lock_timeout):
            self.seen = self._generation()
            client, self._system = self._open()
            super().__init__(client)
            self.marks = self._saved_positions()
            manifest = path / MANIFEST
            if not manifest.exists():
                manifest.write_text(json.dumps({"format": BANK_FORMAT, "created_at": now()}))

    @contextlib.contextmanager
    def locked(self, timeout: float) -> Iterator[None]:
        """Hold the folder's write lock (re-entrant within a thread, across every store on the folder)."""
        self._acquire(timeout)
        try:
            yield
        finally:
            self.lock.release()

    def _acquire(self, timeout: float) -> None:
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
        self._held()

    def _held(self) -> None:
        if self.lock.lock_counter == 1:
            from memory.lock_holder import record_holder

            try:
                record_holder(self.path / LOCK_FILE)
            except BaseException:
                self.lock.release()
                raise

    def stamp(self) -> tuple[int, int]:
        """Identity of the folder's generation stamp (replaced by every write): one stat, a cheap change signal."""
        try:
            st = os.stat(self.path / GENERATION)
        except FileNotFoundError:
            return (0, 0)
        return (st.st_ino, st.st_mtime_ns)

    def lock_unless(
        self,
        done: Callable[[], bool],
        timeout: float,
        *,
        since: tuple[int, int],
        poll: float = 0.005,
        defer: float = 0.03,
    ) -> bool:
        """Take the folder's write lock, unless ``done()`` turns true first.

        Polled every ``poll`` seconds (one stat, and a lock attempt when allowed): with eight
        writers on two cores, 5 ms instead of 2 ms took a fifth off the writers' CPU time at the
        same throughput, and filelock's own default (50 ms) would add up to that much to each wait.
        ``done`` is asked again only when the generation stamp moved (from ``since`` on). A store
        whose index is behind another writer's (it did not write last) tries the lock only once
        the last write is ``defer`` seconds old: a writer that is writing now gets the next turn,
        and its index needs no catch-up, where every other process's would replay the log.

        Returns:
            True with the lock held (the caller releases it), False when ``done()`` came first.
            After ``timeout`` seconds without either, the lock is taken as `locked` takes it
            (a stale holder broken, a live one named in a BankError).

        """
        deadline = time.monotonic() + timeout
        last = since
        while True:
            stamp = self.stamp()
            if stamp != last:
                last = stamp
                if done():
                    return False
            mine = self.lock.lock_counter > 0  # held by this thread already (a nested write)
            if mine or stamp == self.written or time.time_ns() - stamp[1] > defer * 1e9:
                try:
                    self.lock.acquire(timeout=0)
                except Timeout:
                    pass
                else:
                    self._held()
                    return True
            if time.monotonic() >= deadline:
                break
            time.sleep(poll)
        self._acquire(0)
        return True

    def _open(self) -> tuple[Any, Any]:
        """A new client on the folder and the Chroma system it owns alone."""
        try:
            if self._settings is None:
                # Built once per store: constructing Chroma's pydantic Settings (env and .env
                # parsing) took 34 ms of a 50 ms reopen.
                from memory.chroma_import import import_chromadb

                import_chromadb("persistent")
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

    def _reopen(self) -> None:
        """Replace the client by a new one (lock and mutex held); its indexes load from the files."""
        client, system = self._open()
        old, self._system = self._system, system
        self.client = client
        self.collections = {}
        self.stale = set()
        self.absent = set()
        self.reopens += 1
        # This store alone used the old system: stopping it frees its index and threads now.
        with contextlib.suppress(Exception):
            old.stop()

    def _generation(self) -> str:
        try:
            return (self.path / GENERATION).read_text()
        except FileNotFoundError:
            return ""

    def _saved_positions(self) -> SavedPositions | None:
        """The log position of each collection's saved index files, from Chroma's SQLite (lock held).

        None when it cannot be read (another Chroma schema): every foreign write then reopens.
        """
        try:
            conn = sqlite3.connect(f"file:{self.path / SQLITE_FILE}?mode=ro", uri=True, timeout=30)
            try:
                rows = conn.execute(
                    "SELECT s.id, m.seq_id FROM segments s LEFT JOIN max_seq_id m ON m.segment_id = s.id "
                    "WHERE s.scope = 'VECTOR'"
                ).fetchall()
            finally:
                conn.close()
        except sqlite3.Error:
            return None
        return frozenset((str(seg), None if seq is None else int(seq)) for seg, seq in rows)

    def _check_open(self) -> None:
        if self._system is None:
            raise BankError(f"the case bank at {self.path} was closed; open it again")

    def _sync(self) -> bool:
        """Account for other writers' writes since this store last looked (lock and mutex held).

        Returns:
            False when the client was reopened (collections fetched before must be fetched again).

        """
        self._check_open()
        gen = self._generation()
        if gen == self.seen and not self.stale:
            return True  # nobody else wrote: every loaded index is current
        marks = self._saved_positions()
        if marks is None or marks != self.marks:
            # Index files were saved since this store last looked (by another writer, or by a
            # reader's first load) while its indexes miss writes: the log below the saved
            # position is gone, so only a reload from the files brings them back. Collections
            # made or dropped elsewhere change the positions too, and are picked up the same way.
            self._reopen()
            self.seen, self.marks = gen, marks
            return False
        if gen != self.seen:
            self.stale |= self.collections.keys()
            self.absent.clear()
            self.seen = gen
        return True

    def refresh(self) -> None:
        """Account for writes other writers made since this store last looked."""
        self._check_open()
        if self._generation() == self.seen:
            return
        with self.locked(self.lock_timeout), self.mutex:
            self._sync()

    def sync(self) -> None:
        """Before a write, with the lock held: reopen if a stale index could no longer be caught up.

        A write replays the log into its collection's index first, so a stale one catches up by
        itself, unless index files were saved meanwhile (then `_sync` reopens).
        """
        with self.mutex:
            self._sync()

    def forget(self, namespace: str) -> None:
        """Drop a namespace's collection (it was deleted)."""
        self.collections.pop(namespace, None)
        self.stale.discard(namespace)

    def needs_lock(self, namespace: str, vectors: bool) -> bool:
        """Whether a read of ``namespace`` must first load its index, or catch it up, under the lock."""
        if namespace in self.absent:
            return False
        return namespace not in self.collections or (vectors and namespace in self.stale)

    def loaded(self, namespace: str, collection: Any) -> Any:
        """Load a newly fetched collection's index now and keep the collection (lock and mutex held).

        Chroma loads an index from its files on a collection's first use: under the lock, no other
        writer is saving them meanwhile. The load replays the log tail, which may save the files.
        """
        collection.count()
        self.collections[namespace] = collection
        self.absent.discard(namespace)
        self.marks = self._saved_positions()
        return collection

    def missing(self, namespace: str) -> None:
        """Note that ``namespace`` has no collection (until another write)."""
        self.absent.add(namespace)

    def is_stale(self, namespace: str) -> bool:
        """Whether the namespace's in-memory index may miss other writers' writes."""
        return namespace in self.stale

    def catch_up(self, namespace: str, collection: Any) -> bool:
        """Replay the log into a stale collection's index with a no-op write (lock and mutex held).

        Returns:
            False when the client was reopened instead (fetch the collection again).

        """
        if not self._sync():
            return False
        if namespace not in self.stale:
            return True
        try:
            # Deleting an id no case has changes nothing, but it is a write: Chroma first replays
            # the log from the saved index position into this client's index.
            collection.delete(ids=[f"memento-catch-up-{uuid.uuid4().hex}"])
        except Exception:
            self._reopen()
            self.marks = self._saved_positions()
            return False
        # Crossing the sync threshold while replaying may have saved the (now current) files.
        self.marks = self._saved_positions()
        self.stale.discard(namespace)
        self.catch_ups += 1
        return True

    def mark_written(self) -> None:
        """Stamp a new generation token (lock held), so every other store looks again before its next read."""
        token = uuid.uuid4().hex
        tmp = self.path / f"{GENERATION}.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_text(token)
        os.replace(tmp, self.path / GENERATION)
        self.seen = token
        self.written = self.stamp()
        # This write may have saved index files, or made or dropped a collection.
        self.marks = self._saved_positions()
        self.absent.clear()

    def close(self) -> None:
        """Stop this store's Chroma system (its index, SQLite connections and threads); idempotent."""
        with self.mutex:
            system, self._system = self._system, None
            self.collections = {}
        self.spool.close()
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
    from memory.chroma_import import import_chromadb

    chromadb = import_chromadb("persistent")
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
