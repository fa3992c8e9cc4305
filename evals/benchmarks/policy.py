"""Benchmark: the learned case-selection policy against similarity and the original Memento scorer.

    python -m evals.benchmarks.policy --data ../shared/data/memento/training_data.jsonl

On the original project's ``training_data.jsonl`` (query, case, case_label, plan, truth_label), with
one FIXED seeded split by query (60/20/20: a row-level split leaks, each query has 8 rows):

* **similarity**: cosine similarity of the (MiniLM) query and case embeddings.
* **policy**: our head (`memory.policy`) on cached embeddings + features, early-stopped on val AUC.
* **query-only**: L2 logistic regression on the query embedding alone. The label is constant within
  a query (was that query answered correctly with those cases?), so this says how much of the
  signal is query difficulty rather than case choice.
* **original**: a re-implementation of Memento's scorer on the same MiniLM backbone: one shared
  encoder, first-token (CLS) vectors of case text and query concatenated, MLP 2h -> 512 -> 2,
  class-weighted cross-entropy, encoder fine-tuned, checkpoint selected by validation AUC. On CPU it
  is cut down (defaults: 1 epoch over 960 pairs drawn from all training queries, max_length 64,
  two validation checks; ``--orig-epochs``, ``--orig-train-pairs 0`` for all); the values used are in
  the JSON. With a GPU, raise them.

All are reported on the held-out test queries (AUC, accuracy, F1, Brier, ECE). The cheap methods are
also repeated over ``--repeats`` other splits (mean and spread), since 140 test queries give AUC a
standard error of about 0.05. Scoring cost per query for 32 candidates is measured side by side in
this process: the policy (1 query encoding + MLP over 32 cached case vectors) vs the original
(32 (query, case) pairs through the transformer), as medians and their ratio.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

for _key, _value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "ORT_DISABLE_TELEMETRY": "1"}.items():
    os.environ.setdefault(_key, _value)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from torch import nn  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from memory.bank import ScoredCase  # noqa: E402
from memory.cases import Case  # noqa: E402
from memory.embeddings import MiniLMEmbedder, load_embedder  # noqa: E402
from memory.policy.data import PolicyData, from_training_rows, read_training_rows  # noqa: E402
from memory.policy.metrics import classification_report, finite_or_none, roc_auc  # noqa: E402
from memory.policy.model import load_backbone  # noqa: E402
from memory.policy.selection import Selector  # noqa: E402
from memory.policy.train import TrainConfig, predict, torch_threads, train_policy  # noqa: E402

console = Console()
FRACTIONS = (0.2, 0.2)  # val, test; train gets the remaining 60%


def threshold_on_val(val_y: np.ndarray, val_s: np.ndarray) -> float:
    """The score threshold with the best validation accuracy (for scores that are not probabilities)."""
    cands = np.unique(val_s)
    accs = [((val_s >= t) == val_y).mean() for t in cands]
    return float(cands[int(np.argmax(accs))])


def report_with_threshold(y: np.ndarray, s: np.ndarray, t: float) -> dict[str, float]:
    rep = classification_report(y, (s >= t).astype(float))
    rep["auc"] = roc_auc(y, s)
    rep["brier"] = rep["ece"] = float("nan")  # not probabilities
    return rep


# -- query-only baseline -------------------------------------------------------------------------


def query_only(train: PolicyData, val: PolicyData, test: PolicyData) -> dict[str, float]:
    """Class-weighted L2 logistic regression on query embeddings; L2 strength picked on val AUC."""

    def rows(d: PolicyData):
        return torch.from_numpy(d.query_emb[d.q_index]), torch.from_numpy(d.target)

    x, y = rows(train)
    pw = float((1 - y).sum() / y.sum())
    best: tuple[float, Any] = (-math.inf, None)
    for l2 in (1e-3, 1e-2, 3e-2, 1e-1):
        torch.manual_seed(0)
        lin = nn.Linear(x.shape[1], 1)
        opt = torch.optim.LBFGS(lin.parameters(), max_iter=200)

        def closure(lin=lin, opt=opt, l2=l2):
            opt.zero_grad()
            loss = (
                nn.functional.binary_cross_entropy_with_logits(lin(x).squeeze(-1), y, pos_weight=torch.tensor(pw))
                + l2 * lin.weight.pow(2).sum()
            )
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            vauc = roc_auc(val.target, lin(rows(val)[0]).squeeze(-1).numpy())
        if vauc > best[0]:
            best = (vauc, lin)
    lin = best[1]
    with torch.no_grad():
        # Undo the class weight so the probabilities are calibrated, as in the policy.
        p = torch.sigmoid(lin(rows(test)[0]).squeeze(-1) - math.log(pw)).numpy()
    return classification_report(test.target, p)


# -- the original scorer, re-implemented on MiniLM -----------------------------------------------


class OriginalScorer(nn.Module):
    """Shared encoder; CLS(case) ++ CLS(query) -> 512 -> 2."""

    def __init__(self, encoder: Any):
        super().__init__()
        self.encoder = encoder
        h = int(encoder.config.hidden_size)
        self.mlp = nn.Sequential(nn.Linear(2 * h, 512), nn.ReLU(), nn.Dropout(0.1), nn.Linear(512, 2))

    def cls(self, enc) -> torch.Tensor:
        """First-token vectors of a tokenized batch."""
        return self.encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state[:, 0]

    def forward(self, case_enc, query_enc) -> torch.Tensor:
        """Two-class logits per (case, query) pair."""
        return self.mlp(torch.cat([self.cls(case_enc), self.cls(query_enc)], dim=-1))


def _rows(data: PolicyData, case_text: list[str]) -> list[tuple[str, str, float]]:
    return [(case_text[i], data.queries[data.q_index[i]], float(data.target[i])) for i in range(len(data))]


@torch.no_grad()
def original_probs(model: OriginalScorer, tok, rows, max_length: int, batch: int = 64) -> np.ndarray:
    """P(success) per row. Inference is deterministic, so each distinct text is encoded once."""
    model.eval()
    texts = list(dict.fromkeys([r[0] for r in rows] + [r[1] for r in rows]))
    vec = {}
    for s in range(0, len(texts), batch):
        chunk = texts[s : s + batch]
        enc = tok(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        for t, v in zip(chunk, model.cls(enc), strict=True):
            vec[t] = v
    x = torch.stack([torch.cat([vec[c], vec[q]]) for c, q, _ in rows])
    return torch.softmax(model.mlp(x), dim=-1)[:, 1].numpy()


def train_original(train_rows, val_rows, *, epochs: int, max_length: int, batch: int, evals_per_epoch: int, seed: int):
    torch.manual_seed(seed)
    tok, encoder = load_backbone()
    model = OriginalScorer(encoder)
    y = torch.tensor([r[2] for r in train_rows])
    # Class weights inversely proportional to frequency (weighted cross-entropy).
    counts = torch.stack([(y == 0).sum(), (y == 1).sum()]).float()
    weight = counts.sum() / (2 * counts)
    opt = torch.optim.AdamW(
        [{"params": model.encoder.parameters(), "lr": 2e-5}, {"params": model.mlp.parameters(), "lr": 1e-3}],
        weight_decay=0.01,
    )
    rng = np.random.default_rng(seed)
    steps = math.ceil(len(train_rows) / batch)
    eval_at = {round(steps * (i + 1) / evals_per_epoch) for i in range(evals_per_epoch)}
    best: tuple[float, Any, Any] = (-math.inf, None, None)
    history = []
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(train_rows))
        bar = tqdm(range(steps), desc=f"original epoch {epoch}", leave=False)
        for step in bar:
            model.train()
            idx = order[step * batch : (step + 1) * batch]
            cases = tok(
                [train_rows[i][0] for i in idx],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            queries = tok(
                [train_rows[i][1] for i in idx],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            loss = nn.functional.cross_entropy(model(cases, queries), y[idx].long(), weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            bar.set_postfix(loss=round(float(loss.detach()), 4))
            if step + 1 in eval_at:
                vauc = roc_auc(np.array([r[2] for r in val_rows]), original_probs(model, tok, val_rows, max_length))
                history.append({"epoch": epoch, "step": step + 1, "val_auc": vauc})
                if vauc > best[0]:
                    best = (vauc, {k: v.detach().clone() for k, v in model.state_dict().items()}, (epoch, step + 1))
    model.load_state_dict(best[1])
    model.eval()
    return model, tok, {"val_auc": best[0], "selected_at": best[2], "history": history}


# -- cost per query ------------------------------------------------------------------------------


def time_costs(
    selector: Selector,
    orig: OriginalScorer,
    tok,
    test: PolicyData,
    case_text,
    *,
    n_queries: int,
    n_cand: int,
    max_length: int,
):
    """Median seconds per query: policy (encode query + score cached candidates) vs original."""
    embedder = MiniLMEmbedder()  # what load_embedder("minilm") builds, with its uncached path
    rng = np.random.default_rng(0)
    queries = rng.choice(np.unique(test.q_index), size=min(n_queries, test.n_queries), replace=False)
    ours, theirs, head = [], [], []
    for qi in queries:
        rows = rng.choice(len(test), size=n_cand, replace=False)
        hits = [
            ScoredCase(
                Case(question=case_text[r], label="positive", reward=1.0), float(test.features[r, 0]), test.case_emb[r]
            )
            for r in rows
        ]
        qtext = test.queries[qi]
        cases = [case_text[r] for r in rows]
        t0 = time.perf_counter()
        with torch.inference_mode():
            qv = embedder.embed_uncached([qtext])[0]
            tm = time.perf_counter()
            selector.score(qv, hits)
        t1 = time.perf_counter()
        head.append(t1 - tm)
        with torch.inference_mode():
            c_enc = tok(cases, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            q_enc = tok([qtext] * n_cand, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            torch.softmax(orig(c_enc, q_enc), dim=-1)
        t2 = time.perf_counter()
        ours.append(t1 - t0)
        theirs.append(t2 - t1)
    ours_ms, theirs_ms = statistics.median(ours) * 1e3, statistics.median(theirs) * 1e3
    return {
        "policy_ms": ours_ms, "original_ms": theirs_ms, "ratio": theirs_ms / ours_ms,
        # The query vector is the one the bank search computes anyway: this is the policy's extra.
        "policy_head_only_ms": statistics.median(head) * 1e3,
        "queries": len(queries), "candidates": n_cand,
    }  # fmt: skip


# -- main ----------------------------------------------------------------------------------------


def fmt(v) -> str:
    return (
        "—"
        if v is None or (isinstance(v, float) and not math.isfinite(v))
        else (f"{v:.3f}" if isinstance(v, float) else str(v))
    )


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data/memento/training_data.jsonl")
    ap.add_argument("--out", default="results/benchmarks/policy.json")
    ap.add_argument("--seed", type=int, default=0, help="Seed of the fixed split and of training.")
    ap.add_argument("--repeats", type=int, default=3, help="Extra splits for the cheap methods (0 = none).")
    ap.add_argument("--orig-epochs", type=int, default=1)
    ap.add_argument(
        "--orig-train-pairs", type=int, default=960,
        help="Training pairs for the original scorer, sampled from all training queries (0 = all).",
    )  # fmt: skip
    ap.add_argument("--orig-max-length", type=int, default=64)
    ap.add_argument("--orig-batch", type=int, default=16)
    ap.add_argument("--orig-evals-per-epoch", type=int, default=2)
    ap.add_argument("--skip-original", action="store_true")
    ap.add_argument("--timing-queries", type=int, default=20)
    args = ap.parse_args(argv)

    started = time.perf_counter()
    rows = read_training_rows(args.data)
    with console.status("embedding queries and cases with MiniLM…"):
        data = from_training_rows(rows, load_embedder("minilm"))
    case_text = [str(r["case"]) for r in rows]
    train, val, test = data.split_by_query(FRACTIONS, seed=args.seed)
    console.print(
        f"{len(data)} rows, {data.n_queries} queries -> train {train.n_queries} / val {val.n_queries} / test {test.n_queries} "
        f"queries (seed {args.seed}); test positive rate {test.target.mean():.3f}"
    )
    # Row indices into `data` of each part, to map case texts for the original scorer.
    part_rows = {}
    for name, qs in (("train", train), ("val", val), ("test", test)):
        part_rows[name] = np.flatnonzero(np.isin(data.q_index, np.unique(qs.q_index)))

    results: dict[str, dict] = {}
    y = test.target
    thr = threshold_on_val(val.target, val.features[:, 0])
    results["similarity"] = report_with_threshold(y, test.features[:, 0], thr)

    cfg = TrainConfig(seed=args.seed)
    t0 = time.perf_counter()
    res = train_policy(train, val, cfg, progress=True)
    policy_train_s = time.perf_counter() - t0
    results["policy"] = classification_report(y, predict(res.model, test))
    results["query-only"] = query_only(train, val, test)

    orig_info = None
    orig_model = orig_tok = None
    if not args.skip_original:
        rng = np.random.default_rng(args.seed)
        tr_idx = part_rows["train"]
        if args.orig_train_pairs and args.orig_train_pairs < tr_idx.size:
            # Pairs from all training queries: the label is per query, so query variety matters most.
            tr_idx = np.sort(rng.choice(tr_idx, size=args.orig_train_pairs, replace=False))
        sub = lambda idx: [(case_text[i], data.queries[data.q_index[i]], float(data.target[i])) for i in idx]  # noqa: E731
        t0 = time.perf_counter()
        orig_model, orig_tok, orig_info = train_original(
            sub(tr_idx), sub(part_rows["val"]), epochs=args.orig_epochs, max_length=args.orig_max_length,
            batch=args.orig_batch, evals_per_epoch=args.orig_evals_per_epoch, seed=args.seed,
        )  # fmt: skip
        orig_info["train_s"] = time.perf_counter() - t0
        orig_info["train_queries"] = int(np.unique(data.q_index[tr_idx]).size)
        orig_info["train_pairs"] = len(tr_idx)
        test_rows = sub(part_rows["test"])
        p = original_probs(orig_model, orig_tok, test_rows, args.orig_max_length)
        results["original (MiniLM)"] = classification_report(np.array([r[2] for r in test_rows]), p)

    cost = None
    if orig_model is not None:
        with tempfile.TemporaryDirectory() as tmp:
            from memory.policy.checkpoint import save_checkpoint

            save_checkpoint(res.model, Path(tmp) / "p.pt", metadata={"benchmark": True, "null_examples": 0})
            selector = Selector.from_path(Path(tmp) / "p.pt")
        with torch_threads(None):
            cost = time_costs(
                selector, orig_model, orig_tok, test, case_text=[case_text[i] for i in part_rows["test"]],
                n_queries=args.timing_queries, n_cand=32, max_length=args.orig_max_length,
            )  # fmt: skip

    repeats: dict[str, Any] = {}
    if args.repeats:
        for name in ("similarity", "policy", "query-only"):
            repeats[name] = []
        for r in range(1, args.repeats + 1):
            tr, va, te = data.split_by_query(FRACTIONS, seed=args.seed + r)
            repeats["similarity"].append(roc_auc(te.target, te.features[:, 0]))
            rr = train_policy(tr, va, TrainConfig(seed=args.seed + r), progress=False)
            repeats["policy"].append(roc_auc(te.target, predict(rr.model, te)))
            repeats["query-only"].append(query_only(tr, va, te)["auc"])

    table = Table(
        title=f"Case scoring on {Path(args.data).name}: test split ({test.n_queries} queries, {len(test)} rows), seed {args.seed}"
    )
    table.add_column("scorer")
    for col in ("AUC", "accuracy", "F1", "Brier", "ECE"):
        table.add_column(col, justify="right")
    if repeats:
        table.add_column(f"AUC over {args.repeats} other splits", justify="right")
    for name, m in results.items():
        extra = []
        if repeats:
            vals = repeats.get(name)
            extra = [f"{np.mean(vals):.3f} ± {np.std(vals):.3f}" if vals else "—"]
        table.add_row(name, *(fmt(m[k]) for k in ("auc", "accuracy", "f1", "brier", "ece")), *extra)
    console.print(table)
    console.print(
        "similarity: accuracy/F1 at the validation-chosen threshold; Brier/ECE undefined (not a probability)."
    )
    if cost:
        ct = Table(title="Scoring cost per query, 32 candidates (median, same process)")
        for col in (
            "policy: 1 query encoding + MLP on cached vectors",
            "(MLP alone)",
            "original: 32 (query, case) pairs through MiniLM",
            "ratio",
        ):
            ct.add_column(col, justify="right")
        ct.add_row(
            f"{cost['policy_ms']:.1f} ms",
            f"{cost['policy_head_only_ms']:.2f} ms",
            f"{cost['original_ms']:.1f} ms",
            f"{cost['ratio']:.1f}x",
        )
        console.print(ct)

    out = {
        "data": str(args.data),
        "split": {"seed": args.seed, "fractions": {"val": FRACTIONS[0], "test": FRACTIONS[1]},
                  "queries": {"train": train.n_queries, "val": val.n_queries, "test": test.n_queries}},
        "metrics": {k: {m: finite_or_none(v) if isinstance(v, float) else v for m, v in r.items()} for k, r in results.items()},
        "repeats_auc": {k: [finite_or_none(v) for v in vs] for k, vs in repeats.items()},
        "policy": {"config": vars(cfg), "best_epoch": res.best_epoch, "train_s": policy_train_s},
        "original": None if orig_info is None else {
            "epochs": args.orig_epochs, "max_length": args.orig_max_length, "batch": args.orig_batch,
            "train_queries": orig_info["train_queries"], "train_pairs": orig_info["train_pairs"],
            "val_auc": finite_or_none(orig_info["val_auc"]), "selected_at": orig_info["selected_at"],
            "history": orig_info["history"], "train_s": orig_info["train_s"],
        },
        "cost_per_query": cost,
        "torch_threads": torch.get_num_threads(),
        "wall_s": time.perf_counter() - started,
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str))
    console.print(f"wrote {args.out} ({out['wall_s']:.0f}s)")
    return out


if __name__ == "__main__":
    main()
