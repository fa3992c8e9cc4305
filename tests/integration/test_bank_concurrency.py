"""The bank under concurrent writers, killed writers and a real `chroma run` server."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from memory.bank import BankError, CaseBank
from memory.cases import Case
from memory.embeddings import HashEmbedder

pytestmark = pytest.mark.integration

ENV = {**os.environ, "ANONYMIZED_TELEMETRY": "False", "ORT_DISABLE_TELEMETRY": "1"}
DIM = 32


def writer_main(location: str, writer: int, n: int, batch: int) -> None:
    """Body of a writer process: n cases with ids unique to this writer, in batches."""
    url = location if location.startswith("http") else None
    bank = CaseBank(None if url else location, url=url, embedder=HashEmbedder(DIM), lock_timeout=120)
    for start in range(0, n, batch):
        bank.upsert(
            [
                Case(question=f"writer {writer} case {i}", task_id=f"w{writer}", reward=i % 2)
                for i in range(start, min(n, start + batch))
            ]
        )
        print(f"batch {start}", flush=True)


def spawn_writer(location, writer, n, batch, **kw):
    code = f"from tests.integration.test_bank_concurrency import writer_main; writer_main({str(location)!r}, {writer}, {n}, {batch})"
    return subprocess.Popen([sys.executable, "-c", code], cwd=os.getcwd(), env=ENV, **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory):
    chroma = shutil.which("chroma") or os.path.join(os.path.dirname(sys.executable), "chroma")
    port = free_port()
    data = tmp_path_factory.mktemp("chroma-server")
    log = open(data.parent / "chroma-server.log", "w")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        [chroma, "run", "--path", str(data), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=ENV,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            CaseBank(url=url, embedder=HashEmbedder(DIM))
            break
        except BankError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"chroma run did not start: see {log.name}")
            time.sleep(0.3)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def check_complete(bank, namespace, writers, n):
    ids = [c.id for c in bank.iter_cases(namespace)]
    assert len(ids) == len(set(ids)) == writers * n
    assert bank.count(namespace) == writers * n
    # Every case is findable through the vector index, not only counted in SQLite.
    for w in range(writers):
        q = f"writer {w} case {n - 1}"
        hit = bank.search(q, 1, namespace=namespace)[0]
        assert hit.case.question == q and hit.similarity > 0.999
    assert len(bank.search("writer 0 case 0", writers * n, namespace=namespace)) == writers * n


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["embedded", "server"])
def test_eight_concurrent_writers_end_with_exactly_4000_cases(tmp_path, chroma_server, mode):
    location = str(tmp_path / "bank") if mode == "embedded" else chroma_server
    # Writers use the default namespace; the server is shared by this module's tests.
    if mode == "server":
        CaseBank(url=chroma_server, embedder=HashEmbedder(DIM)).drop_namespace("default")
    procs = [spawn_writer(location, w, 500, 250) for w in range(8)]
    codes = [p.wait(timeout=300) for p in procs]
    assert codes == [0] * 8
    bank = CaseBank(
        None if mode == "server" else location,
        url=chroma_server if mode == "server" else None,
        embedder=HashEmbedder(DIM),
    )
    check_complete(bank, "default", 8, 500)


def test_reader_process_sees_concurrent_writers(tmp_path):
    path = tmp_path / "bank"
    reader = CaseBank(path, embedder=HashEmbedder(DIM))
    reader.upsert(Case(question="seed"))
    assert len(reader.search("seed", 5)) == 1
    procs = [spawn_writer(path, w, 200, 50) for w in range(3)]
    assert [p.wait(timeout=300) for p in procs] == [0] * 3
    assert reader.count() == 601
    assert len(reader.search("writer 2 case 199", 1000)) == 601
    assert reader.search("writer 2 case 199", 1)[0].case.question == "writer 2 case 199"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["embedded", "server"])
def test_killed_writer_resumes_without_loss_or_duplicates(tmp_path, chroma_server, mode):
    location = str(tmp_path / "bank") if mode == "embedded" else chroma_server
    if mode == "server":
        CaseBank(url=chroma_server, embedder=HashEmbedder(DIM)).drop_namespace("default")
    n, batch = 3000, 200
    proc = spawn_writer(location, 0, n, batch, stdout=subprocess.PIPE, text=True)
    # Kill it after two batches have landed, while it is inside the third write.
    assert proc.stdout.readline().startswith("batch")
    assert proc.stdout.readline().startswith("batch")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    bank = CaseBank(
        None if mode == "server" else location,
        url=chroma_server if mode == "server" else None,
        embedder=HashEmbedder(DIM),
    )
    partial = bank.count()
    assert 2 * batch <= partial < n
    rerun = spawn_writer(location, 0, n, batch, stdout=subprocess.DEVNULL)
    assert rerun.wait(timeout=300) == 0
    check_complete(bank, "default", 1, n)


def test_server_mode_basic_operations(chroma_server):
    bank = CaseBank(url=chroma_server, namespace="ops", embedder=HashEmbedder(DIM))
    bank.drop_namespace("ops")
    a, b = Case(question="alpha", namespace="ops", reward=1.0), Case(question="beta", namespace="ops")
    bank.upsert([a, b])
    bank.upsert(a)
    assert bank.count() == 2
    assert bank.get(a.id).question == "alpha"
    bank.record_usage([a.id], success=True)
    assert bank.update_reward(b.id, 0.0, source="human").label == "negative"
    assert bank.get(a.id).retrieved_successes == 1
    assert bank.search("alpha", 1, exclude_task_ids=["x"])[0].case.id == a.id
    assert bank.delete([b.id]) == 1
    assert "ops" in bank.namespaces()


def test_unreachable_server_is_a_clear_error():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(BankError, match="cannot reach the Chroma server"):
        CaseBank(url=url, embedder=HashEmbedder(DIM))


def attempts_main(location: str, writer: int, n: int, locked: bool = True) -> None:
    """Body of a process finishing the same question ``n`` times (as write_back does each run)."""
    from memory.outcomes import attempt_record, merge_attempt

    bank = CaseBank(location, embedder=HashEmbedder(DIM), lock_timeout=120)
    for i in range(n):
        case = Case(id="same-question", question="What is the shared question?", reward=float(i % 2))
        attempt = attempt_record(f"w{writer}-{i}", retrieval_id=None, reward=case.reward, label=case.label,
                                 reward_source="exact_match", answer=str(i))  # fmt: skip
        if locked:
            bank.upsert_merged(case, lambda existing, c=case, a=attempt: merge_attempt(existing, c, a))
        else:  # read and written apart: the race `upsert_merged` closes
            bank.upsert(merge_attempt(bank.get(case.id), case, attempt))


def test_concurrent_runs_of_one_question_keep_every_attempt(tmp_path):
    """Two processes finishing the same question at once: every attempt is in the case's history."""
    bank = CaseBank(tmp_path / "bank", embedder=HashEmbedder(DIM))
    bank.close()
    code = "from tests.integration.test_bank_concurrency import attempts_main; attempts_main({!r}, {}, 8)"
    procs = [
        subprocess.Popen([sys.executable, "-c", code.format(str(tmp_path / "bank"), w)], cwd=os.getcwd(), env=ENV)
        for w in range(2)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    case = CaseBank(tmp_path / "bank", embedder=HashEmbedder(DIM)).get("same-question")
    assert case is not None
    assert sorted(a["id"] for a in case.attempt_log) == sorted(f"w{w}-{i}" for w in range(2) for i in range(8))
    assert case.attempts == 16
