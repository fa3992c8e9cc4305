"""A damaged bank through the CLI: one clear error naming the path and the fix, and `repair` fixes it."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys

import pytest

from memory.bank import CaseBank
from memory.cases import Case
from memory.embeddings import HashEmbedder

# Over Chroma's sync threshold (1000), so the index is persisted and its write-ahead log pruned:
# a lost index folder then cannot be rebuilt by Chroma from the log.
N = 1100


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    path = tmp_path_factory.mktemp("pristine") / "bank"
    bank = CaseBank(path, embedder=HashEmbedder(32))
    bank.upsert(
        [Case(question=f"question number {i} about topic {i % 7}", answer=str(i), reward=1.0) for i in range(N)]
    )
    bank.record_usage([Case(question="question number 3 about topic 3").id], True)
    return path


@pytest.fixture
def damaged(pristine, tmp_path):
    path = tmp_path / "bank"
    shutil.copytree(pristine, path)
    return path


def memory_cli(*args) -> tuple[int, str]:
    env = {**os.environ, "MEMENTO_EMBEDDER": "hash:32", "ANONYMIZED_TELEMETRY": "False", "COLUMNS": "300"}
    res = subprocess.run(
        [sys.executable, "-c", "from memory.cli import app; app()", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    out = res.stdout + res.stderr
    assert "Traceback" not in out and not any(line.startswith("InternalError") for line in out.splitlines()), out
    return res.returncode, " ".join(out.split())


def index_dirs(path):
    return [p for p in path.iterdir() if p.is_dir()]


def test_lost_index_folder_is_reported_and_repaired(damaged):
    for folder in index_dirs(damaged):
        shutil.rmtree(folder)
    code, out = memory_cli("stats", "--json", "--bank", damaged)
    assert code == 0 and f'"cases": {N}' in out
    code, out = memory_cli("search", "question number 5 about topic 5", "--bank", damaged)
    assert code == 2 and f"holds 1 of its {N} cases" in out and f"memento memory repair --bank {damaged}" in out
    code, out = memory_cli("repair", "--bank", damaged)
    assert code == 0 and f"rebuilt {N} cases" in out and ".damaged-" in out
    code, out = memory_cli("search", "question number 5 about topic 5", "-n", "3", "--json", "--bank", damaged)
    hits = json.loads(out)
    assert code == 0 and len(hits) == 3 and hits[0]["question"] == "question number 5 about topic 5"
    used = CaseBank(damaged, embedder=HashEmbedder(32), create=False).get(
        Case(question="question number 3 about topic 3").id
    )
    assert used.times_retrieved == 1 and used.retrieved_successes == 1  # usage survives the rebuild


def test_zeroed_index_files_give_one_clear_error_then_repair(damaged):
    for folder in index_dirs(damaged):
        for f in folder.glob("*.bin"):
            f.write_bytes(b"\0" * f.stat().st_size)
    code, out = memory_cli("stats", "--bank", damaged)
    assert code == 2 and out.startswith("error:") and str(damaged) in out and "memento memory repair" in out
    code, out = memory_cli("repair", "--bank", damaged)
    assert code == 0 and f"rebuilt {N} cases" in out
    code, out = memory_cli("stats", "--json", "--bank", damaged)
    assert code == 0 and f'"cases": {N}' in out


def test_random_bytes_in_the_data_file_give_one_clear_error(damaged):
    sqlite = damaged / "chroma.sqlite3"
    size = sqlite.stat().st_size
    rng = random.Random(7)
    with open(sqlite, "r+b") as fh:
        fh.seek(size // 3)
        fh.write(bytes(rng.randrange(256) for _ in range(size - size // 3 - 4096)))
    code, out = memory_cli("stats", "--bank", damaged)
    assert code == 2 and out.startswith("error:") and str(sqlite) in out and "re-import" in out
