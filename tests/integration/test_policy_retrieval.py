"""Learned retrieval end to end: a real Chroma bank, MiniLM embeddings, a trained checkpoint."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from memory.cases import Case
from memory.experience import ExperienceLog
from memory.policy.data import from_experience, from_training_rows
from memory.policy.selection import clear_selector_cache
from memory.policy.train import TrainConfig, fit_and_save
from memory.retrieval import retrieve_cases

QUESTION = "What is the capital city of Austria?"
# The nearest cases failed; the useful ones are a little further away.
NEGATIVE = [
    "What is the capital city of Australia?",
    "What is the capital city of Austria-Hungary?",
    "What is the capital of Austria's Tyrol state?",
]
POSITIVE = [
    "Which city is the seat of government of Hungary?",
    "Name the largest city of Switzerland.",
    "Which river flows through Vienna?",
]
FILLER = ["How many legs does a spider have?", "Who painted the Mona Lisa?"]


@pytest.fixture
def filled_bank(bank):
    cases = [Case(question=q, label="negative", reward=0.0, plan=[{"id": 1, "description": "guess"}]) for q in NEGATIVE]
    cases += [Case(question=q, label="positive", reward=1.0, plan=[{"id": 1, "description": "search"}]) for q in POSITIVE]
    cases += [Case(question=q, label="positive", reward=1.0) for q in FILLER]
    bank.upsert(cases)
    return bank


@pytest.fixture
def policy_path(tmp_path, embedder):
    """A policy trained (original data format) on: tasks succeed when shown positive cases.

    Near and far cases alike, so the policy has seen outcomes across the similarity range (it
    does not promote cases further down than its training data ever showed).
    """
    rng = np.random.default_rng(0)
    topics = ["rivers", "capitals", "painters", "spiders", "planets", "chemistry", "poetry"]
    rows = []
    for i in range(30):
        for j in range(6):
            positive = bool(rng.random() < 0.5)
            near = j % 2 == 0
            case = f"training question {i} about {topics[i % 7]}, asked again ({j})" if near else f"an unrelated note {j} on {topics[(i + j) % 7]} and cooking"
            rows.append(
                {
                    "query": f"training question {i} about {topics[i % 7]}",
                    "case": case,
                    "case_label": "positive" if positive else "negative",
                    "truth_label": positive,
                }
            )
    data = from_training_rows(rows, embedder)
    path = tmp_path / "policy.pt"
    cfg = TrainConfig(epochs=30, patience=30, hidden=32, dropout=0.1, weight_decay=1e-4, lr=3e-3, batch_size=64)
    fit_and_save(data, path, cfg, progress=False)
    clear_selector_cache()
    return path


def test_learned_retrieval_reranks_cached_candidates(filled_bank, policy_path, tmp_path):
    sim = retrieve_cases(filled_bank, QUESTION, mode="similarity", k=3)
    assert sim.selector == "similarity" and not sim.fallback
    assert {c["question"] for c in sim.shown} == set(NEGATIVE)

    got = retrieve_cases(
        filled_bank, QUESTION, mode="learned", k=3, n_candidates=8, policy_path=str(policy_path), exploration="greedy"
    )
    assert got.selector == "learned" and got.policy_version and not got.fallback
    assert len(got.candidates) == 8  # every candidate is logged, shown or not
    assert sum(c["shown"] for c in got.candidates) == 3
    assert all(c["label"] == "positive" for c in got.shown)
    assert got.positive == got.shown and got.negative == []
    shown_scores = [c["score"] for c in got.shown]
    assert shown_scores == sorted(shown_scores, reverse=True)
    assert min(shown_scores) >= max(c["score"] for c in got.candidates if not c["shown"])
    for c in got.candidates:
        assert c["propensity"] == (1.0 if c["shown"] else 0.0)
        assert {"question", "similarity", "times_retrieved"} <= set(c)

    explored = retrieve_cases(
        filled_bank, QUESTION, mode="learned", k=3, n_candidates=8, policy_path=str(policy_path), exploration="epsilon:0.5", rng_seed=1
    )
    assert sum(c["propensity"] for c in explored.candidates) == pytest.approx(3)

    # The retrieval goes into the experience log and comes back out as training rows that use
    # the bank's stored embeddings.
    log = ExperienceLog(tmp_path / "exp.sqlite")
    log.log_retrieval("r1", namespace="default", query=QUESTION, candidates=got.candidates, selector=got.selector, policy_version=got.policy_version)
    log.log_outcome("r1", reward=1.0, label="positive")
    rows = from_experience(log.records(), filled_bank.embedder, bank=filled_bank)
    assert len(rows) == 3 and rows.target.tolist() == [1.0, 1.0, 1.0]
    stored = filled_bank.get_embeddings([c["id"] for c in got.shown])
    assert any(np.allclose(rows.case_emb[0], v, atol=1e-6) for v in stored.values())


def test_learned_mode_falls_back_to_similarity(filled_bank, tmp_path, caplog):
    clear_selector_cache()
    with caplog.at_level(logging.WARNING, logger="memory.retrieval"):
        got = retrieve_cases(filled_bank, QUESTION, mode="learned", k=2, policy_path=str(tmp_path / "none.pt"))
    assert got.selector == "similarity" and got.fallback
    assert "no policy checkpoint" in got.note and "no policy checkpoint" in caplog.text
    assert len(got.shown) == 2

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    got = retrieve_cases(filled_bank, QUESTION, mode="learned", k=2, policy_path=str(bad))
    assert got.fallback and "unusable" in got.note and len(got.shown) == 2

    with pytest.raises(ValueError, match="mode"):
        retrieve_cases(filled_bank, QUESTION, mode="clever")


def test_similarity_fallback_explores_near_the_top_and_logs_propensities(filled_bank, tmp_path):
    clear_selector_cache()
    missing = str(tmp_path / "none.pt")
    sim = retrieve_cases(filled_bank, QUESTION, mode="similarity", k=3, n_candidates=8)
    top = [c["id"] for c in sim.shown]
    greedy = retrieve_cases(filled_bank, QUESTION, mode="learned", k=3, n_candidates=8, policy_path=missing, exploration="greedy")
    assert [c["id"] for c in greedy.shown] == top
    # The wider pool is logged even before a policy exists, so the first one has outcomes to learn from.
    assert len(greedy.candidates) == 8
    seen = set()
    for seed in range(40):
        got = retrieve_cases(
            filled_bank, QUESTION, mode="learned", k=3, n_candidates=8, policy_path=missing, exploration="epsilon:0.5", rng_seed=seed
        )
        assert got.fallback and len(got.shown) == 3
        props = [c["propensity"] for c in got.candidates]
        assert props[:2] == [1.0, 1.0] and props[2] == pytest.approx(0.5)
        assert props[3:6] == pytest.approx([0.5 / 3] * 3) and props[6:] == [0.0, 0.0]
        assert all(c["propensity"] > 0 for c in got.candidates if c["shown"])
        seen |= {i for i, c in enumerate(got.candidates) if c["shown"]}
    assert seen == {0, 1, 2, 3, 4, 5}  # the 3rd slot went to ranks 4-6 now and then, never further
    # Plain similarity mode never explores.
    plain = retrieve_cases(filled_bank, QUESTION, mode="similarity", k=3, exploration="epsilon:1.0", rng_seed=0)
    assert [c["id"] for c in plain.shown] == top
