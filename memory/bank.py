"""`CaseBank`: the agent's past cases in Chroma, with embeddings computed by the project.

Design choices that matter at scale:

* One Chroma collection per namespace: ``where`` filters are slow on large collections, so
  namespaces are physical and label filters are applied after an over-fetched vector query.
* Each case is embedded once, at write time; a query costs one encoder pass plus an HNSW lookup.
  The original project re-embedded the whole bank for every query.
* Writes are upserts keyed by the case's deterministic id, serialised across processes by a file
  lock (embedded mode), so concurrent writers and resumed runs never duplicate or drop a case.
* An embedded Chroma client keeps its HNSW index in memory and does not notice writes made by
  other processes (its count does, its queries do not). Every write therefore stamps a
  generation token in the bank folder, and a process that sees a token it did not write reopens
  its client before the next read, so readers in other processes see every committed write.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
from filelock import FileLock, Timeout

from memory.cases import Case, label_for_reward, normalise_question, now
from memory.config import MemoryConfig
from memory.embeddings import Embedder, load_embedder

COLLECTION_PREFIX = "cases__"
MANIFEST = "memento-bank.json"
GENERATION = ".generation"
LOCK_FILE = ".write.lock"
SQLITE_FILE = "chroma.sqlite3"
BANK_FORMAT = 1
# Recent usage keys kept per case: enough for the resumes of overlapping runs, bounded in size.
_USAGE_KEYS_KEPT = 16

_RECOVERY = (
    "To recover, move the folder aside and re-import your last export (`memento memory import <file> --bank {path}`)."
)


class BankError(RuntimeError):
    """The bank cannot be opened or written; the message says where and how to recover."""


def _damage(location: str, exc: BaseException) -> BankError:
    """A Chroma internal error as one message naming the bank and how to recover it."""
    detail = " ".join(str(exc).split())[:300]
    if "malformed" in detail or "not a database" in detail:
        return BankError(
            f"the case bank data file {location}/{SQLITE_FILE} is damaged ({detail}). "
            + _RECOVERY.format(path=location)
        )
    return BankError(
        f"the case bank at {location} is damaged ({detail}). Rebuild its index from the stored cases with "
        f"`memento memory repair --bank {location}`; if that fails, move the folder aside and re-import "
        f"your last export (`memento memory import <file> --bank {location}`)."
    )


@dataclass
class ScoredCase:
    """A search hit: the case, its cosine similarity to the query, and its stored embedding."""

    case: Case
    similarity: float
    embedding: np.ndarray | None = None


def validate_namespace(namespace: str) -> str:
    """Check a namespace can name a Chroma collection; returns the collection name."""
    if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,198}[A-Za-z0-9])?", namespace or ""):
        raise ValueError(
            f"namespace {namespace!r} must be 1-200 characters of letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )
    return COLLECTION_PREFIX + namespace


def _is_fatal(exc: BaseException) -> bool:
    # pyo3 panics from Chroma's Rust core derive from BaseException; only these three must pass.
    return isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit)


# Transient server-side states seen with `chroma run` under concurrent clients (a just-created
# collection has no index files yet); the same request succeeds moments later.
_TRANSIENT = ("Nothing found on disk", "database is locked")


class _RetryingCollection:
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


class _Store:
    """A Chroma client plus the collections opened through it (server mode: nothing to refresh)."""

    def __init__(self, client: Any):
        self.client = client
        self.collections: dict[str, Any] = {}
        self.mutex = threading.RLock()

    def refresh(self) -> None:
        """Reopen the client if another process wrote (embedded mode only)."""

    def mark_written(self) -> None:
        """Publish that this process wrote (embedded mode only)."""


class _EmbeddedStore(_Store):
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
            if _is_fatal(exc):
                raise
            raise BankError(
                f"the case bank at {self.path} cannot be opened ({type(exc).__name__}: {exc}); "
                "it looks corrupt. " + _RECOVERY.format(path=self.path)
            ) from exc
        return client

    def _generation(self) -> str:
        try:
            return (self.path / GENERATION).read_text()
        except FileNotFoundError:
            return ""

    def refresh(self) -> None:
        if self._generation() == self.seen:
            return
        # Reload under the write lock so no other process is halfway through writing the index.
        with self.locked(self.lock.timeout), self.mutex:
            gen = self._generation()
            if gen == self.seen:
                return
            from chromadb.api.shared_system_client import SharedSystemClient

            ident = str(self.path)
            with contextlib.suppress(Exception):
                self.client.close()
            # Another client object on this folder (outside the bank) keeps Chroma's shared
            # system alive; drop it from the registry so the reopened client loads from disk.
            SharedSystemClient._identifier_to_system.pop(ident, None)
            SharedSystemClient._identifier_to_refcount.pop(ident, None)
            self.seen = gen
            self.client = self._open()
            self.collections = {}

    def mark_written(self) -> None:
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
_STORES: dict[tuple[int, str], _EmbeddedStore] = {}
_STORES_LOCK = threading.Lock()


def _embedded_store(path: Path, lock_timeout: float) -> _EmbeddedStore:
    # The pid in the key keeps forked children off the parent's store.
    key = (os.getpid(), str(path))
    with _STORES_LOCK:
        store = _STORES.get(key)
        if store is None:
            store = _STORES[key] = _EmbeddedStore(path, lock_timeout)
        return store


def _check_folder(path: Path, create: bool) -> None:
    """Refuse folders that would silently open as an empty bank."""
    sqlite = path / SQLITE_FILE
    if path.exists() and not path.is_dir():
        raise BankError(f"the case bank path {path} is a file, not a folder; pass a folder path")
    if not path.exists():
        if not create:
            raise BankError(
                f"no case bank at {path}: create one with `memento memory import <file> --bank {path}` "
                "or by running `memento ask`, or point MEMENTO_BANK_PATH at an existing bank."
            )
        return
    entries = {p.name for p in path.iterdir()}
    has_manifest = MANIFEST in entries
    segment_dirs = [e for e in entries if re.fullmatch(r"[0-9a-f-]{36}", e)]
    if SQLITE_FILE not in entries:
        if has_manifest or segment_dirs:
            raise BankError(
                f"the case bank at {path} has lost its data file {SQLITE_FILE}. " + _RECOVERY.format(path=path)
            )
        if not create:
            raise BankError(f"{path} is not a case bank (no {SQLITE_FILE}); pass the bank folder")
        # Lock, holder record (and its temporary file while a concurrent creator writes it) and
        # generation stamp are ours: a bank another process is creating right now is not "foreign".
        foreign = {e for e in entries if not e.startswith(LOCK_FILE) and e != GENERATION}
        if foreign:
            raise BankError(f"{path} is not empty and is not a case bank; pick an empty or new folder for the bank")
        return
    if sqlite.stat().st_size == 0 and (has_manifest or segment_dirs):
        raise BankError(f"the case bank data file {sqlite} is empty (truncated). " + _RECOVERY.format(path=path))
    if sqlite.stat().st_size:
        with open(sqlite, "rb") as fh:
            if fh.read(16) != b"SQLite format 3\x00":
                raise BankError(
                    f"the case bank data file {sqlite} is not a SQLite database (corrupt). "
                    + _RECOVERY.format(path=path)
                )


class CaseBank:
    """Cases of one or more namespaces in a Chroma database (embedded or server)."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        url: str | None = None,
        namespace: str = "default",
        embedder: Embedder | None = None,
        create: bool = True,
        lock_timeout: float = 60.0,
    ):
        """Open (or create) a bank.

        Args:
            path: Folder of an embedded Chroma database (default ``MEMENTO_BANK_PATH`` or
                ``.memento/cases``).
            url: ``http://host:port`` of a Chroma server (``chroma run``); wins over ``path``.
            namespace: Default namespace for operations that take none.
            embedder: Embeds questions; defaults to the shared one named by ``MEMENTO_EMBEDDER``
                (local MiniLM unless set).
            create: Create a missing embedded bank; when False a missing one is an error.
            lock_timeout: Seconds a writer waits for another process's write lock.

        Raises:
            BankError: The bank is missing (``create=False``), corrupt, or the server unreachable.

        """
        validate_namespace(namespace)
        self.namespace = namespace
        self._embedder = embedder
        self.url = url
        self.lock_timeout = lock_timeout
        if url:
            self.path: Path | None = None
            self.location = url
            self._store: _Store = _Store(self._http_client(url))
        else:
            self.path = Path(path or MemoryConfig.from_env().bank_path).resolve()
            self.location = str(self.path)
            _check_folder(self.path, create)
            self.path.mkdir(parents=True, exist_ok=True)
            self._store = _embedded_store(self.path, lock_timeout)

    @staticmethod
    def _http_client(url: str) -> Any:
        import chromadb
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

    # -- plumbing -----------------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        """The embedder, loaded on first use so opening a bank stays cheap."""
        if self._embedder is None:
            self._embedder = load_embedder(MemoryConfig.from_env().embedder)
        return self._embedder

    def _collection(self, namespace: str | None = None, create: bool = True) -> Any:
        ns = namespace or self.namespace
        store = self._store
        col = store.collections.get(ns)
        if col is None:
            name = validate_namespace(ns)
            try:
                col = store.client.get_collection(name=name, embedding_function=None)
            except Exception:
                if not create:
                    return None
                col = store.client.get_or_create_collection(
                    name=name,
                    embedding_function=None,
                    metadata={"hnsw:space": "cosine", "embedder": self.embedder.name},
                )
            if not isinstance(store, _EmbeddedStore):
                col = _RetryingCollection(col)
            store.collections[ns] = col
        return col

    def _check_embedder(self, col: Any) -> None:
        built_with = (col.metadata or {}).get("embedder")
        if built_with and built_with != self.embedder.name:
            raise BankError(
                f"namespace {col.name[len(COLLECTION_PREFIX) :]!r} of the bank at {self.location} was "
                f"embedded with {built_with!r} but this process uses {self.embedder.name!r}; set "
                "MEMENTO_EMBEDDER to match, or export and re-import into a new bank."
            )

    @contextlib.contextmanager
    def _damage_guard(self) -> Iterator[None]:
        """Chroma's raw InternalError (a lost or corrupt index or data file) becomes a BankError."""
        from chromadb.errors import InternalError

        try:
            yield
        except InternalError as exc:
            raise _damage(self.location, exc) from exc

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        self._store.refresh()
        with self._store.mutex, self._damage_guard():
            yield

    @contextlib.contextmanager
    def _write_lock(self) -> Iterator[None]:
        # The server serialises its own writes; a local lock would not span machines anyway.
        if not isinstance(self._store, _EmbeddedStore):
            yield
            return
        with self._store.locked(self.lock_timeout):
            yield

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        with self._write_lock():
            self._store.refresh()
            with self._store.mutex, self._damage_guard():
                try:
                    yield
                finally:
                    # Stamped even after a failed write: part of it may have landed.
                    self._store.mark_written()

    @property
    def _lock_held_locally(self) -> bool:
        return isinstance(self._store, _EmbeddedStore)

    def namespaces(self) -> list[str]:
        """Namespaces that hold a collection."""
        with self._reading():
            cols = self._store.client.list_collections()
        names = [c if isinstance(c, str) else c.name for c in cols]
        return sorted(n[len(COLLECTION_PREFIX) :] for n in names if n.startswith(COLLECTION_PREFIX))

    def refresh(self) -> None:
        """Pick up writes made by other processes now (reads do this on their own)."""
        self._store.refresh()

    # -- writes -------------------------------------------------------------------------------

    def upsert(
        self,
        cases: Case | Sequence[Case],
        *,
        embeddings: np.ndarray | Sequence[Sequence[float]] | None = None,
        keep_created: bool = True,
    ) -> list[str]:
        """Insert or replace cases by id; existing creation time and usage counters are kept.

        Args:
            cases: One case or several (may span namespaces).
            embeddings: Precomputed embeddings aligned with ``cases`` (bulk import).
            keep_created: Keep the stored creation time and usage counters of a case that
                already exists (False: the incoming record wins entirely, e.g. a restore).

        Returns:
            The ids written.

        """
        batch = [cases] if isinstance(cases, Case) else list(cases)
        if not batch:
            return []
        if embeddings is None:
            embeddings = self.embedder.embed([c.embedding_text() for c in batch])
        if len(embeddings) != len(batch):
            raise ValueError(f"{len(embeddings)} embeddings for {len(batch)} cases")
        by_ns: dict[str, list[int]] = {}
        for i, case in enumerate(batch):
            by_ns.setdefault(case.namespace, []).append(i)
        with self._writing():
            for ns, idx in by_ns.items():
                col = self._collection(ns)
                self._check_embedder(col)
                # Last write wins within a batch: Chroma rejects duplicate ids in one call.
                dedup: dict[str, int] = {}
                for i in idx:
                    dedup[batch[i].id] = i
                idx = list(dedup.values())
                ids = [batch[i].id for i in idx]
                existing = col.get(ids=ids, include=["metadatas", "embeddings"])
                old = dict(zip(existing["ids"], existing["metadatas"], strict=True))
                old_vec = dict(zip(existing["ids"], existing["embeddings"], strict=True))
                stamp = now()
                new_idx, moved_idx, same_idx = [], [], []
                for i in idx:
                    case = batch[i]
                    prev = old.get(case.id)
                    vec = np.asarray(embeddings[i], dtype=np.float32)
                    if prev is None:
                        new_idx.append(i)
                    elif np.allclose(np.asarray(old_vec[case.id], dtype=np.float32), vec, atol=1e-6):
                        same_idx.append(i)
                    else:
                        moved_idx.append(i)
                    if prev is not None and keep_created:
                        kept = Case.from_metadata(prev)
                        case.created_at = kept.created_at
                        case.times_retrieved = max(case.times_retrieved, kept.times_retrieved)
                        case.retrieved_successes = max(case.retrieved_successes, kept.retrieved_successes)
                        case.retrieved_failures = max(case.retrieved_failures, kept.retrieved_failures)
                        case.last_retrieved_at = (
                            max(case.last_retrieved_at or 0.0, kept.last_retrieved_at or 0.0) or None
                        )
                    if keep_created:
                        case.updated_at = stamp
                # Re-indexing a vector is slow in Chroma; a rewrite of the same question (a retry,
                # a re-judged case, a re-import) only needs its metadata replaced.
                # A retried server request may repeat an add that landed: upsert is idempotent there.
                add = col.add if self._lock_held_locally else col.upsert
                for part, op in ((new_idx, add), (moved_idx, col.upsert)):
                    if part:
                        op(
                            ids=[batch[i].id for i in part],
                            embeddings=[np.asarray(embeddings[i], dtype=np.float32).tolist() for i in part],
                            documents=[batch[i].question for i in part],
                            metadatas=[batch[i].to_metadata() for i in part],
                        )
                if same_idx:
                    # No documents here: Chroma would embed them itself (and try a download).
                    col.update(
                        ids=[batch[i].id for i in same_idx],
                        metadatas=[batch[i].to_metadata() for i in same_idx],
                    )
        return [c.id for c in batch]

    add = upsert

    def _rewrite(self, case_id: str, namespace: str | None, change) -> Case:
        with self._writing():
            col = self._collection(namespace, create=False)
            got = col.get(ids=[case_id], include=["metadatas"]) if col is not None else {"ids": []}
            if not got["ids"]:
                raise KeyError(f"no case {case_id!r} in namespace {namespace or self.namespace!r}")
            case = Case.from_metadata(got["metadatas"][0])
            change(case)
            case.updated_at = now()
            col.update(ids=[case_id], metadatas=[case.to_metadata()])
        return case

    def update_reward(
        self,
        case_id: str,
        reward: float | None,
        *,
        source: str = "human",
        judge_model: str | None = None,
        rationale: str | None = None,
        namespace: str | None = None,
        label: str | None = None,
    ) -> Case:
        """Re-judge a case: new reward, label derived from it (unless given), provenance recorded.

        Raises:
            KeyError: No such case.
            ValueError: Invalid source or label.

        """

        def change(case: Case) -> None:
            case.reward = None if reward is None else float(reward)
            case.label = label or label_for_reward(case.reward)  # type: ignore[assignment]
            case.reward_source = source  # type: ignore[assignment]
            case.judge_model = judge_model
            case.judge_rationale = rationale
            case.__post_init__()  # re-validate the new values

        return self._rewrite(case_id, namespace, change)

    def record_usage(
        self,
        case_ids: Sequence[str],
        success: bool | None,
        namespace: str | None = None,
        *,
        usage_key: str | None = None,
    ) -> None:
        """Count that these cases were shown for a task and how that task ended.

        Args:
            case_ids: The cases shown.
            success: How the task ended (None: not judged).
            namespace: Their namespace (default: the bank's).
            usage_key: Identifies this use (the retrieval id): a case that already counted it is
                skipped, so a run killed after this call and resumed does not count twice.

        """
        if not case_ids:
            return
        with self._writing():
            col = self._collection(namespace, create=False)
            if col is None:
                return
            got = col.get(ids=list(dict.fromkeys(case_ids)), include=["metadatas"])
            stamp = now()
            ids, metas = [], []
            for case_id, meta in zip(got["ids"], got["metadatas"], strict=True):
                meta = dict(meta)
                if usage_key:
                    # The last few keys ride in the same metadata write as the counters (atomic).
                    keys = str(meta.get("usage_keys") or "").split()
                    if usage_key in keys:
                        continue
                    meta["usage_keys"] = " ".join([*keys, usage_key][-_USAGE_KEYS_KEPT:])
                ids.append(case_id)
                meta["times_retrieved"] = int(meta.get("times_retrieved", 0)) + 1
                meta["last_retrieved_at"] = stamp
                if success is True:
                    meta["retrieved_successes"] = int(meta.get("retrieved_successes", 0)) + 1
                elif success is False:
                    meta["retrieved_failures"] = int(meta.get("retrieved_failures", 0)) + 1
                metas.append(meta)
            if ids:
                col.update(ids=ids, metadatas=metas)

    def delete(self, case_ids: Sequence[str], namespace: str | None = None) -> int:
        """Delete cases by id; returns how many existed."""
        if not case_ids:
            return 0
        with self._writing():
            col = self._collection(namespace, create=False)
            if col is None:
                return 0
            found = col.get(ids=list(dict.fromkeys(case_ids)), include=[])["ids"]
            if found:
                col.delete(ids=found)
        return len(found)

    def drop_namespace(self, namespace: str) -> int:
        """Delete a whole namespace; returns how many cases it held."""
        with self._writing():
            col = self._collection(namespace, create=False)
            if col is None:
                return 0
            n = col.count()
            self._store.client.delete_collection(validate_namespace(namespace))
            self._store.collections.pop(namespace, None)
        return n

    # -- reads --------------------------------------------------------------------------------

    def get(self, case_id: str, namespace: str | None = None) -> Case | None:
        """One case by id, or None."""
        with self._reading():
            col = self._collection(namespace, create=False)
            if col is None:
                return None
            got = col.get(ids=[case_id], include=["metadatas"])
        return Case.from_metadata(got["metadatas"][0]) if got["ids"] else None

    def get_many(self, case_ids: Sequence[str], namespace: str | None = None) -> list[Case]:
        """Cases by id, in the order asked; missing ids are skipped."""
        if not case_ids:
            return []
        with self._reading():
            col = self._collection(namespace, create=False)
            if col is None:
                return []
            got = col.get(ids=list(dict.fromkeys(case_ids)), include=["metadatas"])
        found = {i: Case.from_metadata(m) for i, m in zip(got["ids"], got["metadatas"], strict=True)}
        return [found[i] for i in case_ids if i in found]

    def get_embeddings(self, case_ids: Sequence[str], namespace: str | None = None) -> dict[str, np.ndarray]:
        """Stored embeddings by id (the policy scores cases without re-encoding them)."""
        if not case_ids:
            return {}
        with self._reading():
            col = self._collection(namespace, create=False)
            if col is None:
                return {}
            got = col.get(ids=list(dict.fromkeys(case_ids)), include=["embeddings"])
        return {i: np.asarray(e, dtype=np.float32) for i, e in zip(got["ids"], got["embeddings"], strict=True)}

    def count(self, namespace: str | None = None) -> int:
        """Cases in a namespace."""
        with self._reading():
            col = self._collection(namespace, create=False)
            return 0 if col is None else col.count()

    def iter_pages(
        self, namespace: str | None = None, batch_size: int = 1000, *, embeddings: bool = False
    ) -> Iterator[tuple[list[str], list[dict[str, Any]], list[np.ndarray] | None]]:
        """Raw pages ``(ids, metadatas, embeddings)`` of a namespace (maintenance and export)."""
        include = ["metadatas", "embeddings"] if embeddings else ["metadatas"]
        offset = 0
        while True:
            with self._reading():
                col = self._collection(namespace, create=False)
                if col is None:
                    return
                got = col.get(limit=batch_size, offset=offset, include=include)
            if not got["ids"]:
                return
            embs = [np.asarray(e, dtype=np.float32) for e in got["embeddings"]] if embeddings else None
            yield got["ids"], got["metadatas"], embs
            offset += len(got["ids"])

    def iter_cases(self, namespace: str | None = None, batch_size: int = 1000) -> Iterator[Case]:
        """Every case of a namespace, in pages."""
        for _, metas, _ in self.iter_pages(namespace, batch_size):
            for meta in metas:
                yield Case.from_metadata(meta)

    def list(
        self,
        namespace: str | None = None,
        limit: int = 20,
        offset: int = 0,
        labels: Sequence[str] | None = None,
    ) -> list[Case]:
        """A page of cases (storage order), newest first within the page."""
        cases: list[Case] = []
        with self._reading():
            col = self._collection(namespace, create=False)
            if col is None:
                return []
            if labels:
                # Rare interactive use: a where filter is acceptable here, unlike in search.
                got = col.get(where={"label": {"$in": list(labels)}}, limit=limit, offset=offset, include=["metadatas"])
            else:
                got = col.get(limit=limit, offset=offset, include=["metadatas"])
        cases = [Case.from_metadata(m) for m in got["metadatas"]]
        return sorted(cases, key=lambda c: c.created_at, reverse=True)

    def search(
        self,
        query: str | None = None,
        n: int = 8,
        *,
        namespace: str | None = None,
        labels: Sequence[str] | None = None,
        query_embedding: np.ndarray | None = None,
        exclude_task_ids: Sequence[str] = (),
        exclude_similarity_above: float | None = None,
        include_embeddings: bool = False,
    ) -> list[ScoredCase]:
        """Nearest cases to a question, best first.

        Args:
            query: The question (embedded once) unless ``query_embedding`` is given.
            n: How many hits to return.
            namespace: Namespace to search (default: the bank's).
            labels: Keep only these labels (applied after an over-fetched vector query, because
                Chroma ``where`` filters are slow on large collections).
            query_embedding: A precomputed query vector.
            exclude_task_ids: Leakage guard: drop cases of these tasks.
            exclude_similarity_above: Leakage guard: drop cases at least this similar to the
                query, and cases whose normalised question equals the query's.
            include_embeddings: Return stored case embeddings (for the learned policy).

        """
        if n <= 0:
            return []
        with self._reading():
            col = self._collection(namespace, create=False)
        if col is None:
            return []
        if query_embedding is None:
            if not query:
                raise ValueError("search needs a query or a query_embedding")
            self._check_embedder(col)
            query_embedding = self.embedder.embed([query])[0]
        excluded_tasks = set(exclude_task_ids)
        same_question = normalise_question(query) if query and exclude_similarity_above is not None else None
        filtering = bool(labels) or bool(excluded_tasks) or exclude_similarity_above is not None
        fetch = n * 4 + 8 if filtering else n
        include = ["metadatas", "distances"] + (["embeddings"] if include_embeddings else [])
        vector = [np.asarray(query_embedding, dtype=np.float32).tolist()]
        while True:
            with self._reading():
                col = self._collection(namespace, create=False)
                if col is None:
                    return []
                res = col.query(query_embeddings=vector, n_results=fetch, include=include)
            hits: list[ScoredCase] = []
            metas = res["metadatas"][0]
            embs = res.get("embeddings")
            for j, (meta, dist) in enumerate(zip(metas, res["distances"][0], strict=True)):
                # float32 rounding can put an identical vector a hair above 1.
                sim = min(1.0, max(-1.0, 1.0 - float(dist)))
                if labels and meta.get("label") not in labels:
                    continue
                if excluded_tasks and meta.get("task_id") in excluded_tasks:
                    continue
                if exclude_similarity_above is not None and sim >= exclude_similarity_above:
                    continue
                case = Case.from_metadata(meta)
                if same_question is not None and normalise_question(case.question) == same_question:
                    continue
                emb = np.asarray(embs[0][j], dtype=np.float32) if include_embeddings else None
                hits.append(ScoredCase(case, sim, emb))
                if len(hits) >= n:
                    break
            if len(hits) >= n:
                return hits
            # Fewer rows than asked for means the collection is exhausted, unless the vector
            # index lost entries that the stored records still have.
            if len(metas) < fetch:
                with self._reading():
                    col = self._collection(namespace, create=False)
                    if col is None:
                        return []
                    total = col.count()
                    if len(metas) >= min(fetch, total):
                        return hits
                    # Query again after the count: a write by another process in between can
                    # only add results, so a short answer now is the index, not a race.
                    again = len(col.query(query_embeddings=vector, n_results=fetch, include=[])["ids"][0])
                if again >= min(fetch, total):
                    continue  # the bank changed meanwhile: search again
                raise BankError(
                    f"the vector index of namespace {namespace or self.namespace!r} in the case bank at "
                    f"{self.location} holds {again} of its {total} cases (its index files are missing "
                    f"or damaged); searches would miss cases. Rebuild it with `memento memory repair --bank {self.location}`."
                )
            fetch *= 4

    def nearest_ids(
        self, embeddings: Sequence[Sequence[float]] | np.ndarray, n: int, namespace: str | None = None
    ) -> list[list[tuple[str, float]]]:
        """Batched raw neighbour lookup: for each vector, ``(id, similarity)`` pairs, best first."""
        if len(embeddings) == 0 or n <= 0:
            return []
        with self._reading():
            col = self._collection(namespace, create=False)
            if col is None:
                return [[] for _ in embeddings]
            res = col.query(
                query_embeddings=[np.asarray(e, dtype=np.float32).tolist() for e in embeddings],
                n_results=n,
                include=["distances"],
            )
        return [
            [(i, 1.0 - float(d)) for i, d in zip(ids, dists, strict=True)]
            for ids, dists in zip(res["ids"], res["distances"], strict=True)
        ]

    def stats(self, namespace: str | None = None) -> dict[str, Any]:
        """Counts by label, reward source and dataset source, reward mean, usage and age."""
        ns = namespace or self.namespace
        by_label: dict[str, int] = {}
        by_reward_source: dict[str, int] = {}
        by_source: dict[str, int] = {}
        rewards: list[float] = []
        retrieved = successes = failures = 0
        oldest = newest = None
        count = 0
        for _, metas, _ in self.iter_pages(ns, 5000):
            for m in metas:
                count += 1
                by_label[m["label"]] = by_label.get(m["label"], 0) + 1
                by_reward_source[m["reward_source"]] = by_reward_source.get(m["reward_source"], 0) + 1
                src = m.get("source") or "-"
                by_source[src] = by_source.get(src, 0) + 1
                if m.get("has_reward"):
                    rewards.append(float(m["reward"]))
                retrieved += int(m.get("times_retrieved", 0))
                successes += int(m.get("retrieved_successes", 0))
                failures += int(m.get("retrieved_failures", 0))
                created = float(m["created_at"])
                oldest = created if oldest is None else min(oldest, created)
                newest = created if newest is None else max(newest, created)
        with self._reading():
            col = self._collection(ns, create=False)
        return {
            "location": self.location,
            "namespace": ns,
            "embedder": (col.metadata or {}).get("embedder") if col is not None else None,
            "cases": count,
            "by_label": by_label,
            "by_reward_source": by_reward_source,
            "by_source": by_source,
            "mean_reward": float(np.mean(rewards)) if rewards else None,
            "times_retrieved": retrieved,
            "retrieved_successes": successes,
            "retrieved_failures": failures,
            "oldest": oldest,
            "newest": newest,
        }
