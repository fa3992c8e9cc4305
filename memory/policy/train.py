"""Training: class-weighted BCE, early stopping on validation AUC, calibrated outputs.

Splits are by query (`PolicyData.split_by_query`). The class weight is undone in the model's
``logit_offset`` so its scores stay calibrated probabilities (the selector compares them with the
no-case baseline).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from memory.config import MemoryConfig
from memory.policy.checkpoint import VARIANTS, save_checkpoint
from memory.policy.data import PolicyData, PolicyDataError
from memory.policy.features import FEATURE_NAMES
from memory.policy.metrics import classification_report, finite_or_none
from memory.policy.model import CaseScorer, FinetuneScorer, load_backbone

CREDITS = ("set", "row")


@dataclass
class TrainConfig:
    """Hyper-parameters; every field is recorded in the checkpoint."""

    variant: str = "head"
    # "set": one retrieval's outcome is explained by the sum of its shown cases' contributions
    # (logit = g(query) + sum of h(query, case)), so a case is not credited with the others' effect;
    # "row": every shown case is labelled with the task's outcome on its own (the original
    # pair format's semantics; both coincide when every retrieval shows one case).
    credit: str = "set"
    # Rank like similarity unless the data says otherwise (see `CaseScorer`): with few judged
    # tasks the learned part stays small and the policy cannot wander off to cases the log never
    # showed.
    similarity_prior: bool = True
    epochs: int = 40
    batch_size: int = 256
    lr: float = 1e-3
    # Small and strongly regularised: judged tasks are few and the signal is mostly per query.
    weight_decay: float = 1.0
    patience: int = 8
    seed: int = 0
    hidden: int = 32
    dropout: float = 0.3
    class_weighting: bool = True
    val_fraction: float = 0.2
    encoder_lr: float = 2e-5
    max_length: int = 64
    # The head is a small MLP: one intra-op thread is faster than several fighting over a busy
    # CPU (measured 50x on 2 loaded cores). None leaves torch's setting (the fine-tuned encoder).
    threads: int | None = 1

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.credit not in CREDITS:
            raise ValueError(f"credit must be one of {CREDITS}, got {self.credit!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")


@dataclass
class TrainResult:
    """A trained model and how it got there."""

    model: CaseScorer | FinetuneScorer
    tokenizer: Any
    val_metrics: dict[str, float]
    train_metrics: dict[str, float]
    best_epoch: int
    pos_weight: float
    history: list[dict[str, float]] = field(default_factory=list)


def _tensors(data: PolicyData, rows: np.ndarray | None = None):
    rows = np.arange(len(data)) if rows is None else rows
    return (
        torch.from_numpy(data.case_emb[rows]),
        torch.from_numpy(data.features[rows]),
        torch.from_numpy(data.is_null[rows]),
    )


def _encode_queries(model: FinetuneScorer, tokenizer: Any, texts: list[str]) -> torch.Tensor:
    enc = tokenizer(texts, padding=True, truncation=True, max_length=model.max_length, return_tensors="pt")
    return model.encode(enc["input_ids"], enc["attention_mask"])


def _query_vectors(model, tokenizer, data: PolicyData, rows: np.ndarray) -> torch.Tensor:
    qi = data.q_index[rows]
    if isinstance(model, FinetuneScorer):
        uniq, inv = np.unique(qi, return_inverse=True)
        vecs = _encode_queries(model, tokenizer, [data.queries[i] for i in uniq])
        return vecs[torch.from_numpy(inv)]
    return torch.from_numpy(data.query_emb[qi])


@torch.no_grad()
def predict(
    model: CaseScorer | FinetuneScorer, data: PolicyData, tokenizer: Any = None, batch_size: int = 2048
) -> np.ndarray:
    """Calibrated success probabilities for every row of ``data``."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(data), batch_size):
        rows = np.arange(start, min(start + batch_size, len(data)))
        q = _query_vectors(model, tokenizer, data, rows)
        c, f, n = _tensors(data, rows)
        out.append(torch.sigmoid(model(q, c, f, n)).numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def evaluate(model: CaseScorer | FinetuneScorer, data: PolicyData, tokenizer: Any = None) -> dict[str, float]:
    """`classification_report` of the model on ``data``."""
    return classification_report(data.target > 0.5, predict(model, data, tokenizer))


def group_rows(data: PolicyData) -> tuple[np.ndarray, np.ndarray]:
    """Per row the index of its retrieval among ``data``'s retrievals, and each retrieval's first row."""
    _, first, inverse = np.unique(data.row_groups, return_index=True, return_inverse=True)
    return inverse.astype(np.int64), first


def _set_logits(
    model, q: torch.Tensor, c: torch.Tensor, f: torch.Tensor, n: torch.Tensor, inverse: torch.Tensor, n_sets: int
):
    g, h = model.parts(q, c, f, n)
    ones = torch.ones_like(g)
    counts = torch.zeros(n_sets, dtype=g.dtype).index_add_(0, inverse, ones)
    # Every row of a retrieval has the same query; averaging its g keeps dropout draws unbiased.
    g_set = torch.zeros(n_sets, dtype=g.dtype).index_add_(0, inverse, g) / counts
    return g_set + torch.zeros(n_sets, dtype=h.dtype).index_add_(0, inverse, h) + model_offset(model)


def model_offset(model: CaseScorer | FinetuneScorer) -> torch.Tensor:
    """The calibration offset of a scorer (see `CaseScorer.logit_offset`)."""
    return (model.head if isinstance(model, FinetuneScorer) else model).logit_offset


@torch.no_grad()
def predict_sets(
    model: CaseScorer | FinetuneScorer, data: PolicyData, tokenizer: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted success of every retrieval in ``data`` given all its shown cases, and its outcome."""
    if not len(data):
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    was_training = model.training
    model.eval()
    inverse, first = group_rows(data)
    rows = np.arange(len(data))
    q = _query_vectors(model, tokenizer, data, rows)
    c, f, n = _tensors(data, rows)
    logits = _set_logits(model, q, c, f, n, torch.from_numpy(inverse), first.size)
    model.train(was_training)
    return torch.sigmoid(logits).numpy(), data.target[first]


@torch.no_grad()
def case_contributions(model: CaseScorer | FinetuneScorer, data: PolicyData, tokenizer: Any = None) -> np.ndarray:
    """Every row's case contribution ``h`` (0 on "no case" rows): the part that ranks candidates."""
    if not len(data):
        return np.zeros(0, np.float64)
    was_training = model.training
    model.eval()
    rows = np.arange(len(data))
    _, h = model.parts(_query_vectors(model, tokenizer, data, rows), *_tensors(data, rows))
    model.train(was_training)
    return h.numpy().astype(np.float64)


def evaluate_sets(model: CaseScorer | FinetuneScorer, data: PolicyData, tokenizer: Any = None) -> dict[str, float]:
    """`classification_report` per retrieval (the unit whose outcome was observed)."""
    probs, y = predict_sets(model, data, tokenizer)
    return classification_report(y > 0.5, probs)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` intra-op threads, restoring the previous count afterwards."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_policy(
    train: PolicyData,
    val: PolicyData,
    config: TrainConfig | None = None,
    *,
    progress: bool = True,
) -> TrainResult:
    """Train a scorer, keeping the epoch with the best validation AUC.

    Args:
        train: Training rows.
        val: Validation rows (other queries). When it has one class only, early stopping falls
            back to validation loss; when empty, the last epoch is kept.
        config: Hyper-parameters.
        progress: Show a tqdm bar over epochs.

    """
    cfg = config or TrainConfig()
    if len(train) == 0:
        raise PolicyDataError("no training rows")
    threads = cfg.threads if cfg.variant == "head" else None
    with torch_threads(threads):
        return _train(train, val, cfg, progress)


def _units(data: PolicyData, credit: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What one observed outcome covers: per row its unit, per unit its first row, target and weight.

    ``row`` credit makes every row a unit weighted by its clipped inverse propensity; ``set``
    credit makes every retrieval a unit of weight 1: it models the outcome of the whole shown set
    (a reward model), and a per-row propensity says nothing about how likely that set was.
    """
    if credit == "row":
        rows = np.arange(len(data))
        return rows, rows, data.target, data.weight.astype(np.float64)
    inverse, first = group_rows(data)
    return inverse, first, data.target[first], np.ones(first.size)


def similarity_weight(data: PolicyData, inverse: np.ndarray, n_units: int, y: np.ndarray) -> float:
    """What similarity alone is worth: the slope of a logistic fit of outcomes on summed similarity.

    Starts the prior at the strength the data supports: clearly positive where more similar cases
    go with success (the residual then has to earn any departure from similarity order), near zero
    where similarity says nothing about outcomes (nothing to hold on to).
    """
    sims = np.where(data.is_null, 0.0, data.features[:, FEATURE_NAMES.index("similarity")]).astype(np.float64)
    x = torch.from_numpy(np.bincount(inverse, weights=sims, minlength=n_units)).float()
    x = (x - x.mean()) / x.std().clamp(min=1e-6)
    per_unit_sd = float(np.bincount(inverse, weights=sims, minlength=n_units).std()) or 1.0
    t = torch.from_numpy(np.asarray(y, dtype=np.float32))
    w = torch.zeros(2, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=50)

    def loss() -> torch.Tensor:
        opt.zero_grad()
        out = F.binary_cross_entropy_with_logits(w[0] + w[1] * x, t) + 1e-3 * w[1] ** 2
        out.backward()
        return out

    opt.step(loss)
    return float(w[1].detach()) / per_unit_sd


def _train(train: PolicyData, val: PolicyData, cfg: TrainConfig, progress: bool) -> TrainResult:
    inverse, first, y, w = _units(train, cfg.credit)
    pos, neg = float((w * y).sum()), float((w * (1 - y)).sum())
    if pos == 0 or neg == 0:
        raise PolicyDataError(
            f"the training rows hold only {'failures' if pos == 0 else 'successes'}; the policy needs both "
            "successful and failed tasks to learn which cases help"
        )
    pos_weight = neg / pos if cfg.class_weighting else 1.0
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    head = CaseScorer(dim=train.dim, hidden=cfg.hidden, dropout=cfg.dropout, similarity_prior=cfg.similarity_prior)
    head.logit_offset.fill_(-math.log(pos_weight))
    if cfg.similarity_prior:
        head.set_prior_weight(similarity_weight(train, inverse, first.size, y))
    tokenizer = None
    if cfg.variant == "finetune":
        tokenizer, encoder = load_backbone()
        finetune = FinetuneScorer(encoder, head, max_length=cfg.max_length)
        model: CaseScorer | FinetuneScorer = finetune
        params = [
            {"params": finetune.encoder.parameters(), "lr": cfg.encoder_lr},
            {"params": [p for n, p in finetune.head.named_parameters() if n != "prior_raw"], "lr": cfg.lr},
        ]
    else:
        model = head
        params = [{"params": [p for n, p in model.named_parameters() if n != "prior_raw"], "lr": cfg.lr}]
    if cfg.similarity_prior:
        # The prior's weight is not decayed: shrinking it would pull towards random ranking,
        # whereas decaying the residual pulls towards similarity ranking.
        params.append({"params": [head.prior_raw], "lr": cfg.lr * 10, "weight_decay": 0.0})
    opt = torch.optim.AdamW(params, weight_decay=cfg.weight_decay)
    target = torch.from_numpy(np.asarray(y, dtype=np.float32))
    unit_w = torch.from_numpy(np.asarray(w, dtype=np.float32)) * torch.where(target > 0.5, pos_weight, 1.0).float()
    unit_w = unit_w / unit_w.mean()
    # Rows of each unit, so a batch of units gathers all of their rows.
    by_unit = np.argsort(inverse, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(inverse, minlength=first.size))])

    best_score, best_state, best_epoch, stale = -math.inf, None, 0, 0
    history: list[dict[str, float]] = []
    bar = tqdm(range(1, cfg.epochs + 1), desc=f"policy[{cfg.variant}]", unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        order = rng.permutation(first.size)
        total = 0.0
        for start in range(0, len(order), cfg.batch_size):
            units = order[start : start + cfg.batch_size]
            rows = np.concatenate([by_unit[bounds[u] : bounds[u + 1]] for u in units])
            local = torch.from_numpy(np.repeat(np.arange(units.size), bounds[units + 1] - bounds[units]))
            q = _query_vectors(model, tokenizer, train, rows)
            c, f, n = _tensors(train, rows)
            idx = torch.from_numpy(units)
            # Train on the weighted odds; the model's logit_offset maps them back to calibrated.
            logits = _set_logits(model, q, c, f, n, local, units.size) + math.log(pos_weight)
            loss = F.binary_cross_entropy_with_logits(logits, target[idx], weight=unit_w[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * units.size
        entry = {"epoch": epoch, "train_loss": total / first.size}
        if len(val):
            probs, vy = _val_predictions(model, val, tokenizer, cfg.credit)
            rep = classification_report(vy > 0.5, probs)
            vl = float(
                np.mean(-(vy * np.log(np.clip(probs, 1e-7, 1)) + (1 - vy) * np.log(np.clip(1 - probs, 1e-7, 1))))
            )
            entry.update({"val_auc": rep["auc"], "val_loss": vl})
            score = rep["auc"] if math.isfinite(rep["auc"]) else -vl
        else:
            score = float(epoch)
        history.append(entry)
        bar.set_postfix({k: round(v, 4) for k, v in entry.items() if k != "epoch"})
        if score > best_score:
            best_score, best_epoch, stale = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    report = evaluate_sets if cfg.credit == "set" else evaluate
    return TrainResult(
        model=model,
        tokenizer=tokenizer,
        val_metrics=report(model, val, tokenizer) if len(val) else {},
        train_metrics=report(model, train, tokenizer),
        best_epoch=best_epoch,
        pos_weight=pos_weight,
        history=history,
    )


def _val_predictions(model, val: PolicyData, tokenizer: Any, credit: str) -> tuple[np.ndarray, np.ndarray]:
    if credit == "set":
        return predict_sets(model, val, tokenizer)
    return predict(model, val, tokenizer), val.target


def _plain_metrics(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: finite_or_none(v) if isinstance(v, float) else v for k, v in metrics.items()}


def support_of(data: PolicyData, quantile: float = 0.95) -> dict[str, float | None]:
    """Where the training rows have outcomes: how far below a query's best candidate cases were shown.

    The selector does not let the scorer promote candidates further down than this (they keep
    their similarity order): it never saw what such cases do. A high quantile rather than the
    maximum, because the first tasks of a young bank show whatever few cases exist, however far.
    """
    gaps = data.features[~data.is_null, FEATURE_NAMES.index("similarity_gap")]
    return {"max_similarity_gap": float(np.quantile(gaps, quantile)) if gaps.size else None, "quantile": quantile}


def checkpoint_metadata(
    data: PolicyData, train: PolicyData, val: PolicyData, result: TrainResult, config: TrainConfig, **extra: Any
) -> dict[str, Any]:
    """JSON-plain description of a training run (stored in the checkpoint)."""
    meta = {
        "backbone": "all-MiniLM-L6-v2",
        "embedder": MemoryConfig.from_env().embedder,
        "features": list(FEATURE_NAMES),
        "data_hash": data.data_hash(),
        "data_sources": list(data.sources),
        "n_rows": len(data),
        "n_queries": data.n_queries,
        "n_train_queries": train.n_queries,
        "n_val_queries": val.n_queries,
        "null_examples": int(data.is_null.sum()),
        "support": support_of(data),
        "positive_rate": float(data.target.mean()),
        "metrics": {"val": _plain_metrics(result.val_metrics), "train": _plain_metrics(result.train_metrics)},
        "best_epoch": result.best_epoch,
        "pos_weight": result.pos_weight,
        "train_config": asdict(config),
    }
    meta.update(extra)
    return meta


def fit(
    data: PolicyData, config: TrainConfig | None = None, *, progress: bool = True
) -> tuple[TrainResult, PolicyData, PolicyData]:
    """Split ``data`` by query (seeded) and train; returns the result and the two parts."""
    cfg = config or TrainConfig()
    train, val = data.split_by_query((cfg.val_fraction,), seed=cfg.seed)
    if len(train) == 0 or len(val) == 0:
        raise PolicyDataError(
            f"{data.n_queries} distinct queries are too few to hold some out for validation; "
            "collect more judged tasks first"
        )
    return train_policy(train, val, cfg, progress=progress), train, val


def fit_and_save(
    data: PolicyData,
    out: str | os.PathLike[str],
    config: TrainConfig | None = None,
    *,
    progress: bool = True,
    **extra: Any,
) -> tuple[str, TrainResult]:
    """Train on ``data`` and write the checkpoint to ``out``; returns (version, result)."""
    cfg = config or TrainConfig()
    result, train, val = fit(data, cfg, progress=progress)
    version = save_checkpoint(result.model, out, metadata=checkpoint_metadata(data, train, val, result, cfg, **extra))
    return version, result
