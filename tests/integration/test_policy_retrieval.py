"""Learned retrieval end to end: a real Chroma bank, MiniLM embeddings, a fitted bandit checkpoint."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from memory.cases import Case
from memory.experience import ExperienceLog
from memory.policy.bandit import (
    BanditConfig,
    CandidateCase,
    CaseValueModel,
    LoggedRetrieval,
    query_key,
)
from memory.policy.bandit_serving import logs_from_records, save_bandit
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
    cases += [
        Case(question=q, label="positive", reward=1.0, plan=[{"id": 1, "description": "search"}]) for q in POSITIVE
    ]
    cases += [Case(question=q, label="positive", reward=1.0) for q in FILLER]
    bank.upsert(cases)
    return bank


@pytest.fixture
def policy_path(tmp_path, embedder):
    """A bandit fitted on a log where showing positive cases helped and showing negative ones hurt.

    Near and far cases alike, so the bandit has seen outcomes across the similarity range.
    """
    from itertools import combinations

    rng = np.random.default_rng(0)
    topics = ["rivers", "capitals", "painters", "spiders", "planets", "chemistry", "poetry"]
    queries = [f"training question {i} about {topics[i % 7]}" for i in range(40)]
    cases = [[f"{q}, asked again ({j})" if j % 2 == 0 else f"an unrelated note {j} on {topics[(i + j) % 7]} and cooking"
              for j in range(6)] for i, q in enumerate(queries)]  # fmt: skip
    q_emb = embedder.embed(queries)
    c_emb = embedder.embed([c for row in cases for c in row]).reshape(len(queries), 6, -1)
    slates = [c for size in range(4) for c in combinations(range(6), size)]
    logs = []
    for _ in range(5):
        for i in range(len(queries)):
            sims = c_emb[i] @ q_emb[i]
            labels = ["positive" if rng.random() < 0.5 else "negative" for _ in range(6)]
            cands = [
                CandidateCase(f"c{i}-{j}", c_emb[i, j], float(sims[j]), labels[j], "ground_truth_judge")
                for j in range(6)
            ]
            chosen = slates[int(rng.integers(len(slates)))]
            helped = sum(1 if labels[j] == "positive" else -1 for j in chosen)
            reward = float(rng.random() < min(1.0, max(0.0, 0.4 + 0.25 * helped)))
            shown = np.isin(np.arange(6), chosen)
            logs.append(LoggedRetrieval(query_key(queries[i]), q_emb[i], cands, shown, reward, 1 / len(slates)))
    path = tmp_path / "policy.pt"
    save_bandit(CaseValueModel(BanditConfig(dims=8)).fit(logs), path)
    return path


def test_learned_retrieval_chooses_among_cached_candidates(filled_bank, policy_path, tmp_path):
    sim = retrieve_cases(filled_bank, QUESTION, mode="similarity", k=3)
    assert sim.selector == "similarity" and not sim.fallback
    assert {c["question"] for c in sim.shown} == set(NEGATIVE)

    got = retrieve_cases(
        filled_bank, QUESTION, mode="learned", k=3, n_candidates=8, policy_path=str(policy_path), rng_seed=0
    )
    assert got.selector == "learned" and got.policy_version.startswith("bandit-") and not got.fallback
    assert len(got.candidates) == 8  # every candidate is logged, shown or not
    # The nearest cases failed: the bandit prefers the positive ones a little further away. In
    # expectation it shows less than one of the failures similarity shows all three of.
    scores = {c["question"]: c["score"] for c in got.candidates}
    assert max(scores[q] for q in POSITIVE) > max(scores[q] for q in NEGATIVE)
    props = {c["question"]: c["propensity"] for c in got.candidates}
    assert sum(props[q] for q in NEGATIVE) < 1.0 < sum(props[q] for q in POSITIVE)
    assert got.shown
    shown_scores = [c["score"] for c in got.shown]
    assert shown_scores == sorted(shown_scores, reverse=True)
    for c in got.candidates:
        assert 0.0 <= c["propensity"] <= 1.0 and (c["propensity"] > 0 or not c["shown"])
        assert {"question", "similarity", "times_retrieved", "pair_successes", "pair_failures"} <= set(c)
    assert sum(p for _, p in got.slates) == pytest.approx(1.0)

    # The retrieval goes into the experience log and comes back out as bandit rows that use the
    # bank's stored embeddings and the logged set distribution.
    log = ExperienceLog(tmp_path / "exp.sqlite")
    log.log_retrieval("r1", namespace="default", query=QUESTION, candidates=got.candidates, selector=got.selector,
                      policy_version=got.policy_version, slates=got.slates)  # fmt: skip
    log.log_outcome("r1", reward=1.0, label="positive")
    (row,) = logs_from_records(log.records(), filled_bank.embedder, bank=filled_bank)
    assert row.reward == 1.0 and row.shown.tolist() == [c["shown"] for c in got.candidates]
    # The logged set distribution gives back the exact probability of the set that was shown.
    shown_set = tuple(i for i, c in enumerate(got.candidates) if c["shown"])
    assert row.slate_propensity == pytest.approx(dict((tuple(sorted(st)), p) for st, p in got.slates)[shown_set])
    stored = filled_bank.get_embeddings([c["id"] for c in got.shown])
    shown_vecs = [c.embedding for c, s in zip(row.candidates, row.shown, strict=True) if s]
    assert all(any(np.allclose(v, w, atol=1e-6) for w in stored.values()) for v in shown_vecs)


def test_learned_mode_falls_back_to_similarity(filled_bank, tmp_path, caplog):
    # No checkpoint yet is not a fallback: the bandit's prior and similarity share the selections.
    got = retrieve_cases(filled_bank, QUESTION, mode="learned", k=2, policy_path=str(tmp_path / "none.pt"))
    assert got.selector == "learned" and got.policy_version == "prior" and not got.fallback

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="memory.retrieval"):
        got = retrieve_cases(filled_bank, QUESTION, mode="learned", k=2, policy_path=str(bad))
    assert got.selector == "similarity" and got.fallback
    assert "unusable" in got.note and "unusable" in caplog.text and len(got.shown) == 2

    with pytest.raises(ValueError, match="mode"):
        retrieve_cases(filled_bank, QUESTION, mode="clever")


def test_similarity_fallback_explores_near_the_top_and_logs_propensities(filled_bank, tmp_path):
    # An unusable checkpoint makes learned mode fall back to similarity.
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    missing = str(tmp_path / "bad.pt")
    sim = retrieve_cases(filled_bank, QUESTION, mode="similarity", k=3, n_candidates=8)
    top = [c["id"] for c in sim.shown]
    greedy = retrieve_cases(
        filled_bank, QUESTION, mode="learned", k=3, n_candidates=8, policy_path=missing, exploration="greedy"
    )
    assert [c["id"] for c in greedy.shown] == top
    # The wider pool is logged even before a policy exists, so the first one has outcomes to learn from.
    assert len(greedy.candidates) == 8
    seen = set()
    for seed in range(40):
        got = retrieve_cases(
            filled_bank,
            QUESTION,
            mode="learned",
            k=3,
            n_candidates=8,
            policy_path=missing,
            exploration="epsilon:0.5",
            rng_seed=seed,
        )
        assert got.fallback and len(got.shown) == 3
        props = [c["propensity"] for c in got.candidates]
        assert props[:2] == [1.0, 1.0] and props[2] == pytest.approx(0.5)
        assert props[3:6] == pytest.approx([0.5 / 3] * 3) and props[6:] == [0.0, 0.0]
        assert all(c["propensity"] > 0 for c in got.candidates if c["shown"])
        # The logged set distribution is exact: its marginals are the propensities.
        marg = np.zeros(8)
        for st, p in got.slates:
            marg[st] += p
        assert marg == pytest.approx(props)
        seen |= {i for i, c in enumerate(got.candidates) if c["shown"]}
    assert seen == {0, 1, 2, 3, 4, 5}  # the 3rd slot went to ranks 4-6 now and then, never further
    # Plain similarity mode never explores.
    plain = retrieve_cases(filled_bank, QUESTION, mode="similarity", k=3, exploration="epsilon:1.0", rng_seed=0)
    assert [c["id"] for c in plain.shown] == top
