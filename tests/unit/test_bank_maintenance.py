import numpy as np
import pytest

from memory.bank import CaseBank
from memory.cases import Case
from memory.embeddings import HashEmbedder
from memory.maintenance import DAY, PrunePolicy, dedup, parse_age, prune

NOW = 1_800_000_000.0


@pytest.fixture
def hbank(tmp_path):
    return CaseBank(tmp_path / "bank", embedder=HashEmbedder(8))


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_dedup_keeps_the_best_of_each_group_and_merges_usage(hbank):
    base = unit([1, 0, 0, 0, 0, 0, 0, 0])
    near = unit([1, 0.05, 0, 0, 0, 0, 0, 0])
    chain = unit([1, 0.1, 0.02, 0, 0, 0, 0, 0])
    other = unit([0, 1, 0, 0, 0, 0, 0, 0])
    far = unit([0, 0, 1, 0, 0, 0, 0, 0])
    cases = [
        Case(question="capital of France?", reward=0.0),
        Case(question="France capital?", reward=1.0),
        Case(question="what's France's capital", reward=None),
        Case(question="spider legs", reward=1.0),
        Case(question="boiling point", reward=0.0),
    ]
    hbank.upsert(cases, embeddings=np.stack([base, near, chain, other, far]))
    hbank.record_usage([cases[0].id], success=True)
    hbank.record_usage([cases[2].id], success=False)

    dry = dedup(hbank, threshold=0.99)
    assert dry.dry_run and hbank.count() == 5
    assert len(dry.groups) == 1
    assert dry.kept == [cases[1].id]
    assert sorted(dry.removed) == sorted([cases[0].id, cases[2].id])

    done = dedup(hbank, threshold=0.99, dry_run=False)
    assert sorted(done.removed) == sorted(dry.removed)
    assert hbank.count() == 3
    survivor = hbank.get(cases[1].id)
    assert (survivor.times_retrieved, survivor.retrieved_successes, survivor.retrieved_failures) == (2, 1, 1)
    np.testing.assert_allclose(hbank.get_embeddings([survivor.id])[survivor.id], near, atol=1e-6)
    assert dedup(hbank, threshold=0.99).groups == []


def _fill(bank, specs):
    cases = []
    for q, reward, upd, ret in specs:
        c = Case(question=q, reward=reward, updated_at=NOW - upd * DAY, created_at=NOW - upd * DAY)
        c.last_retrieved_at = None if ret is None else NOW - ret * DAY
        cases.append(c)
    bank.upsert(cases, keep_created=False)
    return {c.question: c.id for c in cases}


def test_prune_to_capacity_removes_unknown_then_negative_then_weakest(hbank):
    ids = _fill(
        hbank,
        [
            ("unknown old", None, 10, None),
            ("unknown new", None, 1, None),
            ("neg stale", 0.0, 50, None),
            ("neg used", 0.0, 50, 1),
            ("pos low", 0.6, 5, None),
            ("pos high", 1.0, 5, None),
        ],
    )
    report = prune(hbank, PrunePolicy(max_cases=3), dry_run=True, at=NOW)
    assert report.dry_run and hbank.count() == 6
    assert set(report.removed) == {ids["unknown old"], ids["unknown new"], ids["neg stale"]}
    report = prune(hbank, PrunePolicy(max_cases=1), dry_run=False, at=NOW)
    assert report.after == 1
    assert [c.question for c in hbank.iter_cases()] == ["pos high"]


def test_prune_age_rules_and_keep_positive(hbank):
    ids = _fill(
        hbank,
        [
            ("unknown old", None, 40, None),
            ("unknown new", None, 2, None),
            ("neg stale", 0.0, 100, None),
            ("neg recently used", 0.0, 100, 3),
            ("pos", 1.0, 400, None),
        ],
    )
    report = prune(hbank, PrunePolicy(unknown_max_age_days=30, negative_max_age_days=90), dry_run=False, at=NOW)
    assert set(report.removed) == {ids["unknown old"], ids["neg stale"]}
    assert "unjudged" in report.removed[ids["unknown old"]]
    assert "stale negative" in report.removed[ids["neg stale"]]
    report = prune(hbank, PrunePolicy(max_cases=0, keep_positive=True), dry_run=False, at=NOW)
    assert [c.question for c in hbank.iter_cases()] == ["pos"]


def test_parse_age():
    assert parse_age("30d") == 30
    assert parse_age("12h") == 0.5
    assert parse_age("7") == 7
    assert parse_age(None) is None
    with pytest.raises(ValueError):
        parse_age("-3d")
