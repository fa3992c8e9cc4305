"""A writer that times out on the bank lock names the holder; it never advises deleting the lock."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from memory.bank import LOCK_FILE, BankError, CaseBank
from memory.cases import Case
from memory.embeddings import HashEmbedder
from memory.lock_holder import break_if_stale, holder_path, read_holder, record_holder

HOLD = textwrap.dedent(
    """
    import sys, time
    from memory.bank import CaseBank
    from memory.embeddings import HashEmbedder
    bank = CaseBank(sys.argv[1], embedder=HashEmbedder(32))
    with bank._write_lock():
        print("held", flush=True)
        time.sleep(60)
    """
)


def hold(path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "ANONYMIZED_TELEMETRY": "False"}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True, env=env)
    return proc, proc.stdout.readline().strip()


@pytest.fixture
def hbank(tmp_path):
    return CaseBank(tmp_path / "bank", embedder=HashEmbedder(32), lock_timeout=0.3)


def test_timeout_names_the_live_holder(hbank):
    proc, line = hold(hbank.path)
    try:
        assert line == "held"
        with pytest.raises(BankError) as err:
            hbank.upsert(Case(question="blocked?"))
        message = str(err.value)
        assert f"pid {proc.pid}" in message and f"kill {proc.pid}" in message and "on this machine" in message
        assert "delete" not in message
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    hbank.upsert(Case(question="free again?"))  # the kernel released the dead holder's lock
    assert hbank.count() == 1


def test_only_a_dead_unheld_lock_is_broken(tmp_path):
    lock = tmp_path / LOCK_FILE
    lock.write_text("")
    record_holder(lock)
    assert read_holder(lock)["pid"] == os.getpid()
    assert break_if_stale(lock) is False and lock.exists()  # this process is alive
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    info = read_holder(lock) | {"pid": int(done.stdout)}
    holder_path(lock).write_text(__import__("json").dumps(info))
    assert break_if_stale(lock) is True
    assert not lock.exists() and not holder_path(lock).exists()
