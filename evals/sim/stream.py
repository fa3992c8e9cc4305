"""The simulated stream without the graph: the same selection policies, thousands of tasks a minute.

`run_stream` replays what `memento eval --simulate` does per task — retrieve the nearest judged
cases, choose what to show, draw the simulated model's success, judge it (optionally leniently),
write the case back, learn — with an in-memory bank of MiniLM vectors instead of Chroma and HTTP.
It exists for the grid benchmark (`python -m evals.benchmarks.learning --grid`): many settings,
seeds and passes, with the same `BanditLearner` that serves the graph.

Modes: ``none``; ``similarity`` (the nearest K judged cases); ``learned`` (the case-value bandit,
refit within the stream and promoted by off-policy evaluation); and two oracles, for measurement
only. ``oracle`` knows the families and the true answers, and shows same-family cases whose answer
is right, nearest first, or nothing. ``family`` knows the families but, like any deployed policy,
not whether a stored answer is right: it shows the nearest same-family cases, positives first. It is
the ceiling of a policy that learns perfectly which cases are look-alikes but cannot see through a
lenient judge's wrong labels.

``told`` is a diagnostic of the learner, not a selector one could deploy: the learned policy with
perfect features. It reads every question as its family's name, so its word features say exactly
which candidates share the query's family and it only has to learn, from the same outcomes, that
those help and the others mislead. Where ``told`` also falls short of the family oracle, the
shortfall is in learning from few noisy outcomes, not in what the features can express.

``relation`` is a second diagnostic: a learner that is handed the relation itself (does a candidate
share the query's family?) and fits only three effects from the same outcomes: a same-family
positive case, a same-family failed case, any other case (`RelationLearner`). Where it closes the gap
and told does not, the told bandit's many free parameters (static weights, per-case values,
per-question intercepts) are what slow it down, not the noise in the outcomes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from evals.sim.model import SimParams, lenient_verdict, success_probability, uniform
from evals.sim.tasks import SimTask
from memory.policy.bandit import BanditConfig, CandidateCase, LoggedRetrieval, query_key
from memory.policy.learner import BanditLearner

MODES = ("none", "similarity", "learned", "oracle", "family", "told", "relation")


@dataclass
class _StoredCase:
    task: SimTask
    embedding: np.ndarray
    label: str
    right: bool


@dataclass
class StreamResult:
    """Per pass and task: whether the (true) answer was right, in stream order."""

    mode: str
    correct: dict[int, dict[str, bool]] = field(default_factory=dict)
    shown: dict[int, list[int]] = field(default_factory=dict)
    # Per pass and task, among the cases shown: (same-family cases with a right answer, other-family
    # look-alikes, same-family positives whose answer is wrong); the last two mislead.
    composition: dict[int, list[tuple[int, int, int]]] = field(default_factory=dict)
    decisions: list[dict] = field(default_factory=list)
    # Per pass, at its end: the share of the bank's positive labels whose answer is right (a lenient
    # judge's wrong labels are the rest; fewer of them the more often the mode answers right).
    label_precision: dict[int, float] = field(default_factory=dict)

    def accuracy(self, iteration: int) -> float:
        """Share of tasks answered right in one pass."""
        row = self.correct.get(iteration, {})
        return sum(row.values()) / len(row) if row else float("nan")


class RelationLearner:
    """Three effects, the relation given: Bayesian linear regression with exact Thompson sampling.

    The outcome is modelled as ``a + b·x`` where ``x`` counts the shown cases of each kind (same-family
    positive, same-family failed, other family). Every outcome refits the posterior (a 4×4 solve);
    each selection draws the effects once and shows the candidates whose drawn effect is positive,
    best first, at most K. For measurement only: it reads the simulator's families.
    """

    def __init__(self, k: int, *, noise_var: float = 0.2, prior_var: float = 0.01):
        """Start from the prior: every effect 0 ± 0.1."""
        self.k = k
        self.noise_var = noise_var
        self.prior_precision = np.diag([1.0, 1 / prior_var, 1 / prior_var, 1 / prior_var])
        self.xtx = np.zeros((4, 4))
        self.xty = np.zeros(4)
        self.n = 0
        self.y_sum = 0.0

    @staticmethod
    def kinds(family: str, cases: list[_StoredCase]) -> np.ndarray:
        """Per candidate, one-hot over (same-family positive, same-family failed, other family)."""
        out = np.zeros((len(cases), 3))
        for i, c in enumerate(cases):
            out[i, 2 if c.task.family != family else 0 if c.label == "positive" else 1] = 1.0
        return out

    def select(self, kinds: np.ndarray, rng: np.random.Generator) -> list[int]:
        """Indices to show: positive drawn effect, best first, at most K."""
        # The intercept is centred on the mean outcome (as in `CaseValueModel.fit`): it only helps
        # conditioning, its prior is wide.
        offset = self.y_sum / self.n if self.n else 0.0
        precision = self.xtx / self.noise_var + self.prior_precision
        cov = np.linalg.inv(precision)
        mean = cov @ ((self.xty - offset * self.xtx[:, 0]) / self.noise_var)
        effects = kinds @ rng.multivariate_normal(mean, cov, method="cholesky")[1:]
        order = np.argsort(-effects, kind="stable")[: self.k]
        return [int(i) for i in order if effects[i] > 0.0]

    def observe(self, shown_kinds: np.ndarray, reward: float) -> None:
        """Add one outcome of showing these cases."""
        x = np.concatenate([[1.0], shown_kinds.reshape(-1, 3).sum(0)])
        self.xtx += np.outer(x, x)
        self.xty += x * reward
        self.n += 1
        self.y_sum += reward


def run_stream(
    tasks: list[SimTask],
    embeddings: np.ndarray,
    mode: str,
    *,
    params: SimParams,
    passes: int = 4,
    k: int = 4,
    n_candidates: int = 32,
    seed: int = 0,
    retrain_every: int = 10,
    gate: bool = True,
    bandit: BanditConfig | None = None,
    learner_options: dict | None = None,
) -> StreamResult:
    """Run ``passes`` passes over the task stream in one memory mode.

    Args:
        tasks: The stream (same order every pass, as `memento eval` runs it).
        embeddings: Unit-norm question embeddings, one row per task.
        mode: One of `MODES`.
        params: Simulated model and judge settings (``wrong_label`` makes the judge lenient).
        passes: Passes over the stream.
        k: Cases shown at most.
        n_candidates: Nearest judged cases the learned policy chooses from.
        seed: Seeds the draws (common to every mode: same tasks, same draws).
        retrain_every: Learned mode refits after this many outcomes.
        gate: Learned mode promotes refits only by off-policy evaluation.
        bandit: Learned mode's priors.
        learner_options: Extra `BanditLearner` settings for experiments (share, confidence, window).

    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    bank: dict[str, _StoredCase] = {}
    order: list[str] = []
    learner = BanditLearner(
        bandit or BanditConfig(seed=seed), k=k, retrain_every=retrain_every, gate=gate, **(learner_options or {})
    )
    relation = RelationLearner(k)
    rng = np.random.default_rng(seed)
    result = StreamResult(mode)
    for it in range(1, passes + 1):
        result.correct[it] = {}
        result.shown[it] = []
        result.composition[it] = []
        for t, task in enumerate(tasks):
            q = embeddings[t]
            question = _text(task, mode)
            # Judged cases only, nearest first (what the bank's search returns).
            ids = [cid for cid in order if bank[cid].label in ("positive", "negative")]
            if ids and mode != "none":
                mat = np.stack([bank[c].embedding for c in ids])
                sims = mat @ q
                near = np.argsort(-sims, kind="stable")[: max(k, n_candidates)]
            else:
                sims, near = np.zeros(0), np.zeros(0, np.int64)
            chosen: list[int] = []
            record = None
            if mode == "similarity":
                chosen = near[:k].tolist()
            elif mode == "oracle":
                good = [i for i in near if bank[ids[i]].task.family == task.family and bank[ids[i]].right]
                chosen = good[:k]
            elif mode == "family":
                same = [i for i in near if bank[ids[i]].task.family == task.family]
                chosen = (
                    [i for i in same if bank[ids[i]].label == "positive"]
                    + [i for i in same if bank[ids[i]].label != "positive"]
                )[:k]
            elif mode == "relation":
                kinds = relation.kinds(task.family, [bank[ids[i]] for i in near])
                picked = relation.select(kinds, rng)
                chosen = [int(near[i]) for i in picked]
            elif mode in ("learned", "told") and near.size:
                cands = learner.with_history(question, [
                    CandidateCase(ids[i], bank[ids[i]].embedding, float(sims[i]), bank[ids[i]].label, "ground_truth_judge",
                                  question=_text(bank[ids[i]].task, mode, case=True))
                    for i in near
                ])  # fmt: skip
                sel = learner.select(q, cands, rng, question)
                chosen = [int(near[i]) for i in sel.order]
                record = LoggedRetrieval(query_key(question), q, cands, sel.shown, 0.0, sel.slate_propensity,
                                         sel.arm, sel.arm_propensity)  # fmt: skip
            elif mode in ("learned", "told"):
                record = LoggedRetrieval(query_key(question), q, [], np.zeros(0, bool), 0.0, 1.0)
            shown: list[tuple[str | None, str, bool]] = [
                (bank[ids[i]].task.family, bank[ids[i]].label, bank[ids[i]].right) for i in chosen
            ]
            p = success_probability(task.family, shown, params)
            right = uniform(seed, task.question, it - 1) < p
            passed = lenient_verdict(seed, task.question, it - 1, right, params.wrong_label)
            result.correct[it][task.task_id] = right
            result.shown[it].append(len(chosen))
            helpful = sum(1 for f, _, r in shown if f == task.family and r)
            look_alikes = sum(1 for f, _, _ in shown if f != task.family)
            mislabelled = sum(1 for f, label, r in shown if f == task.family and label == "positive" and not r)
            result.composition[it].append((helpful, look_alikes, mislabelled))
            if mode == "relation":
                relation.observe(kinds[picked], 1.0 if passed else 0.0)
            if record is not None:
                # The learner sees the judge's verdict, never the truth.
                record.reward = 1.0 if passed else 0.0
                decision = learner.observe(record)
                if decision is not None:
                    result.decisions.append({"pass": it, "task": t, **decision.as_dict()})
            if task.task_id not in bank:
                order.append(task.task_id)
            bank[task.task_id] = _StoredCase(task, q, "positive" if passed else "negative", right)
        positives = [c.right for c in bank.values() if c.label == "positive"]
        result.label_precision[it] = sum(positives) / len(positives) if positives else float("nan")
    return result


def _text(task: SimTask, mode: str, *, case: bool = False) -> str:
    """The question as the learner reads it: in ``told`` mode, its family's name.

    A told query keeps its task id too, so each question keeps its own difficulty intercept and
    history; the id is one word no other question has, so it never becomes a word feature.
    """
    if mode != "told":
        return task.question
    return task.family if case else f"{task.family} {task.task_id}"
