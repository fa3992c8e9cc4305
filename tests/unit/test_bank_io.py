import json

import numpy as np
import pytest

from memory.bank import CaseBank
from memory.cases import Case
from memory.embeddings import HashEmbedder
from memory.io import ImportFormatError, detect_format, export_jsonl, import_jsonl


class CountingEmbedder(HashEmbedder):
    def __init__(self, dim=32):
        super().__init__(dim)
        self.calls = 0

    def embed(self, texts):
        self.calls += len(texts)
        return super().embed(texts)


@pytest.fixture
def hbank(tmp_path):
    return CaseBank(tmp_path / "bank", embedder=CountingEmbedder())


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


PLAN = '{ "plan": [ { "id": 1, "description": "Look it up." } ] }'


def test_detects_each_format():
    assert detect_format({"case": "q", "plan": PLAN, "case_label": "positive"}) == "memory"
    assert (
        detect_format({"query": "x", "case": "q", "case_label": "negative", "plan": PLAN, "truth_label": True})
        == "training"
    )
    assert detect_format({"question": "q", "plan": [], "reward": 1}) == "qpr"
    assert detect_format(Case(question="q").to_dict()) == "memento"
    with pytest.raises(ImportFormatError):
        detect_format({"foo": 1})


def test_import_original_memory_format(tmp_path, hbank):
    f = write(
        tmp_path / "memory.jsonl",
        [
            {"case": "What sport does Deportivo Cali play?", "plan": PLAN, "case_label": "positive"},
            {"case": "In what country is Northland?", "plan": PLAN, "case_label": "negative"},
        ],
    )
    report = import_jsonl(hbank, f)
    assert (report.format, report.rows, report.written, report.ok) == ("memory", 2, 2, True)
    cases = {c.question: c for c in hbank.iter_cases()}
    pos = cases["What sport does Deportivo Cali play?"]
    assert (pos.label, pos.reward, pos.reward_source, pos.source) == (
        "positive",
        1.0,
        "imported",
        "memento:memory.jsonl",
    )
    assert pos.plan == [{"id": 1, "description": "Look it up."}]
    assert cases["In what country is Northland?"].reward == 0.0
    # Re-importing the same file changes nothing.
    assert import_jsonl(hbank, f).written == 2
    assert hbank.count() == 2


def test_import_training_format_takes_distinct_cases(tmp_path, hbank):
    rows = []
    for query in ("q A", "q B"):
        for case, label in (("case 1", "positive"), ("case 2", "negative")):
            rows.append({"query": query, "case": case, "case_label": label, "plan": PLAN, "truth_label": False})
    report = import_jsonl(hbank, write(tmp_path / "training_data.jsonl", rows))
    assert (report.format, report.rows, report.written, report.duplicates) == ("training", 4, 2, 2)
    assert sorted(c.question for c in hbank.iter_cases()) == ["case 1", "case 2"]


def test_import_question_plan_reward_rows(tmp_path, hbank):
    f = write(
        tmp_path / "qpr.jsonl",
        [{"question": "q1", "plan": PLAN, "reward": 0.9}, {"question": "q2", "plan": ["step"], "reward": None}],
    )
    report = import_jsonl(hbank, f, namespace="proj")
    assert report.format == "qpr"
    got = {c.question: c for c in hbank.iter_cases("proj")}
    assert (got["q1"].label, got["q1"].reward_source) == ("positive", "imported")
    assert (got["q2"].label, got["q2"].reward_source) == ("unknown", "none")


def test_malformed_rows_are_reported_with_line_numbers_and_valid_rows_kept(tmp_path, hbank):
    f = write(
        tmp_path / "mixed.jsonl",
        [
            {"case": "good one", "plan": PLAN, "case_label": "positive"},
            "{not json",
            {"case": "bad label", "plan": PLAN, "case_label": "maybe"},
            "[1, 2]",
            {"case": "", "plan": PLAN, "case_label": "positive"},
            {"case": "good two", "plan": PLAN, "case_label": "negative"},
        ],
    )
    report = import_jsonl(hbank, f)
    assert report.written == 2
    assert [e.line for e in report.errors] == [2, 3, 4, 5]
    assert "invalid JSON" in report.errors[0].message
    assert "case_label" in report.errors[1].message
    assert sorted(c.question for c in hbank.iter_cases()) == ["good one", "good two"]


def test_missing_file_and_unrecognised_format(tmp_path, hbank):
    with pytest.raises(FileNotFoundError):
        import_jsonl(hbank, tmp_path / "nope.jsonl")
    report = import_jsonl(hbank, write(tmp_path / "odd.jsonl", [{"foo": 1}, {"bar": 2}]))
    assert report.written == 0 and [e.line for e in report.errors] == [1, 2]


def test_memento_round_trip_restores_everything_without_re_encoding(tmp_path, hbank):
    cases = [
        Case(question=f"question {i}", reward=i % 2, answer=f"a{i}", task_id=f"t{i}", models={"planner": "m"})
        for i in range(7)
    ] + [Case(question="unjudged")]
    hbank.upsert(cases)
    hbank.record_usage([cases[0].id], success=True)
    original = {c.id: c.to_dict() for c in hbank.iter_cases()}
    out = tmp_path / "export.jsonl"
    assert export_jsonl(hbank, out, with_embeddings=True).written == 8

    restored = CaseBank(tmp_path / "restored", embedder=CountingEmbedder())
    report = import_jsonl(restored, out)
    assert report.format == "memento" and report.ok
    assert restored.embedder.calls == 0  # vectors came from the file
    assert {c.id: c.to_dict() for c in restored.iter_cases()} == original
    ids = list(original)
    a, b = hbank.get_embeddings(ids), restored.get_embeddings(ids)
    for i in ids:
        np.testing.assert_allclose(a[i], b[i], atol=1e-6)


def test_export_in_original_formats(tmp_path, hbank):
    hbank.upsert(
        [Case(question="pos", reward=1.0, plan=["do"]), Case(question="neg", reward=0.0), Case(question="unk")]
    )
    out = tmp_path / "memory.jsonl"
    report = export_jsonl(hbank, out, fmt="memory")
    assert (report.written, report.skipped) == (2, 1)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["case"]: r["case_label"] for r in rows} == {"pos": "positive", "neg": "negative"}
    assert all(set(r) == {"case", "plan", "case_label"} for r in rows)
    assert json.loads(next(r for r in rows if r["case"] == "pos")["plan"]) == {"plan": [{"id": 1, "description": "do"}]}
    # And it imports back as the original format.
    again = CaseBank(tmp_path / "again", embedder=HashEmbedder(32))
    assert import_jsonl(again, out).format == "memory"
    assert again.count() == 2
    qpr = tmp_path / "qpr.jsonl"
    export_jsonl(hbank, qpr, fmt="qpr", labels=("unknown",))
    assert [json.loads(line)["reward"] for line in qpr.read_text().splitlines()] == [None]
    with pytest.raises(ValueError):
        export_jsonl(hbank, qpr, fmt="training")


def test_import_into_another_namespace_rederives_ids(tmp_path, hbank):
    hbank.upsert(Case(question="q", namespace="a", reward=1.0))
    out = tmp_path / "e.jsonl"
    export_jsonl(hbank, out, namespace="a")
    import_jsonl(hbank, out, namespace="b")
    assert hbank.count("a") == hbank.count("b") == 1
    assert next(hbank.iter_cases("b")).id == Case(question="q", namespace="b").id


def test_pipelined_import_merges_batches_keeps_order_and_reports_write_errors(tmp_path, hbank, monkeypatch):
    path = tmp_path / "many.jsonl"
    rows = [{"question": f"question {i}", "plan": "p", "reward": 1.0} for i in range(50)]
    rows.append({"question": "question 7", "plan": "last wins", "reward": 0.0})  # repeats a flushed case
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    calls = []
    real = hbank.upsert

    def spy(cases, **kwargs):
        calls.append(len(cases))
        return real(cases, **kwargs)

    monkeypatch.setattr(hbank, "upsert", spy)
    report = import_jsonl(hbank, path, batch_size=4)
    assert report.written == 50 and hbank.count() == 50
    assert sum(calls) == 51 and len(calls) <= 13  # every batch written, none lost
    assert next(c for c in hbank.iter_cases() if c.question == "question 7").reward == 0.0

    def broken(cases, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(hbank, "upsert", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        import_jsonl(hbank, path, batch_size=4)
