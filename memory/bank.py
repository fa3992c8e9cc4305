"""`CaseBank`: the agent's past cases in Chroma, with embeddings computed by the project.

Design choices that matter at scale:

* One Chroma collection per namespace: ``where`` filters are slow on large collections, so
  namespaces are physical and label filters are applied after an over-fetched vector query.
* Each case is embedded once, at write time; a query costs one encoder pass plus an HNSW lookup.
  The original project re-embedded the whole bank for every query.
* Writes are upserts keyed by the case's deterministic id, serialised across processes by a file
  lock (embedded mode), so concurrent writers and resumed runs never duplicate or drop a case.
  Embedded upserts are group-committed: each goes through a spool in the bank folder and whoever
  holds the lock applies every pending one at once (`memory.bank_spool`).
* An embedded Chroma client keeps its HNSW index in memory and does not notice writes made by
  other processes (its count does, its queries do not). Every write therefore stamps a
  generation token in the bank folder, and a store that sees a token it did not write catches
  its index up before the next read that needs vectors (`memory.bank_store` says how, and when
  it reopens instead), so readers in other processes see every committed write.
* Each bank owns its store (client and Chroma system) unless its owner hands it one to share
  (`nodes.resources.Resources` shares one per location between namespaces); nothing is cached
  per process, and `close` releases what the bank opened.

This module holds the bank's reads, writes and search; the folder checks live in
`memory.bank_folder`, the embedded stores and their cross-process refresh in `memory.bank_store`,
and the Chroma server's client and retries in `memory.bank_server`.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memory.bank_folder import (
    BANK_FORMAT,
    COLLECTION_PREFIX,
    GENERATION,
    LOCK_FILE,
    MANIFEST,
    SQLITE_FILE,
    BankError,
    check_folder,
    damage_error,
)
from memory.bank_server import RetryingCollection, http_client, is_fatal
from memory.bank_spool import DONE, FAILED, MERGED, Entry, describe_error, rebuild_error
from memory.bank_store import EmbeddedStore, Store
from memory.cases import Case, label_for_reward, normalise_question, now
from memory.config import MemoryConfig
from memory.embeddings import Embedder, load_embedder

__all__ = [
    "BANK_FORMAT",
    "COLLECTION_PREFIX",
    "GENERATION",
    "LOCK_FILE",
    "MANIFEST",
    "SQLITE_FILE",
    "BankError",
    "CaseBank",
    "ScoredCase",
    "validate_namespace",
]

# Recent usage keys kept per case: enough for the resumes of overlapping runs, bounded in size.
_USAGE_KEYS_KEPT = 16
# The usage counter each judged outcome of a task that showed the case adds to.
_OUTCOME_COUNTER = {True: "retrieved_successes", False: "retrieved_failures"}


def _usage_keys(meta: dict[str, Any]) -> list[str]:
    """The retrieval ids a case's usage counters have counted lately (kept in its metadata)."""
    return str(meta.get("usage_keys") or "").split()


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
        store: Store | None = None,
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
            store: The store of another bank on the same location to share (its client, its
                index in memory); default: this bank opens its own, and `close` releases it.

        Raises:
            BankError: The bank is missing (``create=False``), corrupt, or the server unreachable.
            ValueError: ``store`` belongs to another location.

        """
        validate_namespace(namespace)
        self.namespace = namespace
        self._embedder = embedder
        self.url = url
        self.lock_timeout = lock_timeout
        self._owns_store = store is None
        if url:
            self.path: Path | None = None
            self.location = url
            if store is not None and (isinstance(store, EmbeddedStore) or getattr(store, "url", None) != url):
                raise ValueError(f"the store given is not one of the Chroma server at {url}")
            self._store: Store = store or Store(http_client(url), url=url)
        else:
            self.path = Path(path or MemoryConfig.from_env().bank_path).resolve()
            self.location = str(self.path)
            if store is not None:
                if not isinstance(store, EmbeddedStore) or store.path != self.path:
                    raise ValueError(f"the store given is not one of the bank at {self.path}")
                self._store = store
            else:
                check_folder(self.path, create)
                self.path.mkdir(parents=True, exist_ok=True)
                self._store = EmbeddedStore(self.path, lock_timeout)

    @property
    def store(self) -> Store:
        """The client this bank reads and writes through (hand it to another namespace's bank to share it)."""
        return self._store

    def close(self) -> None:
        """Release the store this bank opened (a shared store is its owner's to close); idempotent."""
        if self._owns_store:
            self._store.close()

    # -- plumbing -----------------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        """The embedder, loaded on first use so opening a bank stays cheap."""
        if self._embedder is None:
            self._embedder = load_embedder(MemoryConfig.from_env().embedder)
        return self._embedder

    def _collection(self, namespace: str | None = None, create: bool = True, embedder: str | None = None) -> Any:
        ns = namespace or self.namespace
        store = self._store
        col = store.collections.get(ns)
        if col is not None:
            return col
        name = validate_namespace(ns)
        try:
            col = store.client.get_collection(name=name, embedding_function=None)
        except Exception:
            if not create:
                store.missing(ns)
                return None
            col = store.client.get_or_create_collection(
                name=name,
                embedding_function=None,
                metadata={"hnsw:space": "cosine", "embedder": embedder or self.embedder.name},
            )
        if not isinstance(store, EmbeddedStore):
            col = RetryingCollection(col)
        return store.loaded(ns, col)

    def _check_embedder(self, col: Any, embedder: str | None = None) -> None:
        built_with = (col.metadata or {}).get("embedder")
        name = embedder or self.embedder.name
        if built_with and built_with != name:
            raise BankError(
                f"namespace {col.name[len(COLLECTION_PREFIX) :]!r} of the bank at {self.location} was "
                f"embedded with {built_with!r} but this process uses {name!r}; set "
                "MEMENTO_EMBEDDER to match, or export and re-import into a new bank."
            )

    @contextlib.contextmanager
    def _damage_guard(self) -> Iterator[None]:
        """Chroma's raw InternalError (a lost or corrupt index or data file) becomes a BankError."""
        from chromadb.errors import InternalError

        try:
            yield
        except InternalError as exc:
            raise damage_error(self.location, exc) from exc

    @contextlib.contextmanager
    def _reading(self, namespace: str | None = None, *, vectors: bool = False, fetch: bool = True) -> Iterator[None]:
        """Hold the store for a read of ``namespace`` (``vectors``: one that needs its vector index).

        A collection's first load and a stale index's catch-up happen under the write lock, so
        neither reads index files another writer is saving; every other read takes no lock.
        """
        store = self._store
        store.refresh()
        ns = namespace or self.namespace
        if fetch and store.needs_lock(ns, vectors):
            with self._write_lock(), store.mutex, self._damage_guard():
                store.refresh()
                col = self._collection(ns, create=False)
                if col is not None and vectors and not store.catch_up(ns, col):
                    self._collection(ns, create=False)  # reopened instead: load the new one now
        with store.mutex, self._damage_guard():
            yield

    @contextlib.contextmanager
    def _write_lock(self) -> Iterator[None]:
        # The server serialises its own writes; a local lock would not span machines anyway.
        if not isinstance(self._store, EmbeddedStore):
            yield
            return
        with self._store.locked(self.lock_timeout):
            yield

    @contextlib.contextmanager
    def _writing(self, own: tuple[int, list[Case]] | None = None) -> Iterator[None]:
        # Pending spool entries go first, so none is applied after a later write to its cases.
        with self._write_lock():
            self._store.sync()
            with self._store.mutex, self._damage_guard():
                try:
                    self._drain(own)
                    yield
                finally:
                    # Stamped even after a failed write: part of it may have landed.
                    self._store.mark_written()

    @property
    def _lock_held_locally(self) -> bool:
        return isinstance(self._store, EmbeddedStore)

    def namespaces(self) -> list[str]:
        """Namespaces that hold a collection."""
        with self._reading(fetch=False):
            cols = self._store.client.list_collections()
        names = [c if isinstance(c, str) else c.name for c in cols]
        return sorted(n[len(COLLECTION_PREFIX) :] for n in names if n.startswith(COLLECTION_PREFIX))

    def refresh(self) -> None:
        """Account for writes made by other processes now (reads do this on their own)."""
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

        In an embedded bank the batch goes through the folder's write spool (`memory.bank_spool`):
        whichever writer holds the lock applies every pending batch at once, so writers in several
        processes share the lock's fixed costs. The call returns once its batch is applied, by this
        process or another, and raises its batch's own error.

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
        for ns in {c.namespace for c in batch}:
            validate_namespace(ns)
        store = self._store
        if not isinstance(store, EmbeddedStore):
            with self._writing():
                self._apply(batch, embeddings, keep_created, self.embedder.name)
            return [c.id for c in batch]
        vectors = np.asarray(embeddings, dtype=np.float32)
        if vectors.ndim != 2:
            raise ValueError(f"embeddings must be one vector per case, got shape {vectors.shape}")
        since = store.stamp()
        eid = store.spool.add([c.to_metadata() for c in batch], vectors, keep_created, self.embedder.name)
        answer: list[tuple[int, Any]] = []

        def answered() -> bool:
            got = store.spool.outcome(eid)
            if got is not None:
                answer.append(got)
            return got is not None

        try:
            held = store.lock_unless(answered, self.lock_timeout, since=since)
        except BaseException:
            # Not applied, and not to be applied later: the caller is told this write failed.
            # (An entry answered meanwhile cannot be withdrawn: its outcome stands.)
            if store.spool.withdraw(eid):
                raise
            held = False
            if not answer:
                got = store.spool.outcome(eid)
                if got is None:
                    raise
                answer.append(got)
        if held:
            try:
                got = store.spool.outcome(eid)
                if got is None:
                    try:
                        with self._writing(own=(eid, batch)):
                            pass
                    except BaseException:
                        # Unless its own outcome was recorded (and the entry deleted), the entry
                        # must not be applied later: its caller is told it failed.
                        with contextlib.suppress(BankError):
                            store.spool.withdraw(eid)
                        raise
                    return [c.id for c in batch]
                answer.append(got)
            finally:
                store.lock.release()
        store.spool.forget(eid)
        state, value = answer[0]
        if state != DONE:
            raise rebuild_error(value, self.location)
        for case, fields in zip(batch, value, strict=True):
            for name, field in zip(MERGED, fields, strict=True):
                setattr(case, name, field)
        return [c.id for c in batch]

    def _drain(self, own: tuple[int, list[Case]] | None = None) -> None:
        """Apply every pending spool entry, oldest first (lock and mutex held; embedded stores only).

        Consecutive entries with the same options are applied as one batch; when a batch fails,
        its entries are applied one by one so each owner gets its own error. ``own`` is the
        calling upsert's entry and cases: they are applied as given, and its error is raised here.
        """
        store = self._store
        if not isinstance(store, EmbeddedStore):
            return
        entries = store.spool.pending()
        if not entries:
            return
        outcomes: dict[int, tuple[int, Any]] = {}
        own_error: BaseException | None = None
        cases_of: dict[int, list[Case]] = {}

        def fail(entry_id: int, exc: BaseException) -> None:
            nonlocal own_error
            if is_fatal(exc):
                raise exc
            if own is not None and entry_id == own[0]:
                own_error = exc
            from chromadb.errors import InternalError

            if isinstance(exc, InternalError):
                exc = damage_error(self.location, exc)
            outcomes[entry_id] = (FAILED, describe_error(exc))

        def ok(entry_id: int) -> None:
            outcomes[entry_id] = (DONE, [[getattr(c, name) for name in MERGED] for c in cases_of[entry_id]])

        groups: list[list[Entry]] = []
        for entry in entries:
            try:
                if own is not None and entry.id == own[0]:
                    cases_of[entry.id] = own[1]
                else:
                    cases_of[entry.id] = [Case.from_metadata(m) for m in entry.metadatas]
            except BaseException as exc:
                fail(entry.id, exc)
                continue
            last = groups[-1][-1] if groups else None
            if last is not None and (last.keep_created, last.embedder) == (entry.keep_created, entry.embedder):
                groups[-1].append(entry)
            else:
                groups.append([entry])
        for group in groups:
            try:
                self._apply(
                    [c for e in group for c in cases_of[e.id]],
                    np.concatenate([e.vectors for e in group]),
                    group[0].keep_created,
                    group[0].embedder,
                )
            except BaseException as exc:
                if is_fatal(exc):
                    raise
                if len(group) == 1:
                    fail(group[0].id, exc)
                    continue
                for e in group:
                    try:
                        self._apply(cases_of[e.id], e.vectors, e.keep_created, e.embedder)
                    except BaseException as one:
                        fail(e.id, one)
                    else:
                        ok(e.id)
                continue
            for e in group:
                ok(e.id)
        store.spool.finish(outcomes, forget=None if own is None else own[0])
        if own_error is not None:
            raise own_error

    def _apply(
        self,
        batch: list[Case],
        embeddings: np.ndarray | Sequence[Sequence[float]],
        keep_created: bool,
        embedder: str | None,
    ) -> None:
        """Write a batch (write lock and mutex held): the merge with stored records described in `upsert`."""
        by_ns: dict[str, list[int]] = {}
        for i, case in enumerate(batch):
            by_ns.setdefault(case.namespace, []).append(i)
        for ns, idx in by_ns.items():
            col = self._collection(ns, embedder=embedder)
            self._check_embedder(col, embedder)
            # Last write wins within a batch: Chroma rejects duplicate ids in one call.
            dedup: dict[str, int] = {}
            for i in idx:
                dedup[batch[i].id] = i
            idx = list(dedup.values())
            ids = [batch[i].id for i in idx]
            # Stored vectors come from the in-memory index: catch a stale one up first, but only
            # when a case exists already (a new case's write catches the index up by itself).
            stale = self._store.is_stale(ns) and col.get(ids=ids, include=[])["ids"]
            if stale and not self._store.catch_up(ns, col):
                col = self._collection(ns, embedder=embedder)
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
                    case.last_retrieved_at = max(case.last_retrieved_at or 0.0, kept.last_retrieved_at or 0.0) or None
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

    add = upsert

    def upsert_merged(self, case: Case, merge: Callable[[Case | None], Case]) -> Case:
        """Write ``merge(stored case or None)``, reading and writing under the folder's write lock.

        A run's attempt is merged into its question's case (`memory.outcomes.merge_attempt`): read
        and written apart, two processes finishing the same question together would each write the
        history they read, and one attempt would be lost. The vector is computed before the lock is
        taken. (A Chroma server serialises single writes only; there the window stays.)

        Returns:
            The case written.

        """
        vector = self.embedder.embed([case.embedding_text()])
        with self._write_lock():
            merged = merge(self.get(case.id, namespace=case.namespace))
            if merged.embedding_text() != case.embedding_text():
                vector = self.embedder.embed([merged.embedding_text()])
            self.upsert(merged, embeddings=vector)
        return merged

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
        stamp = now()

        def count(meta: dict[str, Any]) -> bool:
            if usage_key:
                # The last few keys ride in the same metadata write as the counters (atomic).
                keys = _usage_keys(meta)
                if usage_key in keys:
                    return False
                meta["usage_keys"] = " ".join([*keys, usage_key][-_USAGE_KEYS_KEPT:])
            meta["times_retrieved"] = int(meta.get("times_retrieved", 0)) + 1
            meta["last_retrieved_at"] = stamp
            if success is not None:
                meta[_OUTCOME_COUNTER[success]] = int(meta.get(_OUTCOME_COUNTER[success], 0)) + 1
            return True

        self._update_metadata(case_ids, namespace, count)

    def _update_metadata(
        self, case_ids: Sequence[str], namespace: str | None, change: Callable[[dict[str, Any]], bool]
    ) -> int:
        """Change the stored metadata of these cases in one write; returns how many ``change`` kept.

        ``change`` edits a copy of one case's metadata in place and says whether to write it.
        """
        if not case_ids:
            return 0
        with self._writing():
            col = self._collection(namespace, create=False)
            if col is None:
                return 0
            got = col.get(ids=list(dict.fromkeys(case_ids)), include=["metadatas"])
            ids, metas = [], []
            for case_id, meta in zip(got["ids"], got["metadatas"], strict=True):
                meta = dict(meta)
                if change(meta):
                    ids.append(case_id)
                    metas.append(meta)
            if ids:
                col.update(ids=ids, metadatas=metas)
        return len(ids)

    def correct_usage(
        self,
        case_ids: Sequence[str],
        was: bool | None,
        now_: bool | None,
        usage_key: str,
        namespace: str | None = None,
    ) -> int:
        """Move one use's outcome in the counters of the cases that counted it (``usage_key``).

        A person's verdict that overturns the judge's must reach the counters of the cases shown in
        that run too, not only the run's own case.

        Args:
            case_ids: The cases shown in that use.
            was: The outcome they were counted with (None: counted as not judged).
            now_: The outcome to count instead.
            usage_key: The use (retrieval id); a case that never counted it is left alone.
            namespace: Their namespace (default: the bank's).

        Returns:
            How many cases were corrected.

        """
        if was is now_:
            return 0

        def move(meta: dict[str, Any]) -> bool:
            if usage_key not in _usage_keys(meta):
                return False
            if was is not None:
                meta[_OUTCOME_COUNTER[was]] = max(0, int(meta.get(_OUTCOME_COUNTER[was], 0)) - 1)
            if now_ is not None:
                meta[_OUTCOME_COUNTER[now_]] = int(meta.get(_OUTCOME_COUNTER[now_], 0)) + 1
            return True

        return self._update_metadata(case_ids, namespace, move)

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
            self._store.forget(namespace)
        return n

    # -- reads --------------------------------------------------------------------------------

    def get(self, case_id: str, namespace: str | None = None) -> Case | None:
        """One case by id, or None."""
        with self._reading(namespace):
            col = self._collection(namespace, create=False)
            if col is None:
                return None
            got = col.get(ids=[case_id], include=["metadatas"])
        return Case.from_metadata(got["metadatas"][0]) if got["ids"] else None

    def get_many(self, case_ids: Sequence[str], namespace: str | None = None) -> list[Case]:
        """Cases by id, in the order asked; missing ids are skipped."""
        if not case_ids:
            return []
        with self._reading(namespace):
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
        with self._reading(namespace, vectors=True):
            col = self._collection(namespace, create=False)
            if col is None:
                return {}
            got = col.get(ids=list(dict.fromkeys(case_ids)), include=["embeddings"])
        return {i: np.asarray(e, dtype=np.float32) for i, e in zip(got["ids"], got["embeddings"], strict=True)}

    def count(self, namespace: str | None = None) -> int:
        """Cases in a namespace."""
        with self._reading(namespace):
            col = self._collection(namespace, create=False)
            return 0 if col is None else col.count()

    def iter_pages(
        self, namespace: str | None = None, batch_size: int = 1000, *, embeddings: bool = False
    ) -> Iterator[tuple[list[str], list[dict[str, Any]], list[np.ndarray] | None]]:
        """Raw pages ``(ids, metadatas, embeddings)`` of a namespace (maintenance and export)."""
        include = ["metadatas", "embeddings"] if embeddings else ["metadatas"]
        offset = 0
        while True:
            with self._reading(namespace, vectors=embeddings):
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

    def list_cases(
        self,
        namespace: str | None = None,
        limit: int = 20,
        offset: int = 0,
        labels: Sequence[str] | None = None,
    ) -> list[Case]:
        """A page of cases (storage order), newest first within the page."""
        cases: list[Case] = []
        with self._reading(namespace):
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
        with self._reading(namespace):
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
            with self._reading(namespace, vectors=True):
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
                with self._reading(namespace, vectors=True):
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
        with self._reading(namespace, vectors=True):
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
        with self._reading(ns):
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
