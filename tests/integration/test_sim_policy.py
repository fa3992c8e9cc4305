"""The simulated benchmark's learned mode: the bandit and similarity serve side by side, refit before each pass."""

import json

from evals.results import read_records
from evals.sim.run import SimConfig, simulate
from memory.experience import ExperienceLog


def test_learned_mode_serves_the_bandit_and_retrains_through_the_arm_gate(tmp_path):
    cfg = SimConfig(
        out_dir=tmp_path / "sim",
        families=4,
        per_family=5,
        iterations=2,
        modes=["learned"],
        seed=0,
        plan_first=False,
        progress=False,
    )
    summary = simulate(cfg)
    notes = [n for n in summary["meta"]["notes"] if n.startswith("learned pass 2:")]
    assert notes and "refit on 20 retrievals, share" in notes[0], summary["meta"]["notes"]
    history = tmp_path / "sim" / "policy" / "learned.pt.history.jsonl"
    decisions = [json.loads(line) for line in history.read_text().splitlines()]
    # Every decision records the off-policy estimates it was made on.
    assert decisions and all({"candidate", "incumbent", "low", "rows"} <= set(d) for d in decisions)
    # Before pass 2 the bandit was refitted on all 20 outcomes of pass 1.
    assert any(d["rows"] == 20 and d["candidate"] is not None for d in decisions)
    records = read_records(tmp_path / "sim" / "results.jsonl")
    assert len(records) == 4 * 5 * 2 and not any(r["error"] for r in records)
    # No fallback: before any checkpoint the bandit's prior serves its share, similarity the rest.
    assert {r["selector"] for r in records} == {"learned"}
    logged = list(ExperienceLog(tmp_path / "sim" / "experience" / "learned.sqlite").records())
    assert len(logged) == 40 and logged[0]["policy_version"] == "prior"
    assert {rec["arm"]["arm"] for rec in logged} == {"bandit", "similarity"}
    for rec in logged:
        # Exact propensities and the whole set distribution, for the next off-policy evaluation.
        assert rec["slates"] and abs(sum(p for _, p in rec["slates"]) - 1.0) < 1e-6
        marg = [sum(p for st, p in rec["slates"] if i in st) for i in range(len(rec["candidates"]))]
        assert all(abs(m - c["propensity"]) < 1e-6 for m, c in zip(marg, rec["candidates"], strict=True))
