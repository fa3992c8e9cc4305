"""Another process's writes reach a bank whose index is already loaded: caught up, or reopened when needed.

A store that sees a foreign write catches its in-memory index up by replaying Chroma's log, unless
index files were saved meanwhile (``hnsw:sync_threshold`` crossed), in which case it reopens (see
`memory.bank_store`). Both paths must give every reader every add, move, re-judgement and delete,
and a stale writer must never save an index that misses other processes' vectors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import chromadb
import pytest
from chromadb.config import Settings

from memory.bank import CaseBank
from memory.cases import Case
from memory.embeddings import HashEmbedder

pytestmark = pytest.mark.integration

ENV = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
DIM = 16


def _bank(path) -> CaseBank:
    return CaseBank(path, embedder=HashEmbedder(DIM), lock_timeout=120)


def other_process(path: str, spec: str) -> None:
    """Body of the other process: adds (``batch`` at a time), moves, re-judgements, deletes."""
    todo = json.loads(spec)
    bank = _bank(path)
    adds = [Case(id=f"n{i}", question=q) for i, q in enumerate(todo["adds"])]
    for start in range(0, len(adds), todo["batch"]):
        bank.upsert(adds[start : start + todo["batch"]])
    for case_id, question in todo["moves"]:
        bank.upsert(Case(id=case_id, question=question))  # same id, new text: a new vector
    for case_id in todo["rejudge"]:
        bank.update_reward(case_id, 0.0)
    assert bank.delete(todo["deletes"]) == len(todo["deletes"])


def _run_other(path, **todo) -> None:
    code = f"from tests.integration.test_bank_cross_process import other_process; other_process({str(path)!r}, {json.dumps(todo)!r})"
    subprocess.run([sys.executable, "-c", code], check=True, env=ENV, timeout=600, cwd=os.getcwd())


def _small_sync_threshold(path, threshold: int) -> None:
    """Create the bank's collection with index files saved every ``threshold`` vectors."""
    CaseBank(path, embedder=HashEmbedder(DIM)).close()
    client = chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))
    client.create_collection(
        "cases__default",
        embedding_function=None,
        metadata={
            "hnsw:space": "cosine",
            "embedder": f"hash-{DIM}",
            "hnsw:sync_threshold": threshold,
            "hnsw:batch_size": 10,
        },
    )


def _top(bank: CaseBank, question: str) -> tuple[str, float]:
    hit = bank.search(question, 1)[0]
    return hit.case.id, hit.similarity


def _check_complete(bank: CaseBank, live: dict[str, str], deleted: list[str]) -> None:
    """Every live case counted, fetched and found through the index at its own vector; no deleted one."""
    assert bank.count() == len(live)
    assert {c.id for c in bank.get_many(list(live))} == set(live)
    assert bank.get_many(deleted) == []
    sample = list(live.items())[:: max(1, len(live) // 60)] + list(live.items())[-20:]
    for case_id, question in sample:
        assert _top(bank, question) == (case_id, pytest.approx(1.0, abs=1e-5)), question
    # The whole index, through HNSW: exactly the live cases, none deleted, none missing.
    everything = bank.nearest_ids(HashEmbedder(DIM).embed(["anything"]), len(live) + 10)[0]
    assert sorted(i for i, _ in everything) == sorted(live)


CHECK_FRESH = textwrap.dedent(
    """
    import json, sys
    from tests.integration.test_bank_cross_process import _bank, _check_complete
    live, deleted = json.loads(sys.stdin.read())
    _check_complete(_bank(sys.argv[1]), live, deleted)
    print("COMPLETE")
    """
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("threshold", "seed", "added", "batch", "reopens"),
    [
        (None, 300, 60, 1, False),  # no index files saved meanwhile: caught up from the log
        (None, 1100, 1100, 100, True),  # the other process saved index files: reopened
        (20, 150, 90, 1, True),  # files saved every 20 vectors, single-case writes
    ],
)
def test_loaded_index_sees_another_process_adds_moves_rejudgements_and_deletes(
    tmp_path, threshold, seed, added, batch, reopens
):
    path = tmp_path / "b"
    if threshold:
        _small_sync_threshold(path, threshold)
    bank = _bank(path)
    live = {f"s{i}": f"seed {i}" for i in range(seed)}
    cases = [Case(id=i, question=q) for i, q in live.items()]
    for start in range(0, len(cases), 500):
        bank.upsert(cases[start : start + 500])
    assert _top(bank, "seed 3")[0] == "s3"  # the index is loaded in this process now
    moves = [(f"s{i}", f"moved {i}") for i in range(5)]
    deleted = [f"s{i}" for i in range(7, 12)]
    adds = [f"new {i}" for i in range(added)]
    _run_other(path, adds=adds, batch=batch, moves=moves, rejudge=["s5", "s6"], deletes=deleted)
    live.update({f"n{i}": q for i, q in enumerate(adds)})
    live.update(moves)
    for case_id in deleted:
        live.pop(case_id)

    _check_complete(bank, live, deleted)
    assert bank.get("s5").label == "negative" and bank.get("s0").question == "moved 0"
    for i in range(5):  # a moved case is no longer at its old vector
        assert _top(bank, f"seed {i}")[1] < 0.99
    store = bank.store
    assert (store.reopens > 0) == reopens, (store.reopens, store.catch_ups)
    if not reopens:
        assert store.catch_ups > 0

    # A write by this process (its index caught up or reloaded) saves nothing that misses a vector:
    # a fresh process, loading the saved index files plus the log, sees every case.
    bank.upsert(Case(id="mine", question="written after the other process"))
    live["mine"] = "written after the other process"
    _check_complete(bank, live, deleted)
    out = subprocess.run(
        [sys.executable, "-c", CHECK_FRESH, str(path)],
        input=json.dumps([live, deleted]),
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
        cwd=os.getcwd(),
    )
    assert "COMPLETE" in out.stdout, out.stderr[-3000:]


PEER = textwrap.dedent(
    """
    import sys
    from memory.cases import Case
    from tests.integration.test_bank_cross_process import _bank, _top
    bank = _bank(sys.argv[1])
    for line in sys.stdin:
        verb, _, question = line.rstrip("\\n").partition(" ")
        if verb == "write":
            bank.upsert(Case(question=question))
            print("ok", flush=True)
        else:
            case_id, sim = _top(bank, question)
            print(bank.get(case_id).question if sim > 0.9999 else "-", flush=True)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("threshold", [None, 15])
def test_two_processes_taking_turns_each_find_the_others_latest_case(tmp_path, threshold):
    path = tmp_path / "b"
    if threshold:
        _small_sync_threshold(path, threshold)
    bank = _bank(path)
    bank.upsert([Case(question=f"seed {i}") for i in range(40)])
    peer = subprocess.Popen(
        [sys.executable, "-c", PEER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
        cwd=os.getcwd(),
    )
    assert peer.stdin is not None and peer.stdout is not None

    def ask(line: str) -> str:
        peer.stdin.write(line + "\n")
        peer.stdin.flush()
        return peer.stdout.readline().strip()

    try:
        for turn in range(40):
            assert ask(f"write peer case {turn}") == "ok"
            assert _top(bank, f"peer case {turn}")[1] > 0.9999
            bank.upsert(Case(question=f"local case {turn}"))
            assert ask(f"find local case {turn}") == f"local case {turn}"
            # Both also still find the oldest cases (nothing lost along the way).
            assert ask("find seed 0") == "seed 0"
            assert _top(bank, "peer case 0")[1] > 0.9999
    finally:
        peer.stdin.close()
        assert peer.wait(timeout=60) == 0
        peer.stdout.close()
    assert bank.count() == 120
    assert len(bank.nearest_ids(HashEmbedder(DIM).embed(["x"]), 200)[0]) == 120
