"""The case-value bandit: which set of past cases (0 to K) to show, learned online from outcomes.

A task's outcome is modelled as additive in what was shown (a linear-Gaussian model of the success
probability, so the posterior is exact and refits in milliseconds)::

    y = a + g·z(q) + u[q] + sum over shown cases c of ( θ·φ(q, c) + v[c] ) + noise

* ``a + g·z(q) + u[q]`` is how hard the query is: a trend over the query's (whitened, PCA-reduced)
  embedding ``z(q)`` plus a per-question intercept ``u[q]`` for questions asked more than once.
  Because difficulty is modelled on its own, a case is credited only with the change it makes.
* ``θ·φ(q, c)`` is a query–case compatibility learned from outcomes: similarity, the case's label
  and where that label came from, and per-dimension agreement ``|z(q) - z(c)|`` and ``z(q)·z(c)``
  in the reduced space (a diagonal bilinear metric, with separate weights for positive cases). It
  can learn that a look-alike case that differs from the query in the directions that matter
  hurts, which similarity cannot express.
* ``text_gap`` is how much further a case's words are from the query's than the best candidate's,
  in tf-idf cosine (idf over the logged questions): what a question asks is said in the words few
  questions share, and a look-alike that the embedding puts near differs in exactly those. Its
  prior (lexically further is worse, like the similarity gap's) holds back look-alikes from the
  first selection on, before any outcome; the outcomes then set its weight.
* ``v[c]`` is a per-case value (MemRL-style runtime Q-value) shrunk toward zero: a case whose label
  is wrong, or that misleads whoever sees it, loses value as its outcomes come in.

Selection shows the candidates whose predicted effect is positive, best first, at most K: under
the additive model that set maximises predicted success, and showing nothing is a real choice when
no case is predicted to help. Exploration is Thompson sampling over a fixed ensemble of posterior
draws made at fit time: a selection picks one draw uniformly, so the probability that each
candidate (and the whole shown set) was chosen is computed exactly by replaying every draw.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from memory.blas import one_blas_thread

# Reward sources a label can come from, as one-hot features (anything else counts as "other").
SOURCES: tuple[str, ...] = ("ground_truth_judge", "exact_match", "self_judge", "human", "imported")
_STATIC = (
    "show", "similarity", "positive", "negative", "near_duplicate", "positive_near_duplicate", "positive_similarity",
    "similarity_gap", "nearest_four", "positive_nearest_four", "pair_successes", "pair_failures",
    *(f"source_{s}" for s in SOURCES), "source_other", "text_gap",
)  # fmt: skip
_SRC0 = _STATIC.index(f"source_{SOURCES[0]}")
_TEXT_GAP = _STATIC.index("text_gap")
# The static features of checkpoints written before ``text_gap`` existed (a prefix of today's).
_STATIC_BEFORE_TEXT = _STATIC[:_TEXT_GAP]
# The default design: what to show, the label and its source, and the gaps to the best candidate.
DEFAULT_STATIC: tuple[str, ...] = (
    "show", "positive", "negative", "similarity_gap", "positive_near_duplicate",
    *(f"source_{s}" for s in SOURCES), "source_other", "text_gap",
)  # fmt: skip
# A case at least this similar is (nearly) the same question asked before.
NEAR_DUPLICATE = 0.97
N_STATIC = len(_STATIC)
STATIC_FEATURES: tuple[str, ...] = _STATIC


@dataclass(frozen=True)
class CandidateCase:
    """One candidate case as the bandit sees it: what a deployment knows at selection time."""

    case_id: str
    embedding: np.ndarray
    similarity: float
    label: str
    reward_source: str | None = None
    # Outcomes of earlier attempts at this same question that showed this case (before this
    # selection): what worked for exactly this question, MemRL-style.
    pair_successes: float = 0.0
    pair_failures: float = 0.0
    # The case's question text: which words it does not share with the query is a feature.
    question: str = ""


@dataclass
class LoggedRetrieval:
    """One logged selection and its outcome (a training row of the bandit).

    Attributes:
        query_key: Normalised question (repeated questions share a difficulty intercept).
        query_embedding: The question's embedding.
        candidates: Every candidate the selector chose from.
        shown: Per candidate, whether it was shown.
        reward: The task's outcome in [0, 1].
        slate_propensity: Probability, under the logging policy, of showing exactly this set
            (None when unknown, e.g. logs written before it was recorded).
        arm: Which serving policy chose the set (``similarity`` or ``bandit``; None if unknown).
        arm_propensity: The probability that this arm was drawn to serve the retrieval.

    """

    query_key: str
    query_embedding: np.ndarray
    candidates: list[CandidateCase]
    shown: np.ndarray
    reward: float
    slate_propensity: float | None = None
    arm: str | None = None
    arm_propensity: float | None = None


@dataclass(frozen=True)
class BanditConfig:
    """Priors and sizes of the bandit. Variances are in success-probability units squared.

    Attributes:
        dims: Size of the reduced embedding space ``z`` (PCA of the logged embeddings, whitened) for
            the query trend and the diagonal metric. Off by default: on the confounder grid the
            metric's 128 weights learned noise from a few hundred outcomes, while word differences
            (a few dozen weights, each seen in many pairs) learned what distinguishes look-alikes.
        noise_var: Outcome noise (a Bernoulli outcome near 0.5 has variance 0.25).
        query_var: Prior variance of each per-question intercept.
        trend_var: Prior variance of each query-trend weight (over ``z(q)``).
        static_var: Prior variance of the static case weights (similarity, label, source).
        metric_var: Prior variance of each metric weight (summed over ``dims`` terms, so small).
        case_var: Prior variance of each per-case value.
        lexical_var: Prior variance of each word's weight (a word that one question has and the
            other lacks). Small: hundreds of words share a few hundred outcomes.
        lexical_prior: Prior mean of each word's weight: below zero, every word in which a case
            differs from the query counts a little against it before any outcome.
        static_features: The static features in the design (names from ``STATIC_FEATURES``);
            empty keeps all of them. Each weight is one more thing the outcomes must pin down,
            so the default keeps only what a selection needs: whether to show, the label and its
            source, a repeat of the same question, and the two gaps to the best candidate (by
            embedding and by words). On the confounder grid's two hardest points (12 seeds) the
            earlier default, all 18 static features of the time, closed 42% and 54% of the gap
            to the oracle; these 12 with the words' gap (``idf_power`` 2) close 80% and 86%
            (README, "Learning against an oracle").
        max_words: At most this many words get a weight (the most frequent; 0 turns words off).
        show_prior: Prior mean effect of showing any case. Zero with the words' gap prior: the
            lexically nearest candidate starts at no predicted effect, so the mean belief shows
            nothing (no evidence, no case) while the draws try the lexically nearest cases first.
        repeat_prior: Prior mean effect of a positive case of (nearly) the same question: the
            one case believed to help before any evidence.
        negative_prior: Prior mean extra effect of a failed case.
        gap_prior: Prior mean loss per unit of embedding similarity below the best candidate
            (similarity's own bet: nearer cases are the likelier to help). Zero by default: the
            candidates are already the nearest by embedding, and among them the very nearest are
            where look-alikes come from, so a second "nearer is better" prior on top of the words'
            gap pushed exploration toward them (at the grid's hardest point, 24 seeds each on
            0–23 and 24–47, with idf⁴ and a 60-outcome gate window: 78% and 79% of the gap with
            prior 1, 80% and 82% with 0).
        top_prior: Prior mean extra effect of a positive case among the four nearest (what
            similarity would show): above ``-show_prior`` the model starts as "similarity,
            positives only" and departs from it only as outcomes say.
        text_gap_prior: Prior mean loss per unit of tf-idf cosine below the lexically nearest
            candidate (the words-side twin of ``gap_prior``).
        text_var: Prior variance of the text-gap weight. Small: on the confounder grid a wide
            prior let the Thompson draws show lexically distant cases at random in the first
            pass, which cost more than the weight gained by being learned sooner.
        idf_power: Each word's weight in the text vectors is its idf to this power. 1 is the
            classic tf-idf cosine; higher powers lean harder on the rarest words, the ones that say
            what is asked. Among each grid question's four nearest, the share from its own family
            (6 families, 12 seeds) is 0.63 by MiniLM and 0.68, 0.84, 0.92 and 0.93 by tf-idf with
            power 1, 2, 3 and 4. At the grid's hardest point (24 seeds each on 0–23 and 24–47,
            with the defaults around it) power 2, 3, 4 and 5 closed 72%/70%, 73%/79%, 80%/82%
            and 79%/83% of the gap (README, "Learning against an oracle").
        draws: Posterior draws in the Thompson ensemble.
        temperature: Scales the posterior covariance of the draws (<1 explores less widely).
        min_shows: A case gets its own value only once it was shown this often.
        max_cases: At most this many per-case values (the most shown cases).
        max_queries: At most this many per-question intercepts (the most repeated questions).
        seed: Seeds the PCA subsample and the posterior draws.

    """

    dims: int = 0
    noise_var: float = 0.2
    query_var: float = 0.03
    trend_var: float = 0.002
    static_var: float = 0.01
    metric_var: float = 0.02
    case_var: float = 0.002
    lexical_var: float = 0.003
    lexical_prior: float = -0.02
    static_features: tuple[str, ...] = DEFAULT_STATIC
    max_words: int = 512
    show_prior: float = 0.0
    repeat_prior: float = 0.1
    negative_prior: float = 0.0
    gap_prior: float = 0.0
    top_prior: float = 0.0
    text_gap_prior: float = 1.0
    text_var: float = 0.01
    idf_power: float = 4.0
    draws: int = 32
    temperature: float = 0.3
    min_shows: int = 2
    max_cases: int = 4000
    max_queries: int = 4000
    seed: int = 0

    def __post_init__(self) -> None:
        """Check the static feature names (a config read back from JSON has a list: kept as a tuple)."""
        unknown = sorted(set(self.static_features) - set(_STATIC))
        if unknown:
            raise ValueError(f"unknown static features {unknown}; known: {', '.join(_STATIC)}")
        object.__setattr__(self, "static_features", tuple(self.static_features))

    def static_mask(self) -> np.ndarray:
        """Per static feature, whether it is in the design."""
        if not self.static_features:
            return np.ones(N_STATIC, bool)
        return np.array([name in self.static_features for name in _STATIC])


def _whiten_basis(vectors: np.ndarray, dims: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, components and scales of a PCA of the given rows (at most ``dims`` components)."""
    if dims <= 0:
        width = vectors.shape[1]
        return np.zeros(width, np.float32), np.zeros((0, width), np.float32), np.zeros(0, np.float32)
    rng = np.random.default_rng(seed)
    if vectors.shape[0] > 3000:
        vectors = vectors[rng.choice(vectors.shape[0], 3000, replace=False)]
    mean = vectors.mean(0)
    # Eigen-decomposition of the (dim x dim) covariance: much cheaper than an SVD of the rows.
    centred = torch.from_numpy(np.ascontiguousarray(vectors - mean, dtype=np.float64))
    evals, evecs = torch.linalg.eigh(centred.T @ centred)
    evals, evecs = evals.flip(0).clamp(min=0.0).numpy(), evecs.flip(1).numpy()
    s = np.sqrt(evals)
    vt = evecs.T
    keep = int(min(dims, max(0, vectors.shape[0] - 1), int((s > 1e-6).sum())))
    scale = s[:keep] / math.sqrt(max(1, vectors.shape[0] - 1))
    return mean.astype(np.float32), vt[:keep].astype(np.float32), np.maximum(scale, 1e-6).astype(np.float32)


def _source_index(source: str | None) -> int:
    return SOURCES.index(source) if source in SOURCES else len(SOURCES)


class CaseValueModel:
    """The fitted bandit: posterior mean, a Thompson ensemble, and the feature maps it was fit with."""

    name = "bandit"

    def __init__(self, config: BanditConfig | None = None):
        """An unfitted model: the prior alone (shows nothing on its mean, explores a little)."""
        self.config = config or BanditConfig()
        self.mean_vec = np.zeros(0, np.float32)
        self.components = np.zeros((0, 0), np.float32)
        self.scale = np.zeros(0, np.float32)
        self.case_index: dict[str, int] = {}
        self.query_index: dict[str, int] = {}
        self.vocab: dict[str, int] = {}
        self._word_vectors: dict[str, np.ndarray] = {}
        self.idf: dict[str, float] = {}
        self._text_vectors: dict[str, dict[str, float]] = {}
        self.n_rows = 0
        self.pair_counts: dict[str, tuple[float, float]] = {}
        self.theta_mean = np.zeros(0, np.float32)
        self.theta_draws = np.zeros((0, 0), np.float32)
        self.offset = 0.0
        self._set_prior()

    # ----- layout of the parameter vector -------------------------------------------------------
    @property
    def dims(self) -> int:
        """Size of the reduced embedding space actually fitted."""
        return int(self.components.shape[0])

    def _layout(self) -> dict[str, slice]:
        m = self.dims
        sizes = [("intercept", 1), ("trend", m), ("query", len(self.query_index)), ("static", N_STATIC),
                 ("metric", 4 * m), ("lexical", len(self.vocab)), ("case", len(self.case_index))]  # fmt: skip
        out, pos = {}, 0
        for name, size in sizes:
            out[name] = slice(pos, pos + size)
            pos += size
        out["all"] = slice(0, pos)
        return out

    def _prior(self) -> tuple[np.ndarray, np.ndarray]:
        """Prior mean and variance of every parameter."""
        c, lay = self.config, self._layout()
        p = lay["all"].stop
        mean, var = np.zeros(p), np.zeros(p)
        var[lay["intercept"]] = 1.0
        var[lay["trend"]] = c.trend_var
        var[lay["query"]] = c.query_var
        var[lay["static"]] = c.static_var
        mean[lay["static"].start] = c.show_prior
        mean[lay["static"].start + _STATIC.index("positive_near_duplicate")] = c.repeat_prior
        mean[lay["static"].start + _STATIC.index("negative")] = c.negative_prior
        gap = lay["static"].start + _STATIC.index("similarity_gap")
        mean[gap] = -c.gap_prior
        # As uncertain as it is large: outcomes can overturn it where nearer cases mislead.
        var[gap] = max(c.static_var, c.gap_prior**2)
        mean[lay["static"].start + _STATIC.index("positive_nearest_four")] = c.top_prior
        mean[lay["static"].start + _TEXT_GAP] = -c.text_gap_prior
        var[lay["static"].start + _TEXT_GAP] = c.text_var
        var[lay["metric"]] = c.metric_var
        var[lay["lexical"]] = c.lexical_var
        mean[lay["lexical"]] = c.lexical_prior
        # A feature left out of the design has an all-zero column: its weight stays at a zero mean.
        mean[lay["static"]][~c.static_mask()] = 0.0
        var[lay["case"]] = c.case_var
        return mean, var

    def _set_prior(self) -> None:
        mean, var = self._prior()
        self.theta_mean = mean.astype(np.float32)
        rng = np.random.default_rng(self.config.seed)
        sd = np.sqrt(var * self.config.temperature)
        self.theta_draws = (mean + rng.standard_normal((self.config.draws, mean.size)) * sd).astype(np.float32)

    # ----- features ------------------------------------------------------------------------------
    def _z(self, vectors: np.ndarray) -> np.ndarray:
        if self.dims == 0:
            return np.zeros((vectors.shape[0], 0), np.float32)
        return ((vectors - self.mean_vec) @ self.components.T) / self.scale

    def case_features(
        self, query_embedding: np.ndarray, candidates: Sequence[CandidateCase], query: str = ""
    ) -> np.ndarray:
        """Per candidate, its row of the case part of the design (static, metric, lexical, case one-hot)."""
        lay = self._layout()
        width = lay["all"].stop - lay["static"].start
        rows = np.zeros((len(candidates), width), np.float32)
        if not candidates:
            return rows
        zq = self._z(np.asarray(query_embedding, np.float32).reshape(1, -1))[0]
        zc = self._z(np.stack([np.asarray(c.embedding, np.float32) for c in candidates]))
        m = self.dims
        base = lay["static"].start
        pos = np.array([c.label == "positive" for c in candidates], np.float32)
        rows[:, 0] = 1.0
        rows[:, 1] = [float(c.similarity) for c in candidates]
        rows[:, 2] = pos
        rows[:, 3] = [c.label == "negative" for c in candidates]
        rows[:, 4] = rows[:, 1] >= NEAR_DUPLICATE
        rows[:, 5] = rows[:, 4] * pos
        rows[:, 6] = rows[:, 1] * pos
        sims = rows[:, 1]
        # Where the case ranks among the candidates: similarity's own choice is the nearest four.
        rank = np.argsort(np.argsort(-sims, kind="stable"), kind="stable")
        rows[:, 7] = sims.max() - sims
        rows[:, 8] = rank < 4
        rows[:, 9] = rows[:, 8] * pos
        rows[:, 10] = np.log1p([c.pair_successes for c in candidates])
        rows[:, 11] = np.log1p([c.pair_failures for c in candidates])
        rows[np.arange(len(candidates)), [_SRC0 + _source_index(c.reward_source) for c in candidates]] = 1.0
        if self.idf:
            # How far each case's words are from the best candidate's, in tf-idf cosine: the words
            # that few questions share decide what is asked, and a look-alike differs in them.
            qt = self._text_vector(query)
            text = np.array([_sparse_dot(self._text_vector(c.question), qt) for c in candidates], np.float32)
            rows[:, _TEXT_GAP] = text.max() - text
        rows[:, :N_STATIC][:, ~self.config.static_mask()] = 0.0
        if m:
            # Scaled by 1/sqrt(m): the metric's total prior variance does not grow with dims.
            diff = np.abs(zq - zc) / math.sqrt(m)
            prod = zq * zc / math.sqrt(m)
            off = lay["metric"].start - base
            rows[:, off : off + m] = diff
            rows[:, off + m : off + 2 * m] = prod
            rows[:, off + 2 * m : off + 3 * m] = pos[:, None] * diff
            rows[:, off + 3 * m : off + 4 * m] = pos[:, None] * prod
        if self.vocab:
            # The words one of the two questions has and the other lacks, one weight per word:
            # a look-alike differs from the query in the words that decide what is asked.
            off = lay["lexical"].start - base
            qv = self._word_vector(query)
            cv = np.stack([self._word_vector(c.question) for c in candidates])
            rows[:, off : off + len(self.vocab)] = np.abs(cv - qv)
        for i, c in enumerate(candidates):
            j = self.case_index.get(c.case_id)
            if j is not None:
                rows[i, lay["case"].start - base + j] = 1.0
        return rows

    def _text_vector(self, text: str) -> dict[str, float]:
        """A text's unit-norm tf-idf vector (0/1 term frequency, ``idf ** idf_power``), sparse and memoised."""
        vec = self._text_vectors.get(text)
        if vec is None:
            vec = {w: self.idf[w] ** self.config.idf_power for w in words(text) if w in self.idf}
            norm = math.sqrt(sum(v * v for v in vec.values()))
            vec = {w: v / norm for w, v in vec.items()} if norm > 0 else {}
            if len(self._text_vectors) < 100_000:
                self._text_vectors[text] = vec
        return vec

    def _word_vector(self, text: str) -> np.ndarray:
        """Which vocabulary words a text has, as 0/1 (memoised: the same questions recur)."""
        vec = self._word_vectors.get(text)
        if vec is None:
            vec = np.zeros(len(self.vocab), np.float32)
            idx = [self.vocab[w] for w in words(text) if w in self.vocab]
            vec[idx] = 1.0
            if len(self._word_vectors) < 100_000:
                self._word_vectors[text] = vec
        return vec

    def _query_row(self, query_embedding: np.ndarray, query_key: str | None) -> np.ndarray:
        lay = self._layout()
        row = np.zeros(lay["static"].start, np.float32)
        row[0] = 1.0
        if self.dims:
            row[lay["trend"]] = self._z(np.asarray(query_embedding, np.float32).reshape(1, -1))[0] / math.sqrt(
                self.dims
            )
        j = self.query_index.get(query_key or "")
        if j is not None:
            row[lay["query"].start + j] = 1.0
        return row

    # ----- fitting -------------------------------------------------------------------------------
    def fit(self, logs: Sequence[LoggedRetrieval]) -> CaseValueModel:
        """Fit the posterior on logged retrievals (replaces any earlier fit). Returns self."""
        c = self.config
        logs = list(logs)
        self.n_rows = len(logs)
        if not logs:
            self.__init__(c)  # type: ignore[misc]  # reset to the prior in place; subclasses share __init__
            return self
        vecs = [r.query_embedding for r in logs] + [
            cand.embedding for r in logs for cand, s in zip(r.candidates, r.shown, strict=True) if s
        ]
        self.mean_vec, self.components, self.scale = _whiten_basis(np.stack(vecs).astype(np.float32), c.dims, c.seed)
        shows: Counter[str] = Counter(
            cand.case_id for r in logs for cand, s in zip(r.candidates, r.shown, strict=True) if s
        )
        frequent = [cid for cid, n in shows.most_common(c.max_cases) if n >= c.min_shows]
        self.case_index = {cid: i for i, cid in enumerate(sorted(frequent))}
        asked: Counter[str] = Counter(r.query_key for r in logs)
        repeated = [q for q, n in asked.most_common(c.max_queries) if n >= 2]
        self.query_index = {q: i for i, q in enumerate(sorted(repeated))}
        self.vocab = _vocabulary(logs, c.max_words) if c.max_words else {}
        self._word_vectors = {}
        self.idf = _idf(logs)
        self._text_vectors = {}
        lay = self._layout()
        p = lay["all"].stop
        x = np.zeros((len(logs), p), np.float32)
        y = np.zeros(len(logs), np.float32)
        for t, r in enumerate(logs):
            x[t, : lay["static"].start] = self._query_row(r.query_embedding, r.query_key)
            if r.shown.any():
                # Features over the whole candidate list, as at selection time: the gap to the best
                # candidate and the rank depend on the cases that were not shown too.
                x[t, lay["static"].start :] = self.case_features(r.query_embedding, r.candidates, r.query_key)[
                    r.shown
                ].sum(0)
            y[t] = float(r.reward)
        self.pair_counts = pair_history(logs)
        prior_mean, prior_var = self._prior()
        # Centre the intercept on the observed success rate: its prior is wide, this only helps
        # conditioning.
        self.offset = float(y.mean())
        prior_mean[0] = 0.0
        xt = torch.from_numpy(x).double()
        yt = torch.from_numpy(y - self.offset).double()
        precision = xt.T @ xt / c.noise_var + torch.diag(torch.from_numpy(1.0 / prior_var))
        rhs = xt.T @ yt / c.noise_var + torch.from_numpy(prior_mean / prior_var)
        chol = torch.linalg.cholesky(precision)
        mean = torch.cholesky_solve(rhs.unsqueeze(1), chol).squeeze(1)
        # Draws: mean + L^-T e has covariance precision^-1; tempered by sqrt(temperature).
        gen = torch.Generator().manual_seed(int(c.seed))
        eps = torch.randn(p, c.draws, generator=gen, dtype=torch.float64)
        noise = torch.linalg.solve_triangular(chol.T, eps, upper=True) * math.sqrt(c.temperature)
        mean[0] += self.offset
        self.theta_mean = mean.float().numpy()
        self.theta_draws = (mean.unsqueeze(1) + noise).T.float().numpy()
        return self

    def with_history(self, query: str, candidates: Sequence[CandidateCase]) -> list[CandidateCase]:
        """The candidates with this question's earlier outcomes per case, as of the last fit."""
        return fill_pair_history(self.pair_counts, query, candidates)

    # ----- prediction and selection ---------------------------------------------------------------
    def effects(
        self, query_embedding: np.ndarray, candidates: Sequence[CandidateCase], query: str = ""
    ) -> tuple[np.ndarray, np.ndarray]:
        """Predicted change in success from showing each candidate.

        Returns:
            ``(mean effects (n,), effects under every ensemble draw (draws, n))``.

        """
        feats = self.case_features(query_embedding, candidates, query)
        start = self._layout()["static"].start
        with one_blas_thread():
            return feats @ self.theta_mean[start:], self.theta_draws[:, start:] @ feats.T

    def baseline(self, query_embedding: np.ndarray, query_key: str | None = None) -> float:
        """Predicted success with no case shown."""
        row = self._query_row(query_embedding, query_key)
        with one_blas_thread():
            return float(row @ self.theta_mean[: row.size])

    @staticmethod
    def best_set(effects: np.ndarray, k: int) -> np.ndarray:
        """Indices of the set that maximises additive predicted success: top K of positive effects."""
        order = np.argsort(-effects, kind="stable")[: max(0, k)]
        return order[effects[order] > 0.0]

    def select(
        self,
        query_embedding: np.ndarray,
        candidates: Sequence[CandidateCase],
        k: int,
        rng: np.random.Generator,
        *,
        explore: bool = True,
        query: str = "",
    ) -> Selection:
        """Choose the set to show and the exact probability of every choice.

        Args:
            query_embedding: The task's embedding.
            candidates: Cases to choose from.
            k: At most this many are shown.
            rng: Picks the ensemble draw (exploration).
            explore: False shows the posterior-mean choice (propensities then 1 or 0).
            query: The task's question (its words are compared with each case's).

        """
        n = len(candidates)
        mean, draws = self.effects(query_embedding, candidates, query)
        if not explore or self.theta_draws.shape[0] == 0:
            chosen = self.best_set(mean, k)
            shown = np.zeros(n, bool)
            shown[chosen] = True
            return Selection(
                shown, shown.astype(float), 1.0, mean, chosen, -1, [(tuple(sorted(chosen.tolist())), 1.0)], self.name
            )
        sets = [tuple(sorted(self.best_set(d, k).tolist())) for d in draws]
        member = int(rng.integers(len(sets)))
        chosen_set = sets[member]
        counts = np.zeros(n)
        for s in sets:
            counts[list(s)] += 1
        shown = np.zeros(n, bool)
        shown[list(chosen_set)] = True
        slate = sum(1 for s in sets if s == chosen_set) / len(sets)
        order = np.array(sorted(chosen_set, key=lambda i: -mean[i]), dtype=np.int64)
        dist = Counter(sets)
        return Selection(shown, counts / len(sets), slate, mean, order, member,
                         [(st, c / len(sets)) for st, c in sorted(dist.items())], self.name)  # fmt: skip

    def slate_probability(
        self,
        query_embedding: np.ndarray,
        candidates: Sequence[CandidateCase],
        shown: np.ndarray,
        k: int,
        query: str = "",
    ) -> float:
        """Probability that this model's exploring policy shows exactly ``shown`` (for off-policy evaluation)."""
        _, draws = self.effects(query_embedding, candidates, query)
        target = tuple(sorted(np.flatnonzero(shown).tolist()))
        if draws.shape[0] == 0:
            return 0.0
        return sum(1 for d in draws if tuple(sorted(self.best_set(d, k).tolist())) == target) / draws.shape[0]

    # ----- persistence -------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything needed to rebuild the model (tensors + plain metadata)."""
        return {
            "config": asdict(self.config),
            "mean_vec": torch.from_numpy(self.mean_vec),
            "components": torch.from_numpy(self.components),
            "scale": torch.from_numpy(self.scale),
            "case_ids": sorted(self.case_index, key=self.case_index.__getitem__),
            "query_keys": sorted(self.query_index, key=self.query_index.__getitem__),
            "vocab": sorted(self.vocab, key=self.vocab.__getitem__),
            "static_names": list(_STATIC),
            "idf_words": list(self.idf),
            "idf_values": torch.tensor(list(self.idf.values()), dtype=torch.float64),
            "theta_mean": torch.from_numpy(self.theta_mean),
            "theta_draws": torch.from_numpy(self.theta_draws),
            "offset": self.offset,
            "n_rows": self.n_rows,
            "pair_keys": list(self.pair_counts),
            "pair_values": torch.tensor([list(v) for v in self.pair_counts.values()], dtype=torch.float32).reshape(
                -1, 2
            ),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CaseValueModel:
        """Inverse of `state`.

        A checkpoint written before the ``text_gap`` feature keeps its behaviour: the features it
        was fit with, the new one's weight held at zero. One written before ``idf_power`` keeps the
        classic tf-idf (power 1) its text-gap weight was fit on.
        """
        config = dict(state["config"])
        # Fit before ``idf_power`` existed: its text-gap weight was learned on classic tf-idf.
        config.setdefault("idf_power", 1.0)
        old = "static_names" not in state
        if old and not config.get("static_features"):
            config["static_features"] = _STATIC_BEFORE_TEXT
        model = cls(BanditConfig(**config))
        model.mean_vec = state["mean_vec"].numpy()
        model.components = state["components"].numpy()
        model.scale = state["scale"].numpy()
        model.case_index = {cid: i for i, cid in enumerate(state["case_ids"])}
        model.query_index = {q: i for i, q in enumerate(state["query_keys"])}
        model.vocab = {w: i for i, w in enumerate(state.get("vocab", []))}
        model._word_vectors = {}
        model.idf = dict(zip(state.get("idf_words", []), state.get("idf_values", torch.zeros(0)).tolist(), strict=True))
        model._text_vectors = {}
        model.theta_mean = state["theta_mean"].numpy()
        model.theta_draws = state["theta_draws"].numpy()
        if old:
            # The static block grew by the features added since (they come last in it): their
            # weights are zero, so the old model predicts exactly what it did.
            end = model._layout()["static"].start + len(_STATIC_BEFORE_TEXT)
            added = N_STATIC - len(_STATIC_BEFORE_TEXT)
            model.theta_mean = np.insert(model.theta_mean, [end] * added, 0.0)
            model.theta_draws = np.insert(model.theta_draws, [end] * added, 0.0, axis=1)
        model.offset = float(state["offset"])
        model.n_rows = int(state["n_rows"])
        values = state["pair_values"].tolist()
        model.pair_counts = {k: (float(v[0]), float(v[1])) for k, v in zip(state["pair_keys"], values, strict=True)}
        if model.theta_mean.size != model._layout()["all"].stop:
            raise ValueError("bandit state is inconsistent: parameter count does not match its layout")
        return model


@dataclass
class Selection:
    """A bandit choice.

    Attributes:
        shown: Per candidate, shown or not.
        propensity: Per candidate, the exact probability of being shown.
        slate_propensity: Exact probability of showing exactly this set.
        effects: Posterior-mean predicted effect per candidate.
        order: Shown candidates, best predicted first.
        member: The ensemble draw used (-1: posterior mean).
        slates: Every set the policy could have shown here, with its exact probability.
        arm: The policy that chose (``bandit`` or ``similarity``).
        arm_propensity: The probability that this arm was drawn.

    """

    shown: np.ndarray
    propensity: np.ndarray
    slate_propensity: float
    effects: np.ndarray
    order: np.ndarray
    member: int
    slates: list[tuple[tuple[int, ...], float]] = field(default_factory=list)
    arm: str = ""
    arm_propensity: float = 1.0


class SimilarityPolicy:
    """Similarity's choice as a policy object: the K most similar candidates, deterministically.

    It serves as the first incumbent of a gated learner, so a bandit replaces similarity only once
    off-policy evaluation says it selects better (and never serves worse than similarity before).
    """

    n_rows = 0
    name = "similarity"

    @staticmethod
    def _top(candidates: Sequence[CandidateCase], k: int) -> np.ndarray:
        return np.argsort([-c.similarity for c in candidates], kind="stable")[: max(0, k)]

    def with_history(self, query: str, candidates: Sequence[CandidateCase]) -> list[CandidateCase]:
        """Similarity keeps no history: the candidates as they are."""
        return list(candidates)

    def select(
        self,
        query_embedding: np.ndarray,
        candidates: Sequence[CandidateCase],
        k: int,
        rng: np.random.Generator,
        *,
        explore: bool = True,
        query: str = "",
    ) -> Selection:
        """The top K (propensity 1 each; the set has probability 1)."""
        chosen = self._top(candidates, k)
        shown = np.zeros(len(candidates), bool)
        shown[chosen] = True
        sims = np.array([c.similarity for c in candidates], np.float32)
        return Selection(
            shown, shown.astype(float), 1.0, sims, chosen, -1, [(tuple(sorted(chosen.tolist())), 1.0)], self.name
        )

    def slate_probability(
        self,
        query_embedding: np.ndarray,
        candidates: Sequence[CandidateCase],
        shown: np.ndarray,
        k: int,
        query: str = "",
    ) -> float:
        """1 when ``shown`` is the top K, else 0."""
        return float(set(np.flatnonzero(shown).tolist()) == set(self._top(candidates, k).tolist()))


def select_mixture(
    control: CaseValueModel | SimilarityPolicy,
    treatment: CaseValueModel | None,
    share: float,
    query_embedding: np.ndarray,
    candidates: Sequence[CandidateCase],
    k: int,
    rng: np.random.Generator,
    query: str = "",
) -> Selection:
    """The treatment arm's choice with probability ``share``, else the control arm's, with exact propensities.

    Both arms' whole set distributions are mixed, so the logged probability of the shown set (and of
    each candidate) is exact whichever arm chose it; the arm and the probability that it was drawn
    are logged too, for the A/B comparison of arms (`memory.policy.ope.compare_arms`).
    """
    if treatment is None or share <= 0:
        return control.select(query_embedding, candidates, k, rng, query=query)
    if share >= 1:
        return treatment.select(query_embedding, candidates, k, rng, query=query)
    use_treatment = rng.random() < share
    ctl = control.select(query_embedding, candidates, k, rng, query=query)
    trt = treatment.select(query_embedding, candidates, k, rng, query=query)
    sel = trt if use_treatment else ctl
    dist: dict[tuple[int, ...], float] = {}
    for slates, w in ((ctl.slates, 1.0 - share), (trt.slates, share)):
        for st, p in slates:
            dist[st] = dist.get(st, 0.0) + w * p
    chosen = tuple(sorted(np.flatnonzero(sel.shown).tolist()))
    sel.propensity = (1.0 - share) * ctl.propensity + share * trt.propensity
    sel.slate_propensity = dist[chosen]
    sel.slates = sorted(dist.items())
    sel.arm_propensity = share if use_treatment else 1.0 - share
    return sel


def add_pair_outcomes(counts: dict[str, tuple[float, float]], record: LoggedRetrieval) -> None:
    """Add one retrieval's outcome to the (question, case) counts of every case it showed."""
    for cand, shown in zip(record.candidates, record.shown, strict=True):
        if shown:
            key = f"{record.query_key}\x1f{cand.case_id}"
            s, f = counts.get(key, (0.0, 0.0))
            counts[key] = (s + record.reward, f + 1.0 - record.reward)


def pair_history(logs: Sequence[LoggedRetrieval]) -> dict[str, tuple[float, float]]:
    """Per (question, case): summed outcomes of the retrievals that showed the case for that question."""
    counts: dict[str, tuple[float, float]] = {}
    for r in logs:
        add_pair_outcomes(counts, r)
    return counts


def fill_pair_history(
    counts: dict[str, tuple[float, float]], question: str, candidates: Sequence[CandidateCase]
) -> list[CandidateCase]:
    """The candidates with the counts of this question's earlier outcomes with each of them."""
    key = query_key(question)
    out = []
    for c in candidates:
        s, f = counts.get(f"{key}\x1f{c.case_id}", (0.0, 0.0))
        out.append(replace(c, pair_successes=s, pair_failures=f))
    return out


_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


def words(text: str) -> set[str]:
    """The distinct lower-cased words of a text."""
    return set(_WORD.findall(text.lower()))


def _vocabulary(logs: Sequence[LoggedRetrieval], limit: int) -> dict[str, int]:
    """Words that appear in at least two distinct logged questions (queries and shown cases).

    A word seen once (an item code, a name) cannot be learned about; the most frequent ``limit``
    words keep a weight.
    """
    questions = {r.query_key for r in logs}
    questions.update(c.question.strip().lower() for r in logs for c, s in zip(r.candidates, r.shown, strict=True) if s)
    df: Counter[str] = Counter(w for q in questions if q for w in words(q))
    # Ties broken by the word itself: Counter order follows set iteration, i.e. string hashing,
    # which changes between processes.
    common = [w for w, n in sorted(df.items(), key=lambda item: (-item[1], item[0]))[:limit] if n >= 2]
    return {w: i for i, w in enumerate(sorted(common))}


def _idf(logs: Sequence[LoggedRetrieval]) -> dict[str, float]:
    """Inverse document frequency ``log(N/df)`` over the distinct logged questions (queries and candidates).

    Only words of at least two questions: a word seen once (an item code, a name) says nothing
    about which other questions ask the same thing.
    """
    questions = {r.query_key for r in logs}
    questions.update(c.question.strip().lower() for r in logs for c in r.candidates)
    questions.discard("")
    df: Counter[str] = Counter(w for q in questions for w in words(q))
    n = max(1, len(questions))
    return {w: math.log(n / d) for w, d in sorted(df.items()) if d >= 2}


def _sparse_dot(a: dict[str, float], b: dict[str, float]) -> float:
    if len(a) > len(b):
        a, b = b, a
    return sum(v * b.get(w, 0.0) for w, v in a.items())


def query_key(question: str) -> str:
    """Normalised question (case and whitespace folded), the key of per-question intercepts."""
    return re.sub(r"\s+", " ", question.strip().lower())
