"""The simulated benchmark's learned mode: retraining before a pass goes through the promotion gate."""

import json

from evals.results import read_records
from evals.sim.run import SimConfig, simulate


def test_learned_mode_retrains_through_the_promotion_gate(tmp_path):
    cfg = SimConfig(out_dir=tmp_path / "sim", families=4, per_family=5, iterations=2, modes=["learned"],
                    seed=0, plan_first=False, progress=False)
    summary = simulate(cfg)
    notes = [n for n in summary["meta"]["notes"] if n.startswith("learned pass 2:")]
    assert notes and ("promoted" in notes[0] or "not trained" in notes[0]), summary["meta"]["notes"]
    history = tmp_path / "sim" / "policy" / "learned.pt.history.jsonl"
    decisions = [json.loads(line) for line in history.read_text().splitlines()]
    assert decisions and all("similarity_auc" in d for d in decisions)
    records = read_records(tmp_path / "sim" / "results.jsonl")
    assert len(records) == 4 * 5 * 2 and not any(r["error"] for r in records)
    # Pass 1 had no policy: similarity served, exploring near its top K.
    assert {r["selector"] for r in records if r["iteration"] == 1} == {"similarity"}
