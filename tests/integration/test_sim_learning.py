"""The simulated benchmark through the real graph, bank and retrieval: memory must raise success."""

from evals.results import read_records
from evals.sim.run import SimConfig, simulate


def test_similarity_memory_beats_no_memory_by_pass_three(tmp_path):
    cfg = SimConfig(
        out_dir=tmp_path / "sim",
        families=4,
        per_family=5,
        iterations=3,
        modes=["none", "similarity"],
        seed=0,
        plan_first=False,
        progress=False,
    )
    summary = simulate(cfg)
    acc = {(r["mode"], r["iteration"]): r["accuracy"] for r in summary["overall"]}
    assert acc[("similarity", 3)] > acc[("none", 3)] + 0.1
    assert acc[("similarity", 3)] > acc[("similarity", 1)]
    records = read_records(tmp_path / "sim" / "results.jsonl")
    assert len(records) == 4 * 5 * 3 * 2 and not any(r["error"] for r in records)
    assert all(not r["cases_shown"] for r in records if r["mode"] == "none")
    assert (tmp_path / "sim" / "learning_curve.png").stat().st_size > 5000

    # Same seed, same stream, same decisions: the run is reproducible (a rerun in a new folder).
    again = simulate(SimConfig(**{**cfg.__dict__, "out_dir": tmp_path / "sim2", "modes": ["none"]}))
    assert [r["accuracy"] for r in again["overall"]] == [acc[("none", i)] for i in (1, 2, 3)]
