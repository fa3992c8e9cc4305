"""`memento eval` end to end: real graph, real Chroma bank, LangSmith offline, scripted LLM over HTTP."""

import json

import pytest
from typer.testing import CliRunner

from evals.metrics import exact_match
from evals.results import read_records
from evals.sim.openai_server import final, last_user_text, verdict
from graph.cli import app

ROWS = [
    {"question": "What is the capital of France?", "ground_truth": "Paris", "source": "geo"},
    {"question": "What is the capital of Spain?", "ground_truth": "Madrid<|answer_split|>Madrid city", "source": "geo"},
    {"question": "What is 2 + 2?", "ground_truth": "4", "source": "math"},
    {"question": "What is 3 + 5?", "ground_truth": "8", "source": "math"},
]
# The scripted planner knows these; the last question gets a wrong answer.
ANSWERS = {"What is the capital of France?": "Paris", "What is the capital of Spain?": "Madrid", "What is 2 + 2?": "4"}


def question_of(request):
    text = last_user_text(request)
    return [line for line in text.splitlines() if line.startswith("Question: ")][-1][len("Question: ") :]


def install(server):
    server.respond_with("planner", lambda req: final(ANSWERS.get(question_of(req), "no idea")))

    def judge(req):
        text = last_user_text(req)
        fields = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
        refs = fields["Reference answers"].split(" | ")
        return verdict(bool(exact_match(fields["Predicted answer"], refs)), "compared with the references")

    server.respond_with("judge", judge)


@pytest.fixture
def dataset(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    return path


def run_cli(llm_server, dataset, out, *extra):
    args = [
        "eval",
        str(dataset),
        "--base-url",
        llm_server.url,
        "--planner",
        "planner",
        "--executor",
        "executor",
        "--judge",
        "judge",
        "--mcp-config",
        "",
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]
    return CliRunner().invoke(app, args, catch_exceptions=False)


def test_eval_cli_modes_passes_summary_and_plot(llm_server, dataset, tmp_path):
    install(llm_server)
    out = tmp_path / "out"
    result = run_cli(
        llm_server,
        dataset,
        out,
        "--memory",
        "none",
        "--memory",
        "similarity",
        "--iterations",
        "2",
        "--price",
        "planner=2.0",
    )
    assert result.exit_code == 0, result.output
    records = read_records(out / "results.jsonl")
    assert len(records) == 16
    assert {(r["mode"], r["iteration"]) for r in records} == {(m, i) for m in ("none", "similarity") for i in (1, 2)}
    by_q = {r["question"]: r for r in records if r["mode"] == "none" and r["iteration"] == 1}
    paris = by_q["What is the capital of France?"]
    assert paris["correct"] is True and paris["reward"] == 1.0 and paris["reward_source"] == "ground_truth_judge"
    assert paris["judge_model"] == "judge" and paris["judge_rationale"] == "compared with the references"
    assert paris["exact_match"] == 1.0 and paris["tokens"] > 0 and paris["cost_usd"] > 0
    assert by_q["What is 3 + 5?"]["correct"] is False
    # Similarity mode in pass 2 is shown the pass-1 cases; no-memory mode never is.
    assert all(not r["cases_shown"] for r in records if r["mode"] == "none")
    assert any(r["cases_shown"] for r in records if r["mode"] == "similarity" and r["iteration"] == 2)

    summary = json.loads((out / "summary.json").read_text())
    rows = {(r["mode"], r["iteration"]): r for r in summary["overall"]}
    assert rows[("similarity", 2)]["accuracy"] == pytest.approx(0.75)
    assert {r["source"] for r in summary["per_source"]} == {"geo", "math"}
    assert "| none | 1 | train | 4 | 0.750 |" in (out / "summary.md").read_text()
    assert (out / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert "Evaluation summary" in result.output

    # Each mode wrote into its own namespace of the bank.
    from memory.bank import CaseBank

    bank = CaseBank(str(out / "bank"))
    assert set(bank.namespaces()) == {"eval-none", "eval-similarity"}
    assert bank.count("eval-similarity") == 4


def test_resume_skips_finished_tasks_and_tolerates_a_torn_line(llm_server, dataset, tmp_path):
    install(llm_server)
    out = tmp_path / "out"
    assert run_cli(llm_server, dataset, out, "--memory", "similarity").exit_code == 0
    assert len(llm_server.requests_for("planner")) == 4
    path = out / "results.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    # As if killed while writing the third result: two complete lines and half of the third.
    path.write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])

    result = run_cli(llm_server, dataset, out, "--memory", "similarity")
    assert result.exit_code == 0, result.output
    assert len(llm_server.requests_for("planner")) == 6  # only the two unfinished tasks ran again
    records = read_records(path)
    assert len(records) == 4 and len({r["task_id"] for r in records}) == 4
    assert path.read_text().endswith("\n")

    # A finished run reruns nothing; a changed setting is refused instead of mixing results.
    assert run_cli(llm_server, dataset, out, "--memory", "similarity").exit_code == 0
    assert len(llm_server.requests_for("planner")) == 6
    refused = run_cli(llm_server, dataset, out, "--memory", "similarity", "--k", "2")
    assert refused.exit_code == 2 and "other settings" in refused.output


def test_test_split_runs_with_leakage_guard_and_never_writes_memory(llm_server, dataset, tmp_path):
    install(llm_server)
    out = tmp_path / "out"
    result = run_cli(
        llm_server, dataset, out, "--memory", "similarity", "--test-fraction", "0.5", "--seed", "3", "--iterations", "2"
    )
    assert result.exit_code == 0, result.output
    records = read_records(out / "results.jsonl")
    splits = {r["task_id"]: r["split"] for r in records}
    n_test = sum(1 for s in splits.values() if s == "test")
    assert 0 < n_test < 4
    # Train tasks run before test tasks within each pass.
    for it in (1, 2):
        order = [r["split"] for r in records if r["iteration"] == it]
        assert order == sorted(order, key=lambda s: s == "test")
    from memory.bank import CaseBank

    bank = CaseBank(str(out / "bank"))
    stored = {c.task_id for c in bank.iter_cases("eval-similarity")}
    assert stored == {t for t, s in splits.items() if s == "train"}
    # The leakage guard: a test task is never shown a case of itself.
    summary = json.loads((out / "summary.json").read_text())
    assert {r["split"] for r in summary["overall"]} == {"train", "test"}


def test_langsmith_offline_runs_every_evaluator(llm_server, dataset, tmp_path, monkeypatch):
    import evals.runner as runner

    monkeypatch.delenv("LANGSMITH_API_KEY", raising=False)
    client, upload = runner.langsmith_client()
    assert upload is False and client.api_url.startswith("http://127.0.0.1")
    seen = []

    def spy(inputs, outputs, reference_outputs):
        seen.append((inputs["task_id"], outputs.get("answer"), reference_outputs["ground_truth"]))
        return {"key": "spy", "score": 1.0}

    monkeypatch.setattr(runner, "EVALUATORS", (*runner.EVALUATORS, spy))
    install(llm_server)
    assert run_cli(llm_server, dataset, tmp_path / "out", "--limit", "2").exit_code == 0
    assert sorted(a for _, a, _ in seen) == ["Madrid", "Paris"]
    assert {g for _, _, g in seen} == {"Paris", "Madrid<|answer_split|>Madrid city"}
    assert runner.correctness(
        {}, {"answer": "x", "reward": 1.0, "judge_model": "j", "judge_rationale": "ok"}, {"ground_truth": "y"}
    ) == {"key": "correctness", "score": 1.0, "comment": "[j] ok"}


def test_malformed_dataset_is_refused_with_line_numbers(llm_server, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "ok"}\n{broken\n{"ground_truth": "x"}\n', encoding="utf-8")
    out = tmp_path / "out"
    result = run_cli(llm_server, bad, out)
    assert result.exit_code == 2
    assert "line 2" in result.output and "line 3" in result.output
    assert not (out / "results.jsonl").exists()
