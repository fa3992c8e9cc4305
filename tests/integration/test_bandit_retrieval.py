"""Learned mode serves the case-value bandit: prior, exact propensities, online retraining, CLI.

A real Chroma bank with hash embeddings (no model to load): the bandit's mechanics, not its
judgement of meaning, are under test here.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from memory.bank import CaseBank
from memory.cases import Case
from memory.embeddings import HashEmbedder
from memory.experience import ExperienceLog
from memory.policy.bandit_serving import (
    canary_path,
    history_path,
    is_bandit_checkpoint,
)
from memory.policy.online import OnlineTrainer
from memory.policy.selection import load_bandit_selector
from memory.retrieval import retrieve_cases

DIM = 16


@pytest.fixture
def hash_bank(tmp_path):
    bank = CaseBank(tmp_path / "bank", embedder=HashEmbedder(DIM))
    bank.upsert([Case(question=f"stored question {i}", label="positive" if i % 2 else "negative", reward=float(i % 2))
                 for i in range(12)])  # fmt: skip
    return bank


def _marginals_from_slates(slates, n):
    out = np.zeros(n)
    for st, p in slates:
        out[list(st)] += p
    return out


def test_learned_mode_without_a_checkpoint_mixes_the_prior_and_similarity_with_exact_propensities(hash_bank, tmp_path):
    from memory.policy.learner import START_SHARE

    policy = tmp_path / "policy.pt"
    arms = set()
    for seed in range(12):
        got = retrieve_cases(
            hash_bank, "a new question", mode="learned", k=3, n_candidates=8, policy_path=str(policy), rng_seed=seed
        )
        # Before any retraining the bandit's prior serves its share and similarity the rest (no fallback).
        assert got.selector == "learned" and got.policy_version == "prior" and not got.fallback
        assert got.arm["arm"] in ("bandit", "similarity")
        assert got.arm["p"] == pytest.approx(START_SHARE if got.arm["arm"] == "bandit" else 1 - START_SHARE)
        arms.add(got.arm["arm"])
    assert arms == {"bandit", "similarity"}
    assert len(got.candidates) == 8  # every candidate is logged, shown or not
    sims = [c["similarity"] for c in got.candidates]
    top = tuple(sorted(np.argsort(sims)[::-1][:3].tolist()))
    props = np.array([c["propensity"] for c in got.candidates])
    assert sum(p for _, p in got.slates) == pytest.approx(1.0)
    assert np.allclose(_marginals_from_slates(got.slates, 8), props)
    # Similarity's top 3 is in the distribution with at least its arm's share.
    assert dict((tuple(sorted(st)), p) for st, p in got.slates)[top] >= 1 - START_SHARE - 1e-9
    assert all({"case_id", "question", "similarity", "label", "reward_source", "pair_successes", "pair_failures"} <= set(c)
               for c in got.candidates)  # fmt: skip
    # The slate distribution survives the experience log.
    log = ExperienceLog(tmp_path / "exp.sqlite")
    log.log_retrieval("r1", namespace="default", query="a new question", candidates=got.candidates, selector=got.selector,
                      policy_version=got.policy_version, slates=got.slates, arm=got.arm)  # fmt: skip
    assert log.get("r1")["slates"] == got.slates and log.get("r1")["arm"] == got.arm


def _judged_log(bank, exp: Path, policy: Path, n: int, namespace: str = "default") -> None:
    """``n`` learned retrievals logged and judged: a task succeeds when it was shown a positive case."""
    log = ExperienceLog(exp)
    rng = np.random.default_rng(0)
    for i in range(n):
        question = f"task number {i % 9}"
        got = retrieve_cases(bank, question, mode="learned", k=3, n_candidates=8, policy_path=str(policy), rng_seed=i,
                             namespace=namespace)  # fmt: skip
        log.log_retrieval(f"r{i}", namespace=namespace, query=question, candidates=got.candidates, selector=got.selector,
                          policy_version=got.policy_version, slates=got.slates, arm=got.arm)  # fmt: skip
        ok = any(c["label"] == "positive" for c in got.shown) or rng.random() < 0.3
        log.log_outcome(
            f"r{i}", reward=float(ok), label="positive" if ok else "negative", reward_source="ground_truth_judge"
        )


def test_online_trainer_refits_from_the_log_and_running_retrieval_picks_it_up(hash_bank, tmp_path):
    exp, policy = tmp_path / "exp.sqlite", tmp_path / "policy.pt"
    _judged_log(hash_bank, exp, policy, 30)
    trainer = OnlineTrainer(policy, exp, every=20, bank=hash_bank, namespace="default", k=3)
    assert not any(trainer.notify_outcome() for _ in range(19))
    assert trainer.notify_outcome() is True
    decision = trainer.wait(timeout=60)
    assert decision is not None and decision.rows == 30, decision
    # Every refit is written; the arm comparison only sets its share.
    assert is_bandit_checkpoint(policy) and not canary_path(policy).exists()
    (line,) = [json.loads(x) for x in history_path(policy).read_text().splitlines()]
    # The decision carries the off-policy estimates it was made on.
    assert line["rows"] == 30 and line["promoted"] == decision.promoted
    assert line["candidate"] is None or 0.0 <= line["candidate"] <= 1.0
    assert line["reason"]
    # The next retrieval serves what was written, without a restart.
    live = load_bandit_selector(policy)
    assert live.version == decision.version and live.model.n_rows == 30 and live.share == decision.share
    got = retrieve_cases(
        hash_bank, "task number 1", mode="learned", k=3, n_candidates=8, policy_path=str(policy), rng_seed=0
    )
    assert got.selector == "learned" and got.policy_version == live.version
    # Pair history of this question reaches the logged candidates.
    assert any(c["pair_successes"] + c["pair_failures"] > 0 for c in got.candidates)


def test_synchronous_trainer_decides_before_the_outcome_returns(hash_bank, tmp_path, monkeypatch):
    exp, policy = tmp_path / "exp.sqlite", tmp_path / "policy.pt"
    _judged_log(hash_bank, exp, policy, 22)
    monkeypatch.setenv("MEMENTO_POLICY_RETRAIN_SYNC", "1")
    trainer = OnlineTrainer(policy, exp, every=2, bank=hash_bank, namespace="default", k=3)
    assert trainer.notify_outcome() is False and trainer.last is None
    assert trainer.notify_outcome() is True and not trainer.running
    assert trainer.last is not None and trainer.last.rows == 22
    assert policy.exists()


def test_retraining_embeds_each_question_once(hash_bank, tmp_path):
    exp, policy = tmp_path / "exp.sqlite", tmp_path / "policy.pt"
    _judged_log(hash_bank, exp, policy, 20)
    seen: list[str] = []

    class Counting(HashEmbedder):
        def embed(self, texts):
            seen.extend(texts)
            return super().embed(texts)

    trainer = OnlineTrainer(policy, exp, every=0, bank=hash_bank, embedder=Counting(DIM), namespace="default", k=3)
    trainer.retrain()
    assert sorted(seen) == sorted({f"task number {i % 9}" for i in range(20)})
    seen.clear()
    trainer.retrain()  # the same log again: nothing to encode
    assert seen == []


def test_damaged_checkpoint_falls_back_to_similarity_and_the_trainer_sets_it_aside(hash_bank, tmp_path, caplog):
    exp, policy = tmp_path / "exp.sqlite", tmp_path / "policy.pt"
    policy.write_bytes(b"not a checkpoint")
    with caplog.at_level(logging.WARNING, logger="memory.retrieval"):
        got = retrieve_cases(
            hash_bank, "a new question", mode="learned", k=2, n_candidates=8, policy_path=str(policy), rng_seed=0
        )
    assert got.selector == "similarity" and got.fallback
    assert "unusable" in got.note and "falling back to similarity" in got.note and "unusable" in caplog.text
    assert len(got.shown) == 2 and [c["shown"] for c in got.candidates[:2]] == [True, True]
    assert got.slates == [[[0, 1], 1.0]]
    # The first retraining keeps the bad file aside and starts over from the prior.
    ExperienceLog(exp).log_retrieval("r0", namespace="default", query="q", candidates=got.candidates, selector=got.selector,
                                     slates=got.slates)  # fmt: skip
    ExperienceLog(exp).log_outcome("r0", reward=1.0, label="positive")
    OnlineTrainer(policy, exp, every=0, bank=hash_bank, namespace="default", k=2).retrain()
    assert (tmp_path / "policy.pt.unusable").read_bytes() == b"not a checkpoint"
    reasons = [json.loads(x)["reason"] for x in history_path(policy).read_text().splitlines()]
    assert "moved to policy.pt.unusable" in reasons[0]
    assert (
        retrieve_cases(hash_bank, "q", mode="learned", k=2, policy_path=str(policy), rng_seed=0).selector == "learned"
    )


def test_an_old_experience_log_gains_the_slates_column(tmp_path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE retrievals (retrieval_id TEXT PRIMARY KEY, namespace TEXT NOT NULL, task_id TEXT, query TEXT NOT NULL,"
        " selector TEXT NOT NULL, policy_version TEXT, candidates TEXT NOT NULL, created_at REAL NOT NULL);"
        "CREATE TABLE outcomes (retrieval_id TEXT PRIMARY KEY, reward REAL, label TEXT NOT NULL, reward_source TEXT,"
        " created_at REAL NOT NULL);"
        "INSERT INTO retrievals VALUES ('old', 'ns', NULL, 'q', 'similarity', NULL, '[]', 1.0);"
        "INSERT INTO outcomes VALUES ('old', 1.0, 'positive', NULL, 2.0);"
    )
    conn.commit()
    conn.close()
    log = ExperienceLog(path)
    assert [(r["retrieval_id"], r["slates"]) for r in log.records()] == [("old", None)]
    log.log_retrieval(
        "new", namespace="ns", query="q2", candidates=[], selector="learned", slates=[((), 0.7), ((0,), 0.3)]
    )
    assert log.get("new")["slates"] == [[[], 0.7], [[0], 0.3]]
    # Reopening (another process, a later version) migrates nothing twice.
    assert ExperienceLog(path).get("old")["reward"] == 1.0


def test_policy_eval_and_info_report_the_off_policy_estimate(hash_bank, tmp_path):
    exp, policy = tmp_path / "exp.sqlite", tmp_path / "policy.pt"
    _judged_log(hash_bank, exp, policy, 30)
    OnlineTrainer(policy, exp, every=0, bank=hash_bank, namespace="default", k=3).retrain()
    # Wide enough that the table does not wrap the words asserted below.
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "MEMENTO_EMBEDDER": f"hash:{DIM}", "COLUMNS": "240"}
    out = tmp_path / "eval.json"
    res = subprocess.run(
        [sys.executable, "-m", "graph", "policy", "eval", str(policy), "--experience", str(exp), "--bank", str(tmp_path / "bank"),
         "--k", "3", "--json", str(out)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert "similarity top-3" in res.stdout and "prior" in res.stdout and "30 judged retrievals" in res.stdout, (
        res.stdout
    )
    report = json.loads(out.read_text())["policies"]
    assert report and all(0.0 <= r["estimate"] <= 1.5 and r["retrievals"] == 30 for r in report.values())
    # In process from here (a subprocess costs seconds of imports).
    from typer.testing import CliRunner

    from memory.policy.cli import app

    res = CliRunner().invoke(app, ["info", str(policy)])
    assert res.exit_code == 0, res.output
    assert "case-value bandit" in res.output and "decisions" in res.output
    # No log: one clear line, no traceback.
    res = CliRunner().invoke(app, ["eval", str(policy), "--experience", str(tmp_path / "none.sqlite")])
    assert res.exit_code == 1 and "no experience log" in res.output
