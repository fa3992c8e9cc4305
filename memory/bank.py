"""`CaseBank`: the agent's past cases in Chroma, with embeddings computed by the project.

Design choices that matter at scale:

* One Chroma collection per namespace: ``where`` filters are slow on large collections, so
  namespaces are physical and label filters are applied after an over-fetched vector query.
* Each case is embedded once, at write time; a query costs one encoder pass plus an HNSW lookup.
  The original project re-embedded the whole bank for every query.
* Writes are upserts keyed by the case's deterministic id, serialised across processes by a file
  lock (embedded mode), so concurrent writers and resumed runs never duplicate or drop a case.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
from filelock import FileLock, Timeout

from memory.cases import Case, label_for_reward, now
from memory.embeddings import Embedder, get_embedder

COLLECTION_PREFIX = "cases__"
DEFAULT_BANK_PATH = os.path.join(".memento", "cases")


class BankError(RuntimeError):
    """The bank cannot be opened or written; the message says where and how to recover."""


@dataclass
class ScoredCase:
    """A search hit: the case, its cosine similarity to the query, and its stored embedding."""

    case: Case
    similarity: float
    embedding: np.ndarray | None = None


def _collection_name(namespace: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,200}", namespace):
        raise ValueError(
            f"namespace {namespace!r} must be 1-200 characters of letters, digits, '.', '_' or '-'"
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
    ):
        """Open (or create) a bank.

        Args:
            path: Folder of an embedded Chroma database (default ``.memento/cases``).
            url: ``http://host:port`` of a Chroma server (``chroma run``); wins over ``path``.
            namespace: Default namespace for operations that take none.
            embedder: Embeds questions; defaults to the shared local MiniLM.
            create: Create a missing embedded bank; when False a missing one is an error.
            lock_timeout: Seconds a writer waits for another process's write lock.
        """
        import chromadb
        from chromadb.config import Settings

        self.namespace = namespace
        _collection_name(namespace)
        self._embedder = embedder
        self.url = url
        settings = Settings(anonymized_telemetry=False, allow_reset=False)
        if url:
            parsed = urlparse(url)
            if not parsed.hostname:
                raise BankError(f"invalid Chroma server URL {url!r}: expected http://host:port")
            self.path = None
            self.location = url
            try:
                self._client = chromadb.HttpClient(
                    host=parsed.hostname,
                    port=parsed.port or (443 if parsed.scheme == "https" else 8000),
                    ssl=parsed.scheme == "https",
                    settings=settings,
                )
                self._client.heartbeat()
            except Exception as exc:
                raise BankError(
                    f"cannot reach the Chroma server at {url}: {exc}. Start it with "
                    f"`chroma run --path <dir> --port {parsed.port or 8000}` or unset MEMENTO_CHROMA_URL "
                    "to use the embedded bank."
                ) from exc
            # The server serialises its own writes; a local lock would not span machines anyway.
            self._lock: FileLock | None = None
        else:
            self.path = Path(path or os.environ.get("MEMENTO_BANK_PATH") or DEFAULT_BANK_PATH)
            self.location = str(self.path)
            if not self.path.exists() and not create:
                raise BankError(
                    f"no case bank at {self.path}: create one with `memento memory import` or "
                    "by running `memento ask`, or point MEMENTO_BANK_PATH at an existing bank."
                )
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock = FileLock(str(self.path / ".write.lock"), timeout=lock_timeout)
            try:
                self._client = chromadb.PersistentClient(path=str(self.path), settings=settings)
                self._client.list_collections()
            except Exception as exc:
                raise BankError(
                    f"the case bank at {self.path} cannot be opened ({type(exc).__name__}: {exc}). "
                    "If it is corrupt, move the folder aside and re-import from an export "
                    "(`memento memory import <file>`); if another program holds it, close that program."
                ) from exc
        self._collections: dict[str, Any] = {}

    # -- plumbing -----------------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        """The embedder, loaded on first use so opening a bank stays cheap."""
        if self._embedder is None:
            self._embedder = get_embedder(os.environ.get("MEMENTO_EMBEDDER", "minilm"))
        return self._embedder

    def _collection(self, namespace: str | None = None, create: bool = True):
        ns = namespace or self.namespace
        if ns not in self._collections:
            name = _collection_name(ns)
            if create:
                col = self._client.get_or_create_collection(
                    name=name,
                    embedding_function=None,
                    metadata={"hnsw:space": "cosine", "embedder": self.embedder.name},
                )
            else:
                try:
                    col = self._client.get_collection(name=name, embedding_function=None)
                except Exception:
                    return None
            self._collections[ns] = col
        return self._collections[ns]

    @contextlib.contextmanager
    def _write_lock(self) -> Iterator[None]:
        if self._lock is None:
            yield
            return
        try:
            with self._lock:
                yield
        except Timeout as exc:
            raise BankError(
                f"the case bank at {self.path} is locked by another writer for over "
                f"{self._lock.timeout:.0f}s; if no other memento process runs, delete "
                f"{self.path / '.write.lock'}"
            ) from exc

    def namespaces(self) -> list[str]:
        """Namespaces that hold a collection."""
        names = [c if isinstance(c, str) else c.name for c in self._client.list_collections()]
        return sorted(n[len(COLLECTION_PREFIX) :] for n in names if n.startswith(COLLECTION_PREFIX))

    # -- writes -------------------------------------------------------------------------------

    def upsert(self, cases: Case | Sequence[Case], *, embeddings: np.ndarray | None = None) -> list[str]:
        """Insert or replace cases by id; existing creation time and usage counters are kept.

        Args:
            cases: One case or several (may span namespaces).
            embeddings: Precomputed embeddings aligned with ``cases`` (bulk import).

        Returns:
            The ids written.
        """
        batch = [cases] if isinstance(cases, Case) else list(cases)
        if not batch:
            return []
        if embeddings is None:
            embeddings = self.embedder.embed([c.embedding_text() for c in batch])
        by_ns: dict[str, list[int]] = {}
        for i, case in enumerate(batch):
            by_ns.setdefault(case.namespace, []).append(i)
        with self._write_lock():
            for ns, idx in by_ns.items():
                col = self._collection(ns)
                # Last write wins within a batch: Chroma rejects duplicate ids in one call.
                dedup: dict[str, int] = {}
                for i in idx:
                    dedup[batch[i].id] = i
                idx = list(dedup.values())
                ids = [batch[i].id for i in idx]
                existing = col.get(ids=ids, include=["metadatas"])
                old = {i: m for i, m in zip(existing["ids"], existing["metadatas"], strict=True)}
                stamp = now()
                for i in idx:
                    case = batch[i]
                    prev = old.get(case.id)
                    if prev is not None:
                        kept = Case.from_metadata(prev)
                        case.created_at = kept.created_at
                        case.times_retrieved = max(case.times_retrieved, kept.times_retrieved)
                        case.retrieved_successes = max(case.retrieved_successes, kept.retrieved_successes)
                        case.retrieved_failures = max(case.retrieved_failures, kept.retrieved_failures)
                    case.updated_at = stamp
                col.upsert(
                    ids=ids,
                    embeddings=[np.asarray(embeddings[i], dtype=np.float32).tolist() for i in idx],
                    documents=[batch[i].question for i in idx],
                    metadatas=[batch[i].to_metadata() for i in idx],
                )
        return [c.id for c in batch]

    add = upsert

    def _rewrite(self, case_id: str, namespace: str | None, change) -> Case:
        col = self._collection(namespace)
        with self._write_lock():
            got = col.get(ids=[case_id], include=["metadatas"])
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
    ) -> Case:
        """Re-judge a case: new reward, label derived from it, provenance recorded."""

        def change(case: Case) -> None:
            case.reward = None if reward is None else float(reward)
            case.label = label_for_reward(case.reward)
            case.reward_source = source  # type: ignore[assignment]
            case.judge_model = judge_model
            case.judge_rationale = rationale

        return self._rewrite(case_id, namespace, change)

    def record_usage(self, case_ids: Sequence[str], success: bool | None, namespace: str | None = None) -> None:
        """Count that these cases were shown for a task and how that task ended."""
        if not case_ids:
            return
        col = self._collection(namespace)
        with self._write_lock():
            got = col.get(ids=list(case_ids), include=["metadatas"])
            metas = []
            for meta in got["metadatas"]:
                meta = dict(meta)
                meta["times_retrieved"] = int(meta.get("times_retrieved", 0)) + 1
                if success is True:
                    meta["retrieved_successes"] = int(meta.get("retrieved_successes", 0)) + 1
                elif success is False:
                    meta["retrieved_failures"] = int(meta.get("retrieved_failures", 0)) + 1
                metas.append(meta)
            if got["ids"]:
                col.update(ids=got["ids"], metadatas=metas)

    def delete(self, case_ids: Sequence[str], namespace: str | None = None) -> int:
        """Delete cases by id; returns how many existed."""
        col = self._collection(namespace)
        with self._write_lock():
            found = col.get(ids=list(case_ids), include=[])["ids"]
            if found:
                col.delete(ids=found)
        return len(found)

    # -- reads --------------------------------------------------------------------------------

    def get(self, case_id: str, namespace: str | None = None) -> Case | None:
        """One case by id, or None."""
        col = self._collection(namespace, create=False)
        if col is None:
            return None
        got = col.get(ids=[case_id], include=["metadatas"])
        return Case.from_metadata(got["metadatas"][0]) if got["ids"] else None

    def get_embeddings(self, case_ids: Sequence[str], namespace: str | None = None) -> dict[str, np.ndarray]:
        """Stored embeddings by id (the policy scores cases without re-encoding them)."""
        col = self._collection(namespace, create=False)
        if col is None or not case_ids:
            return {}
        got = col.get(ids=list(case_ids), include=["embeddings"])
        return {i: np.asarray(e, dtype=np.float32) for i, e in zip(got["ids"], got["embeddings"], strict=True)}

    def count(self, namespace: str | None = None) -> int:
        """Cases in a namespace."""
        col = self._collection(namespace, create=False)
        return 0 if col is None else col.count()

    def iter_cases(self, namespace: str | None = None, batch_size: int = 1000) -> Iterator[Case]:
        """Every case of a namespace, in pages."""
        col = self._collection(namespace, create=False)
        if col is None:
            return
        offset = 0
        while True:
            got = col.get(limit=batch_size, offset=offset, include=["metadatas"])
            if not got["ids"]:
                return
            for meta in got["metadatas"]:
                yield Case.from_metadata(meta)
            offset += len(got["ids"])

    def list(self, namespace: str | None = None, limit: int = 20, offset: int = 0) -> list[Case]:
        """A page of cases, newest first within the page."""
        col = self._collection(namespace, create=False)
        if col is None:
            return []
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
            labels: Keep only these labels (applied after an over-fetched vector query).
            query_embedding: A precomputed query vector.
            exclude_task_ids: Leakage guard: drop cases of these tasks.
            exclude_similarity_above: Leakage guard: drop near-identical questions.
            include_embeddings: Return stored case embeddings (for the learned policy).
        """
        col = self._collection(namespace, create=False)
        if col is None or n <= 0:
            return []
        total = col.count()
        if total == 0:
            return []
        if query_embedding is None:
            if not query:
                raise ValueError("search needs a query or a query_embedding")
            query_embedding = self.embedder.embed([query])[0]
        filtering = bool(labels) or bool(exclude_task_ids) or exclude_similarity_above is not None
        fetch = min(total, n * 4 + 8 if filtering else n)
        include = ["metadatas", "distances"] + (["embeddings"] if include_embeddings else [])
        hits: list[ScoredCase] = []
        while True:
            res = col.query(
                query_embeddings=[np.asarray(query_embedding, dtype=np.float32).tolist()],
                n_results=fetch,
                include=include,
            )
            hits = []
            embs = res.get("embeddings")
            for j, (meta, dist) in enumerate(zip(res["metadatas"][0], res["distances"][0], strict=True)):
                sim = 1.0 - float(dist)
                if labels and meta.get("label") not in labels:
                    continue
                if exclude_task_ids and meta.get("task_id") in exclude_task_ids:
                    continue
                if exclude_similarity_above is not None and sim >= exclude_similarity_above:
                    continue
                emb = np.asarray(embs[0][j], dtype=np.float32) if include_embeddings else None
                hits.append(ScoredCase(Case.from_metadata(meta), sim, emb))
                if len(hits) >= n:
                    break
            if len(hits) >= n or fetch >= total:
                return hits
            fetch = min(total, fetch * 4)

    def stats(self, namespace: str | None = None) -> dict[str, Any]:
        """Counts by label and reward source, reward mean, usage and age."""
        by_label: dict[str, int] = {}
        by_source: dict[str, int] = {}
        rewards: list[float] = []
        retrieved = 0
        oldest = newest = None
        count = 0
        for case in self.iter_cases(namespace):
            count += 1
            by_label[case.label] = by_label.get(case.label, 0) + 1
            by_source[case.reward_source] = by_source.get(case.reward_source, 0) + 1
            if case.reward is not None:
                rewards.append(case.reward)
            retrieved += case.times_retrieved
            oldest = case.created_at if oldest is None else min(oldest, case.created_at)
            newest = case.created_at if newest is None else max(newest, case.created_at)
        return {
            "location": self.location,
            "namespace": namespace or self.namespace,
            "cases": count,
            "by_label": by_label,
            "by_reward_source": by_source,
            "mean_reward": float(np.mean(rewards)) if rewards else None,
            "times_retrieved": retrieved,
            "oldest": oldest,
            "newest": newest,
        }


@functools.lru_cache(maxsize=8)
def open_bank(path: str | None = None, url: str | None = None, namespace: str = "default") -> CaseBank:
    """A process-wide bank per location, so graph nodes share one client and one embedder."""
    return CaseBank(path, url=url or None, namespace=namespace)

