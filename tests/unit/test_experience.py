import json
import os
import subprocess
import sys
import textwrap

import pytest

from memory.experience import ExperienceLog, ExperienceLogError


def cands(n=3, shown=(0,)):
    return [
        {
            "case_id": f"case-{i}",
            "similarity": 1 - i / 10,
            "score": 1 - i / 10,
            "shown": i in shown,
            "propensity": 0.5,
            "label": "positive",
            "reward": 1.0,
        }
        for i in range(n)
    ]


def test_retrievals_join_outcomes(tmp_path):
    log = ExperienceLog(tmp_path / "x.sqlite")
    log.log_retrieval("r1", namespace="ns", query="q1", candidates=cands(), selector="similarity", task_id="t1")
    log.log_retrieval(
        "r2", namespace="ns", query="q2", candidates=cands(4, (1, 2)), selector="learned", policy_version="v3"
    )
    log.log_retrieval("r3", namespace="other", query="q3", candidates=[], selector="none")
    assert log.count() == 0
    assert log.count(judged_only=False) == 3
    log.log_outcome("r1", reward=1.0, label="positive", reward_source="ground_truth_judge")
    log.log_outcome("r2", reward=0.0, label="negative")
    judged = list(log.records())
    assert [r["retrieval_id"] for r in judged] == ["r1", "r2"]
    assert judged[0]["candidates"] == cands()
    assert (judged[0]["task_id"], judged[0]["reward"], judged[0]["reward_source"]) == ("t1", 1.0, "ground_truth_judge")
    assert judged[1]["policy_version"] == "v3"
    assert [r["retrieval_id"] for r in log.records(judged_only=False, namespace="other")] == ["r3"]
    assert log.get("r3")["reward"] is None
    assert log.get("missing") is None


def test_resumed_retrieval_is_ignored_and_rejudging_replaces_the_outcome(tmp_path):
    log = ExperienceLog(tmp_path / "x.sqlite")
    log.log_retrieval("r1", namespace="ns", query="q1", candidates=cands(), selector="similarity")
    log.log_retrieval("r1", namespace="ns", query="CHANGED", candidates=[], selector="similarity")
    log.log_outcome("r1", reward=0.0, label="negative")
    log.log_outcome("r1", reward=1.0, label="positive", reward_source="human")
    (rec,) = log.records()
    assert (rec["query"], rec["reward"], rec["label"], rec["reward_source"]) == ("q1", 1.0, "positive", "human")
    assert len(rec["candidates"]) == 3


def test_log_is_durable_and_exportable(tmp_path):
    path = tmp_path / "x.sqlite"
    log = ExperienceLog(path)
    log.log_retrieval("r1", namespace="ns", query="q1", candidates=cands(), selector="similarity")
    log.log_outcome("r1", reward=1.0, label="positive")
    log.log_retrieval("r2", namespace="ns", query="q2", candidates=cands(), selector="similarity")
    reopened = ExperienceLog(path)
    out = tmp_path / "exp.jsonl"
    assert reopened.export_jsonl(out) == 2
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["retrieval_id"] for r in rows] == ["r1", "r2"]
    assert rows[0]["candidates"][0]["shown"] is True
    assert reopened.export_jsonl(out, judged_only=True) == 1


def test_concurrent_processes_append_without_loss(tmp_path):
    path = tmp_path / "x.sqlite"
    code = textwrap.dedent(
        f"""
        import sys
        from memory.experience import ExperienceLog
        w = sys.argv[1]
        log = ExperienceLog({str(path)!r})
        for i in range(100):
            rid = f"{{w}}-{{i}}"
            log.log_retrieval(rid, namespace="ns", query=f"q {{rid}}", candidates=[{{"case_id": "c", "shown": True, "propensity": 1.0}}], selector="similarity")
            log.log_outcome(rid, reward=float(i % 2), label="positive" if i % 2 else "negative")
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(w)], cwd=os.getcwd()) for w in range(6)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 6
    log = ExperienceLog(path)
    recs = list(log.records())
    assert len(recs) == 600
    assert len({r["retrieval_id"] for r in recs}) == 600
    assert sum(r["reward"] for r in recs) == 300


def test_corrupt_log_is_a_clear_error(tmp_path):
    path = tmp_path / "x.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ExperienceLogError, match=str(path)):
        ExperienceLog(path)
