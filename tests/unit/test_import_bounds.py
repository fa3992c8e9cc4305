"""Import refuses hostile rows one by one (nesting, huge lines, wrong types, rewards out of range)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import memory.io
from memory.bank import CaseBank
from memory.embeddings import HashEmbedder
from memory.io import import_jsonl


@pytest.fixture
def hbank(tmp_path):
    return CaseBank(tmp_path / "bank", embedder=HashEmbedder(32))


def good(i: int) -> str:
    return json.dumps({"question": f"Valid question number {i}?", "plan": [], "reward": 1})


def errors_by_line(report) -> dict[int, str]:
    return {e.line: e.message for e in report.errors}


def test_cli_import_reports_each_hostile_row_and_keeps_the_valid_ones(tmp_path):
    nested = '{"question": "deep", "plan": ' + "[" * 100_000 + "]" * 100_000 + "}"
    huge = json.dumps({"question": "x" * (2 << 20), "plan": [], "reward": 1})  # 4 MB: over the line limit
    lines = [
        good(1),
        nested,
        huge,
        json.dumps({"question": "five", "reward": 5}),
        json.dumps({"question": "minus", "reward": -3}),
        good(2),
    ]
    f = tmp_path / "rows.jsonl"
    f.write_text("\n".join(lines) + "\n")
    env = {**os.environ, "MEMENTO_EMBEDDER": "hash", "ANONYMIZED_TELEMETRY": "False", "COLUMNS": "200"}
    res = subprocess.run(
        [sys.executable, "-c", "from memory.cli import app; app()", "import", str(f), "--bank", str(tmp_path / "bank")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    out = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 1, out
    assert "Traceback" not in out
    assert "rows.jsonl:2:" in out and "nested too deeply" in out
    assert "rows.jsonl:3:" in out and "over the 1,048,576-byte limit" in out
    assert "rows.jsonl:4:" in out and "between 0 and 1" in out and "5" in out
    assert "rows.jsonl:5:" in out and "-3" in out
    assert "2 cases written" in out
    bank = CaseBank(tmp_path / "bank", embedder=HashEmbedder(32), create=False)
    assert sorted(c.question for c in bank.iter_cases()) == ["Valid question number 1?", "Valid question number 2?"]


def test_oversized_line_is_never_read_whole(tmp_path, hbank, monkeypatch):
    monkeypatch.setattr(memory.io, "MAX_LINE_BYTES", 1000)
    f = tmp_path / "rows.jsonl"
    f.write_text(good(1) + "\n" + json.dumps({"question": "y" * 50_000}) + "\n" + good(2))  # no final newline
    reads = []
    real_open = open

    class Spy:
        def __init__(self, fh):
            self.fh = fh

        def readline(self, size=-1):
            assert size != -1, "an unbounded readline"
            line = self.fh.readline(size)
            reads.append(len(line))
            return line

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    monkeypatch.setattr(
        "builtins.open",
        lambda p, mode="r", *a, **k: (
            Spy(real_open(p, mode, *a, **k)) if p == f and "b" in mode else real_open(p, mode, *a, **k)
        ),
    )
    report = import_jsonl(hbank, f)
    assert report.written == 2 and max(reads) <= 1 << 20  # read in bounded pieces, never whole
    assert "50,017 bytes" in errors_by_line(report)[2]


def test_wrong_types_are_row_errors_not_batch_failures(tmp_path, hbank):
    base = {"namespace": "default", "label": "positive", "reward": 1.0, "reward_source": "imported", "plan": []}
    rows = [
        {**base, "question": "ok one"},
        {**base, "question": "bad time", "created_at": "yesterday"},
        {**base, "question": "bad source", "source": ["a", "b"]},
        {**base, "question": "bad counter", "times_retrieved": {"n": 1}},
        {**base, "question": "bad embedding", "embedding": [[1, 2], [3]], "embedder": "hash-32"},
        {**base, "question": "bad namespace", "namespace": "no spaces allowed"},
        {**base, "question": "reward text", "reward": "high"},
        {**base, "question": "bad owner", "created_by": 7},
        {**base, "question": "ok two"},
    ]
    f = tmp_path / "rows.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    report = import_jsonl(hbank, f)
    assert sorted(errors_by_line(report)) == [2, 3, 4, 5, 6, 7, 8]
    assert "'created_by' must be a string" in errors_by_line(report)[8]
    assert report.written == 2
    assert sorted(c.question for c in hbank.iter_cases()) == ["ok one", "ok two"]


def test_rewards_outside_zero_one_are_refused_in_every_format(tmp_path, hbank):
    f = tmp_path / "rows.jsonl"
    f.write_text(
        "\n".join(
            [
                json.dumps({"question": "qpr high", "reward": 1.5}),
                json.dumps({"question": "qpr ok", "reward": 0.25}),
                json.dumps({"question": "qpr none", "reward": None}),
            ]
        )
        + "\n"
    )
    report = import_jsonl(hbank, f)
    assert list(errors_by_line(report)) == [1] and report.written == 2
    memento = tmp_path / "memento.jsonl"
    memento.write_text(
        json.dumps({"question": "m", "namespace": "default", "reward": -0.5, "reward_source": "human"}) + "\n"
    )
    report = import_jsonl(hbank, memento)
    assert "between 0 and 1" in errors_by_line(report)[1] and report.written == 0


def test_embedder_never_tokenizes_more_than_it_reads(embedder, monkeypatch):
    seen = []
    real = embedder._encode_clamped

    def spy(batch):
        # What reaches the encoder (and its tokenizer), whichever backend runs.
        seen.extend(len(t) for t in batch)
        return real(batch)

    monkeypatch.setattr(embedder, "_encode_clamped", spy)
    text = "word " * 400_000  # 2 MB
    vec = embedder.embed_uncached([text])[0]
    assert max(seen) <= 16_384
    assert float(vec @ embedder.embed_uncached([text[:16_384]])[0]) > 0.999
