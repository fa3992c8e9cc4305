"""Group commit through the write spool, with real processes (see `memory.bank_spool`).

Writers in several processes append their batches to the bank folder's spool and whoever holds
the lock applies them all: nothing may be lost or applied against its order, an entry applied by
another process answers its owner (with the merged fields), a failing entry's error reaches its
owner alone, and an entry left by a killed process is applied by the next writer.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from memory.bank import BankError, CaseBank
from memory.bank_spool import SPOOL_FILE
from memory.cases import Case
from memory.embeddings import HashEmbedder

pytestmark = pytest.mark.integration

ENV = {**os.environ, "PYTHONPATH": os.getcwd(), "ANONYMIZED_TELEMETRY": "False"}
DIM = 16

# One writer process: upserts the cases given as JSON (one call each), prints each outcome.
WRITER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from memory.bank import CaseBank
    from memory.cases import Case
    from memory.embeddings import HashEmbedder
    bank = CaseBank(sys.argv[1], embedder=HashEmbedder(16), lock_timeout=120)
    print("ready", flush=True)
    sys.stdin.readline()  # opened before the test takes the lock: go
    for spec in json.loads(sys.argv[2]):
        case = Case(id=spec["id"], question=spec["question"], reward=spec.get("reward"))
        emb = None if spec.get("dim") is None else np.ones((1, spec["dim"]), dtype=np.float32)
        try:
            bank.upsert(case, embeddings=emb)
        except Exception as exc:
            print(json.dumps({"id": case.id, "error": type(exc).__name__, "message": str(exc)}), flush=True)
        else:
            print(json.dumps({"id": case.id, "created_at": case.created_at, "updated_at": case.updated_at}), flush=True)
    bank.close()
    """
)


def _bank(path) -> CaseBank:
    return CaseBank(path, embedder=HashEmbedder(DIM), lock_timeout=120)


def _open(path, specs) -> subprocess.Popen:
    """A writer process with its bank open, waiting for `_go`."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), json.dumps(specs)],
        env=ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _go(proc: subprocess.Popen) -> subprocess.Popen:
    assert proc.stdin is not None
    proc.stdin.write("\n")
    proc.stdin.close()
    return proc


def _start(path, specs) -> subprocess.Popen:
    return _go(_open(path, specs))


def _answers(proc: subprocess.Popen) -> list[dict]:
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.stdout.close()
    assert proc.wait(timeout=300) == 0
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _pending(path) -> int:
    if not (path / SPOOL_FILE).exists():
        return 0
    conn = sqlite3.connect(path / SPOOL_FILE, timeout=30)
    try:
        return conn.execute("SELECT COUNT(*) FROM entries WHERE state = 0").fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # the table is being created
    finally:
        conn.close()


def _wait_pending(path, n: int) -> None:
    deadline = time.monotonic() + 120
    while _pending(path) < n:
        assert time.monotonic() < deadline, f"{_pending(path)} entries pending, expected {n}"
        time.sleep(0.05)


def _entries(path) -> int:
    conn = sqlite3.connect(path / SPOOL_FILE, timeout=30)
    try:
        return conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
    finally:
        conn.close()


def test_concurrent_writers_lose_nothing_and_the_last_value_wins(tmp_path):
    path = tmp_path / "bank"
    _bank(path).close()
    writers, per = 4, 12
    procs = [
        _start(
            path,
            # Each case is written twice by its writer: the second value must be the stored one.
            [
                {"id": f"w{w}-{i % (per // 2)}", "question": f"writer {w} case {i}", "reward": float(i >= per // 2)}
                for i in range(per)
            ],
        )
        for w in range(writers)
    ]
    for proc in procs:
        answers = _answers(proc)
        assert len(answers) == per and not any("error" in a for a in answers)
    bank = _bank(path)
    try:
        assert bank.count() == writers * per // 2
        for w in range(writers):
            for j in range(per // 2):
                case = bank.get(f"w{w}-{j}")
                assert case is not None and case.question == f"writer {w} case {j + per // 2}" and case.reward == 1.0
                hits = bank.search(case.question, 1)
                assert hits[0].case.id == case.id  # the index holds the last vector
        assert _entries(path) == 0  # every answered entry was deleted
    finally:
        bank.close()


def test_an_entry_applied_by_another_process_answers_its_owner(tmp_path):
    path = tmp_path / "bank"
    bank = _bank(path)
    try:
        first = Case(id="x", question="first version", reward=1.0)
        bank.upsert(first)
        proc = _open(path, [{"id": "x", "question": "second version", "reward": 0.0}])
        with bank._write_lock():
            _go(proc)
            _wait_pending(path, 1)
            with bank._writing():  # this process applies the other's entry
                pass
        (answer,) = _answers(proc)
        # The owner's case got the merge made in this process: the stored creation time kept.
        assert answer["created_at"] == pytest.approx(first.created_at)
        stored = bank.get("x")
        assert stored is not None and stored.question == "second version" and stored.reward == 0.0
        assert answer["updated_at"] == pytest.approx(stored.updated_at)
        assert bank.search("second version", 1)[0].case.id == "x"
        assert _entries(path) == 0
    finally:
        bank.close()


def test_a_failing_entry_reaches_its_owner_only(tmp_path):
    path = tmp_path / "bank"
    bank = _bank(path)
    try:
        bank.upsert(Case(id="seed", question="seed"))
        good1 = _open(path, [{"id": "g1", "question": "good one"}])
        bad = _open(path, [{"id": "bad", "question": "wrong size", "dim": DIM * 2}])
        good2 = _open(path, [{"id": "g2", "question": "good two"}])
        with bank._write_lock():
            for n, proc in enumerate((good1, bad, good2), 1):
                _go(proc)
                _wait_pending(path, n)
            with bank._writing():
                pass
        assert _answers(good1) == [{"id": "g1", **_times(bank, "g1")}]
        assert _answers(good2) == [{"id": "g2", **_times(bank, "g2")}]
        (failed,) = _answers(bad)
        assert failed["id"] == "bad" and "error" in failed and "32" in failed["message"]
        assert bank.get("bad") is None and bank.count() == 3
        assert _entries(path) == 0
    finally:
        bank.close()


def _times(bank: CaseBank, case_id: str) -> dict:
    case = bank.get(case_id)
    assert case is not None
    return {"created_at": case.created_at, "updated_at": case.updated_at}


def _spool_then_die(bank: CaseBank, path, specs) -> None:
    """Another process spools its entry while ``bank`` holds the lock, and is killed before it is applied."""
    proc = _open(path, specs)
    with bank._write_lock():
        _go(proc)
        _wait_pending(path, 1)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_an_entry_left_by_a_killed_process_is_applied_by_the_next_writer(tmp_path):
    path = tmp_path / "bank"
    bank = _bank(path)
    try:
        _spool_then_die(bank, path, [{"id": "orphan", "question": "written by a process that died"}])
        assert bank.get("orphan") is None  # pending, not applied yet
        bank.upsert(Case(id="next", question="the next write"))
        orphan = bank.get("orphan")
        assert orphan is not None and orphan.question == "written by a process that died"
        assert bank.search("written by a process that died", 1)[0].case.id == "orphan"
        assert _pending(path) == 0
    finally:
        bank.close()


def test_a_pending_entry_is_applied_before_a_later_delete(tmp_path):
    path = tmp_path / "bank"
    bank = _bank(path)
    try:
        _spool_then_die(bank, path, [{"id": "gone", "question": "deleted afterwards"}])
        assert bank.delete(["gone"]) == 1  # the pending upsert went first
        bank.upsert(Case(id="other", question="another write"))
        assert bank.get("gone") is None
    finally:
        bank.close()


def test_a_timed_out_write_is_withdrawn(tmp_path):
    path = tmp_path / "bank"
    bank = _bank(path)
    quick = CaseBank(path, embedder=HashEmbedder(DIM), lock_timeout=0.2)
    try:
        with bank._write_lock():
            # Another thread: the lock is held per thread, so it waits like another process.
            import threading

            errors: list[BaseException] = []

            def write() -> None:
                try:
                    quick.upsert(Case(id="late", question="timed out"))
                except BankError as exc:
                    errors.append(exc)

            t = threading.Thread(target=write)
            t.start()
            t.join(30)
        assert len(errors) == 1
        bank.upsert(Case(id="after", question="a later write"))
        assert bank.get("late") is None and _entries(path) == 0
    finally:
        quick.close()
        bank.close()


def test_an_unreadable_spool_is_one_clear_error_and_the_bank_survives(tmp_path):
    path = tmp_path / "bank"
    bank = _bank(path)
    bank.upsert(Case(id="kept", question="kept"))
    bank.close()
    for suffix in ("", "-wal", "-shm"):
        (path / (SPOOL_FILE + suffix)).unlink(missing_ok=True)
    (path / SPOOL_FILE).write_bytes(b"this is not a database" * 100)
    bank = _bank(path)
    try:
        with pytest.raises(BankError) as err:
            bank.upsert(Case(id="new", question="new"))
        assert SPOOL_FILE in str(err.value) and "\n" not in str(err.value)
        assert bank.get("kept") is not None and bank.search("kept", 1)[0].case.id == "kept"
        (path / SPOOL_FILE).unlink()
        bank.upsert(Case(id="new", question="new"))
        assert bank.count() == 2
    finally:
        bank.close()


def test_vectors_round_trip_through_the_spool(tmp_path):
    path = tmp_path / "bank"
    bank = _bank(path)
    try:
        vecs = np.random.default_rng(0).normal(size=(3, DIM)).astype(np.float32)
        cases = [Case(id=f"v{i}", question=f"vector {i}") for i in range(3)]
        bank.upsert(cases, embeddings=vecs)
        got = bank.get_embeddings([c.id for c in cases])
        for i, c in enumerate(cases):
            assert np.allclose(got[c.id], vecs[i], atol=1e-6)
    finally:
        bank.close()
