import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from filelock import FileLock

from memory.bank import BankError, CaseBank
from memory.cases import Case
from memory.embeddings import HashEmbedder

ENV = {**os.environ, "ANONYMIZED_TELEMETRY": "False", "ORT_DISABLE_TELEMETRY": "1"}


@pytest.fixture
def hbank(tmp_path):
    return CaseBank(tmp_path / "hbank", embedder=HashEmbedder(32))


def test_semantic_search_ranks_the_related_case_first(bank):
    bank.upsert(
        [
            Case(question="What is the capital of France?", reward=1.0),
            Case(question="How many legs does a spider have?", reward=0.0),
            Case(question="Who painted the Mona Lisa?"),
        ]
    )
    hits = bank.search("Which city is France's capital?", 3)
    assert hits[0].case.question == "What is the capital of France?"
    assert hits[0].similarity > hits[1].similarity
    assert len(hits) == 3
    only_neg = bank.search("Which city is France's capital?", 3, labels=["negative"])
    assert [h.case.label for h in only_neg] == ["negative"]


def test_upsert_is_idempotent_and_keeps_creation_time_and_usage(hbank):
    case = Case(question="q1", task_id="t1")
    hbank.upsert(case)
    first = hbank.get(case.id)
    hbank.record_usage([case.id], success=True)
    hbank.upsert(Case(question="q1", task_id="t1", reward=1.0, answer="a"))
    again = hbank.get(case.id)
    assert hbank.count() == 1
    assert again.created_at == first.created_at
    assert again.updated_at >= first.updated_at
    assert (again.times_retrieved, again.retrieved_successes, again.reward, again.answer) == (1, 1, 1.0, "a")
    assert again.last_retrieved_at is not None


def test_usage_reward_delete_list_and_stats(hbank):
    cases = [Case(question=f"question {i}", reward=i % 2, source="nq") for i in range(6)] + [Case(question="unjudged")]
    hbank.upsert(cases)
    hbank.record_usage([cases[0].id, cases[1].id], success=False)
    updated = hbank.update_reward(cases[0].id, 1.0, source="human", rationale="checked by hand")
    assert (updated.label, updated.reward_source, updated.judge_rationale) == ("positive", "human", "checked by hand")
    assert hbank.get(cases[0].id).retrieved_failures == 1
    with pytest.raises(KeyError):
        hbank.update_reward("case-missing", 1.0)
    stats = hbank.stats()
    assert stats["cases"] == 7
    assert stats["by_label"] == {"positive": 4, "negative": 2, "unknown": 1}
    assert stats["by_source"]["nq"] == 6
    assert stats["retrieved_failures"] == 2
    assert stats["embedder"] == "hash-32"
    assert {c.id for c in hbank.list_cases(limit=100)} == {c.id for c in cases}
    assert {c.label for c in hbank.list_cases(labels=["unknown"])} == {"unknown"}
    assert hbank.delete([cases[2].id, "case-nope"]) == 1
    assert hbank.get(cases[2].id) is None
    assert hbank.count() == 6
    assert len(list(hbank.iter_cases(batch_size=2))) == 6
    emb = hbank.get_embeddings([cases[3].id])
    np.testing.assert_allclose(emb[cases[3].id], HashEmbedder(32).embed([cases[3].question])[0], atol=1e-6)


def test_namespaces_keep_cases_apart(hbank):
    a = Case(question="shared question", namespace="alice", reward=1.0)
    b = Case(question="shared question", namespace="bob", reward=0.0)
    hbank.upsert([a, b])
    assert a.id != b.id
    assert hbank.count("alice") == hbank.count("bob") == 1
    assert hbank.count() == 0
    assert [h.case.namespace for h in hbank.search("shared question", 5, namespace="alice")] == ["alice"]
    assert hbank.search("shared question", 5) == []
    assert hbank.get(a.id, namespace="bob") is None
    assert hbank.namespaces() == ["alice", "bob"]
    assert hbank.drop_namespace("bob") == 1
    assert hbank.namespaces() == ["alice"]
    with pytest.raises(ValueError):
        hbank.count("bad name!")


def test_leakage_guard_excludes_same_task_and_near_identical_questions(bank):
    bank.upsert(
        [
            Case(question="Who discovered penicillin?", task_id="t1", reward=1.0),
            Case(question="Who discovered  penicillin ?", task_id="t2", reward=1.0),
            Case(question="Which scientist first found penicillin in 1928?", task_id="t3", reward=1.0),
            Case(question="What is the boiling point of water?", task_id="t4", reward=0.0),
        ]
    )
    query = "Who discovered penicillin?"
    plain = bank.search(query, 4)
    assert plain[0].similarity > 0.99
    no_task = bank.search(query, 4, exclude_task_ids=["t1"])
    assert "t1" not in {h.case.task_id for h in no_task}
    guarded = bank.search(query, 4, exclude_task_ids=["t1"], exclude_similarity_above=0.95)
    tasks = [h.case.task_id for h in guarded]
    assert "t1" not in tasks and "t2" not in tasks
    assert tasks[0] == "t3"
    assert all(h.similarity < 0.95 for h in guarded)
    strict = bank.search(query, 4, exclude_similarity_above=0.3)
    assert all(h.similarity < 0.3 for h in strict)


def test_search_returns_stored_embeddings_and_handles_empty_banks(hbank):
    assert hbank.search("anything", 3) == []
    hbank.upsert([Case(question=f"q{i}") for i in range(20)])
    hits = hbank.search("q3", 25, include_embeddings=True)
    assert len(hits) == 20
    assert hits[0].case.question == "q3"
    assert hits[0].embedding.shape == (32,)
    # Post-filtering widens the fetch until enough hits pass.
    assert len(hbank.search("q3", 5, exclude_task_ids=["none"], labels=["unknown"])) == 5


def test_missing_bank_with_create_false_is_an_error(tmp_path):
    with pytest.raises(BankError, match=str(tmp_path / "nope")):
        CaseBank(tmp_path / "nope", embedder=HashEmbedder(), create=False)
    assert not (tmp_path / "nope").exists()


def _filled(tmp_path):
    path = tmp_path / "b"
    CaseBank(path, embedder=HashEmbedder(16)).upsert([Case(question=f"q{i}") for i in range(50)])
    return path


def _reopen(path):
    # A fresh process: this one caches the client per folder.
    code = textwrap.dedent(
        f"""
        from memory.bank import CaseBank, BankError
        from memory.embeddings import HashEmbedder
        try:
            b = CaseBank({str(path)!r}, embedder=HashEmbedder(16), create=False)
            print("COUNT", b.count())
        except BankError as exc:
            print("BANKERROR", exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60, cwd=os.getcwd()
    )
    return out.stdout + out.stderr


@pytest.mark.parametrize("damage", ["garbage_header", "truncated", "garbage_middle", "deleted"])
def test_corrupt_bank_is_a_clear_error_never_an_empty_bank(tmp_path, damage):
    path = _filled(tmp_path)
    db = path / "chroma.sqlite3"
    if damage == "garbage_header":
        with open(db, "r+b") as fh:
            fh.write(os.urandom(4096))
    elif damage == "truncated":
        db.write_bytes(b"")
    elif damage == "garbage_middle":
        with open(db, "r+b") as fh:
            fh.seek(20000)
            fh.write(os.urandom(40000))
    else:
        db.unlink()
    out = _reopen(path)
    assert "BANKERROR" in out, out
    assert str(path) in out
    assert "re-import" in out
    assert "COUNT 0" not in out


def test_healthy_bank_reopens_in_another_process(tmp_path):
    assert "COUNT 50" in _reopen(_filled(tmp_path))


def test_folder_that_is_not_a_bank_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(BankError, match="not a case bank"):
        CaseBank(tmp_path, embedder=HashEmbedder())
    with pytest.raises(BankError, match="is a file"):
        CaseBank(tmp_path / "notes.txt", embedder=HashEmbedder())


def test_locked_bank_times_out_with_a_clear_error(tmp_path):
    path = tmp_path / "b"
    bank = CaseBank(path, embedder=HashEmbedder(), lock_timeout=0.2)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from filelock import FileLock; import time; l=FileLock({str(path / '.write.lock')!r}); l.acquire(); print('held', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(BankError, match="locked by another writer") as err:
            bank.upsert(Case(question="q"))
        assert str(path) in str(err.value)
    finally:
        holder.kill()
        holder.wait(timeout=10)
        holder.stdout.close()
    bank.upsert(Case(question="q"))
    assert bank.count() == 1
    assert FileLock  # the lock library the bank uses


def test_embedder_mismatch_is_refused(tmp_path):
    CaseBank(tmp_path / "b", embedder=HashEmbedder(16)).upsert(Case(question="q"))
    other = CaseBank(tmp_path / "b", embedder=HashEmbedder(32))
    with pytest.raises(BankError, match="hash-16"):
        other.search("q", 1)
    with pytest.raises(BankError, match="hash-16"):
        other.upsert(Case(question="q2"))


def test_readers_in_other_processes_see_new_writes(tmp_path):
    path = tmp_path / "b"
    reader = CaseBank(path, embedder=HashEmbedder(16))
    reader.upsert([Case(question=f"seed {i}") for i in range(30)])
    assert len(reader.search("seed 1", 100)) == 30  # the index is now loaded in this process
    code = textwrap.dedent(
        f"""
        from memory.bank import CaseBank
        from memory.cases import Case
        from memory.embeddings import HashEmbedder
        CaseBank({str(path)!r}, embedder=HashEmbedder(16)).upsert([Case(question=f"other {{i}}") for i in range(30)])
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=ENV, timeout=60, cwd=os.getcwd())
    hits = reader.search("other 7", 100)
    assert len(hits) == 60
    assert hits[0].case.question == "other 7"
    assert reader.count() == 60
