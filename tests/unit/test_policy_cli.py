"""`memento policy train|eval|info` on tiny data (hash embeddings: no model to load)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from memory.policy.cli import app

runner = CliRunner()


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMENTO_EMBEDDER", "hash:16")
    rng = np.random.default_rng(0)
    path = tmp_path / "training_data.jsonl"
    with open(path, "w") as fh:
        for i in range(24):
            for j in range(4):
                positive = bool(rng.random() < 0.5)
                row = {
                    "query": f"query {i}",
                    "case": f"case {i} {j}",
                    "case_label": "positive" if positive else "negative",
                    "plan": '{"plan": []}',
                    "truth_label": positive,
                }
                fh.write(json.dumps(row) + "\n")
    return path


def test_train_info_eval(tiny, tmp_path):
    out = tmp_path / "p.pt"
    res = runner.invoke(app, ["train", "--training-data", str(tiny), "--out", str(out), "--epochs", "5", "--seed", "1"])
    assert res.exit_code == 0, res.output
    assert out.exists() and "validation" in res.output and "AUC" in res.output

    res = runner.invoke(app, ["info", str(out)])
    assert res.exit_code == 0, res.output
    assert "training_data:training_data.jsonl" in res.output and "head" in res.output

    res = runner.invoke(app, ["info", str(out), "--json"])
    meta = json.loads(res.output)
    assert meta["metadata"]["n_queries"] == 24 and meta["config"]["variant"] == "head"

    report = tmp_path / "eval.json"
    res = runner.invoke(app, ["eval", str(out), "--training-data", str(tiny), "--json", str(report)])
    assert res.exit_code == 0, res.output
    assert "similarity" in res.output and "Brier" in res.output
    metrics = json.loads(report.read_text())["metrics"]
    assert 0.0 <= next(iter(metrics.values()))["auc"] <= 1.0


def test_clear_errors(tiny, tmp_path):
    res = runner.invoke(app, ["train", "--out", str(tmp_path / "p.pt")])
    assert res.exit_code == 1 and "--training-data" in res.output

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "case": "c"}\n')
    res = runner.invoke(app, ["train", "--training-data", str(bad), "--out", str(tmp_path / "p.pt")])
    assert res.exit_code == 1 and "bad.jsonl:1" in res.output and "truth_label" in res.output
    assert not (tmp_path / "p.pt").exists()

    res = runner.invoke(app, ["train", "--training-data", str(tiny), "--variant", "huge"])
    assert res.exit_code == 1 and "variant" in res.output

    res = runner.invoke(app, ["info", str(tmp_path / "missing.pt")])
    assert res.exit_code == 1 and "no policy checkpoint" in res.output

    out = tmp_path / "p.pt"
    assert (
        runner.invoke(app, ["train", "--training-data", str(tiny), "--out", str(out), "--epochs", "2"]).exit_code == 0
    )
    payload = torch.load(out, weights_only=True)
    payload["state_dict"]["q2.bias"] += 1.0
    torch.save(payload, out)
    res = runner.invoke(app, ["eval", str(out), "--training-data", str(tiny)])
    assert res.exit_code == 1 and "digest" in res.output
