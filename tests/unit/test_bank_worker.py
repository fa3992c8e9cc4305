"""The bank worker: another process opens the bank and answers the first retrieval's search.

Its answers must be the caller's own (same hits, same order, same scores), and whenever it cannot
answer the caller's bank must (with the caller's own errors). It never creates a bank and never
outlives its `close`.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from graph.context import Context
from memory.bank import BankError, CaseBank
from memory.bank_worker import BankWorker, WorkerSearch, has_spare_core
from memory.cases import Case
from memory.embeddings import HashEmbedder
from memory.retrieval import retrieve_cases
from nodes.resources import Resources

QUESTIONS = [
    ("What is the capital of France?", 1.0),
    ("How many legs does a spider have?", 0.0),
    ("Who painted the Mona Lisa?", 1.0),
    ("What is the capital of Wales?", 1.0),
    ("Which river flows through Paris?", 0.0),
    ("Who wrote War and Peace?", None),
]


@pytest.fixture
def filled(tmp_path):
    embedder = HashEmbedder(16)
    bank = CaseBank(tmp_path / "bank", embedder=embedder)
    bank.upsert([Case(question=q, reward=r, task_id=f"t{i}") for i, (q, r) in enumerate(QUESTIONS)])
    return bank, embedder


def _same(a, b):
    assert [h.case.id for h in a] == [h.case.id for h in b]
    assert [h.similarity for h in a] == pytest.approx([h.similarity for h in b], abs=1e-6)
    assert [h.case.to_dict() for h in a] == [h.case.to_dict() for h in b]
    for x, y in zip(a, b, strict=True):
        assert (x.embedding is None) == (y.embedding is None)
        if x.embedding is not None:
            np.testing.assert_allclose(x.embedding, y.embedding, atol=1e-6)


def test_worker_answers_a_search_with_the_callers_own_hits(filled):
    bank, embedder = filled
    vector = embedder.embed(["capital city"])[0]
    kwargs = {
        "n": 3,
        "labels": ("positive", "negative"),
        "query_embedding": vector,
        "exclude_task_ids": ("t0",),
        "include_embeddings": True,
    }
    worker = BankWorker.start(str(bank.path), None, "default")
    assert worker is not None
    try:
        assert worker.wait_ready(), worker.failure
        remote = worker.search(**kwargs)
        assert remote is not None, worker.failure
        _same(remote, bank.search(**kwargs))
        assert len(remote) == 3 and "t0" not in {h.case.task_id for h in remote}
        assert worker.search(**kwargs) is None  # one search per worker
    finally:
        worker.close()
    assert worker._proc is None


def test_retrieval_through_the_worker_shows_what_the_bank_shows(filled):
    bank, embedder = filled
    for mode, k in (("similarity", 3), ("learned", 2)):
        worker = BankWorker.start(str(bank.path), None, "default")
        assert worker is not None
        searched = WorkerSearch(worker, embedder, lambda: pytest.fail("the worker answered"))
        try:
            got = retrieve_cases(searched, "capital of Wales", mode=mode, k=k, rng_seed=7)
        finally:
            worker.close()
        want = retrieve_cases(bank, "capital of Wales", mode=mode, k=k, rng_seed=7)
        assert got.shown == want.shown and got.candidates == want.candidates
        assert got.selector == want.selector and got.slates == want.slates


def test_a_missing_bank_is_left_to_the_caller_and_not_created(tmp_path):
    worker = BankWorker.start(str(tmp_path / "nothing"), None, "default")
    assert worker is not None
    assert not worker.wait_ready()
    assert worker._proc is None  # reaped
    assert not (tmp_path / "nothing").exists()
    assert worker.search(n=3, query_embedding=np.ones(16, np.float32)) is None


def test_a_damaged_bank_fails_in_the_caller_with_the_callers_message(filled, tmp_path):
    bank, embedder = filled
    (bank.path / "chroma.sqlite3").write_bytes(b"")
    ctx = Context(bank_path=str(bank.path), experience_path=str(tmp_path / "exp.sqlite"), mcp_config="")
    worker = BankWorker.start(ctx.bank_path, None, ctx.namespace)
    resources = Resources(ctx, embedder=embedder, bank_worker=worker)
    with pytest.raises(BankError, match="truncated"):
        resources.retrieval_bank(ctx)
    assert worker is not None and worker._proc is None


def test_a_search_the_worker_cannot_answer_goes_to_the_callers_bank(filled):
    bank, embedder = filled
    vector = embedder.embed(["spider legs"])[0]
    calls = []

    def own():
        calls.append(1)
        return bank

    worker = BankWorker.start(str(bank.path), None, "default")
    assert worker is not None
    searched = WorkerSearch(worker, embedder, own)
    try:
        # A query text would need the worker to embed it: the caller's bank answers.
        _same(searched.search("spider legs", 2), bank.search("spider legs", 2))
        assert calls == [1]
        _same(searched.search(n=2, query_embedding=vector), bank.search(n=2, query_embedding=vector))
        assert calls == [1]  # the worker answered this one
        _same(searched.search(n=2, query_embedding=vector), bank.search(n=2, query_embedding=vector))
        assert calls == [1, 1]  # and exited: the next goes to the caller's bank
    finally:
        worker.close()


def test_resources_use_the_worker_once_and_only_for_its_bank(filled, tmp_path):
    bank, _ = filled
    ctx = Context(bank_path=str(bank.path), experience_path=str(tmp_path / "exp.sqlite"), mcp_config="")
    worker = BankWorker.start(ctx.bank_path, None, ctx.namespace)
    resources = Resources(ctx, embedder=HashEmbedder(16), bank_worker=worker)
    first = resources.retrieval_bank(ctx)
    assert isinstance(first, WorkerSearch)
    resources.close()  # before the search: the worker is reaped all the same
    assert worker is not None and worker._proc is None
    assert first.search(n=2, query_embedding=np.ones(16, np.float32)) is not None  # by the caller's bank

    worker = BankWorker.start(ctx.bank_path, None, ctx.namespace)
    resources = Resources(ctx, embedder=HashEmbedder(16), bank_worker=worker)
    assert resources.retrieval_bank(ctx).search(n=2, query_embedding=np.ones(16, np.float32))
    assert resources.retrieval_bank(ctx) is resources.bank(ctx)  # the worker served one search
    assert worker is not None and worker._proc is None
    resources.close()

    other = Context(bank_path=str(tmp_path / "other"), experience_path=str(tmp_path / "exp.sqlite"), mcp_config="")
    worker = BankWorker.start(ctx.bank_path, None, ctx.namespace)
    resources = Resources(other, embedder=HashEmbedder(16), bank_worker=worker)
    assert isinstance(resources.retrieval_bank(other), CaseBank)  # another bank: not the worker's
    resources.close()
    assert worker is not None and worker._proc is None


def test_close_stops_a_worker_that_is_still_starting(filled):
    bank, _ = filled
    worker = BankWorker.start(str(bank.path), None, "default")
    assert worker is not None
    proc = worker._proc
    worker.close()  # long before Chroma is imported
    assert proc is not None and proc.returncode is not None
    assert not worker.wait_ready()
    worker.close()  # again: nothing left to do


def test_a_worker_needs_a_core_of_its_own(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    monkeypatch.setattr("os.getloadavg", lambda: (0.5, 0.5, 0.5))
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    assert not has_spare_core()  # one usable core
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert has_spare_core()
    monkeypatch.setattr("os.getloadavg", lambda: (2.5, 2.0, 1.0))
    assert not has_spare_core()  # both cores busy: the worker would take its CPU from the caller


def test_the_worker_answers_a_process_with_many_open_files(filled):
    # A long test run or server holds descriptors above 1023, where select() cannot wait.
    bank, embedder = filled
    held = [os.open(os.devnull, os.O_RDONLY)]
    try:
        while held[-1] < 1100:
            held.append(os.dup(held[0]))
        worker = BankWorker.start(str(bank.path), None, "default")
        assert worker is not None and worker._proc is not None and worker._proc.stdout.fileno() > 1023
        vector = embedder.embed(["capital city"])[0]
        assert worker.search(n=2, query_embedding=vector) is not None, worker.failure
    finally:
        for fd in held:
            os.close(fd)


def test_the_callers_working_directory_cannot_shadow_the_worker(filled, tmp_path, monkeypatch):
    bank, _ = filled
    for name in ("memory", "chromadb"):  # a user's folders that happen to share a module's name
        (tmp_path / "shadow" / name).mkdir(parents=True)
        (tmp_path / "shadow" / name / "__init__.py").write_text(f"raise ImportError('the folder {name}')\n")
    monkeypatch.chdir(tmp_path / "shadow")
    # An empty PYTHONPATH entry means the working directory.
    monkeypatch.setenv("PYTHONPATH", os.pathsep + os.environ.get("PYTHONPATH", ""))
    worker = BankWorker.start(str(bank.path), None, "default")
    assert worker is not None
    try:
        assert worker.wait_ready(), worker.failure
    finally:
        worker.close()
