"""Banks own their stores: several banks (and owners) on one folder in one process work side by side."""

from __future__ import annotations

import threading

import chromadb
import pytest
from chromadb.config import Settings

from graph.context import Context
from memory.bank import BankError, CaseBank
from memory.cases import Case
from memory.embeddings import HashEmbedder
from nodes.resources import Resources

DIM = 16


def _bank(path, **kw) -> CaseBank:
    return CaseBank(path, embedder=HashEmbedder(DIM), **kw)


def _found(bank: CaseBank, question: str) -> bool:
    hits = bank.search(question, 1)
    return bool(hits) and hits[0].case.question == question and hits[0].similarity > 0.999


def test_two_banks_on_one_folder_see_each_others_writes_through_the_index(tmp_path):
    one, two = _bank(tmp_path / "b", lock_timeout=5), _bank(tmp_path / "b", lock_timeout=5)
    a, b = Case(question="alpha"), Case(question="beta")
    one.upsert(a)
    assert _found(one, "alpha")  # one's index is loaded now
    two.upsert(b)
    assert _found(one, "beta") and _found(two, "alpha")
    assert one.count() == two.count() == 2
    one.delete([a.id])
    assert [h.case.question for h in two.search("alpha", 5)] == ["beta"]
    two.update_reward(b.id, 0.0)
    assert one.get(b.id).label == "negative"


def test_one_banks_reopen_and_close_leave_the_others_client_working(tmp_path):
    path = tmp_path / "b"
    one, two = _bank(path), _bank(path)
    one.upsert([Case(question=f"one {i}") for i in range(20)])
    assert _found(two, "one 3")
    for i in range(3):
        # Each write makes the other bank reopen its client before its next read.
        two.upsert(Case(question=f"two {i}"))
        assert _found(one, f"two {i}")
        one.upsert(Case(question=f"again {i}"))
        assert _found(two, f"again {i}")
    one.close()
    assert _found(two, "one 7") and two.count() == 26
    two.upsert(Case(question="after close"))
    assert _found(two, "after close")
    with pytest.raises(BankError, match="closed"):
        one.count()
    one.close()  # idempotent


def test_a_bank_writes_inside_another_banks_write_on_its_folder_and_other_threads_wait(tmp_path):
    path = tmp_path / "b"
    outer, inner = _bank(path), _bank(path, lock_timeout=0.5)
    with outer.store.locked(5):
        # Same thread: the folder's one lock object is re-entrant, so this does not wait for itself.
        inner.upsert(Case(question="nested"))
        failed: list[BaseException] = []

        def other_thread() -> None:
            try:
                inner.upsert(Case(question="from another thread"))
            except BaseException as exc:
                failed.append(exc)

        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join(timeout=30)
    # Another thread is excluded like another process: it timed out while the lock was held.
    assert len(failed) == 1 and isinstance(failed[0], BankError) and "locked by another writer" in str(failed[0])
    inner.upsert(Case(question="from another thread"))
    assert outer.count() == 2 and _found(outer, "nested")


def test_a_bank_through_two_separate_resources(tmp_path):
    ctx = Context(bank_path=str(tmp_path / "bank"), experience_path=str(tmp_path / "exp.sqlite"), mcp_config="")
    first, second = Resources(ctx, embedder=HashEmbedder(DIM)), Resources(ctx, embedder=HashEmbedder(DIM))
    first.bank().upsert(Case(question="written by the first graph"))
    assert _found(second.bank(), "written by the first graph")
    second.bank().upsert(Case(question="written by the second graph"))
    assert _found(first.bank(), "written by the second graph")
    # Namespaces of one owner share its store; closing one owner leaves the other's bank open.
    other_ns = Context(**{**ctx.__dict__, "namespace": "other"})
    assert first.bank(other_ns).store is first.bank().store is not second.bank().store
    first.bank(other_ns).upsert(Case(question="elsewhere", namespace="other"))
    first.close()
    second.bank().upsert(Case(question="after the first closed"))
    assert second.bank().count() == 3 and _found(second.bank(), "after the first closed")
    assert Resources(ctx, embedder=HashEmbedder(DIM)).bank(other_ns).count() == 1


def test_a_chroma_client_outside_the_bank_keeps_working_and_never_lends_its_index(tmp_path):
    path = tmp_path / "b"
    bank = _bank(path)
    bank.upsert(Case(question="first"))
    outside = chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))
    col = outside.get_collection("cases__default")
    assert col.count() == 1 and len(col.query(query_embeddings=[[1.0] * DIM], n_results=5)["ids"][0]) == 1
    other = _bank(path)  # opened while the outside client's system is alive: it gets its own
    other.upsert(Case(question="second"))
    assert _found(bank, "second") and _found(other, "first")
    other.close()
    bank.close()
    assert col.count() == 2  # the outside client's system was never stopped by the banks
