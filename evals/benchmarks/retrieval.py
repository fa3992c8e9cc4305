"""Retrieval benchmark: the case bank against the original project's re-embed-everything method.

    python -m evals.benchmarks.retrieval [--sizes 1000,10000,100000]
        [--memory-jsonl ../shared/data/memento/memory.jsonl] [--out results/benchmarks/retrieval.json]

Measured side by side in one process with the same MiniLM encoder:

* ours: ``CaseBank.search(question)`` = one query-embedding pass + a Chroma HNSW lookup, against
  banks of each size (built incrementally in one embedded bank);
* one bare query-embedding pass (the floor any embedding retriever pays);
* the original method: embed the query AND every case for every query, then cosine top-k (at the
  smaller sizes only: it is slow; a few queries suffice);
* bulk insert throughput, and the import of the original 1278-case ``memory.jsonl`` (real MiniLM).

Every query is a distinct string, so the embedder's LRU cache never answers one. Bank vectors for
the synthetic cases are cheap: MiniLM encodes a few thousand unique synthetic questions once, and
each case is one of them plus Gaussian noise, renormalised (the JSON output says so).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
from rich.console import Console
from rich.table import Table

from evals.results import write_json_atomic

console = Console()

ATTRS = [
    "capital",
    "population",
    "founder",
    "currency",
    "highest point",
    "official language",
    "area",
    "head coach",
    "birthplace",
    "publisher",
    "director",
    "main export",
    "mayor",
    "oldest building",
]
TEMPLATES = [
    "What is the {a} of {e}?",
    "Who was the {a} of {e} in {y}?",
    "Which {a} did {e} have before {y}?",
    "How was the {a} of {e} chosen in {y}?",
]
SYLLABLES = ["ka", "lo", "vin", "dor", "ma", "rel", "sta", "bri", "gon", "ul", "te", "nash", "pi", "rok", "zen", "fa"]


def synthetic_questions(n: int, seed: int) -> list[str]:
    """Distinct synthetic questions (entity names from random syllables)."""
    rng = np.random.default_rng(seed)
    out: dict[str, None] = {}
    while len(out) < n:
        entity = "".join(rng.choice(SYLLABLES, rng.integers(2, 4))).capitalize()
        entity += " " + "".join(rng.choice(SYLLABLES, 2)).capitalize()
        q = str(rng.choice(TEMPLATES)).format(a=rng.choice(ATTRS), e=entity, y=int(rng.integers(1900, 2024)))
        out[q] = None
    return list(out)


def percentiles(xs: list[float]) -> dict[str, float]:
    arr = np.asarray(xs) * 1000.0
    return {"p50_ms": float(np.percentile(arr, 50)), "p95_ms": float(np.percentile(arr, 95)), "n": len(xs)}


def baseline_search(embedder, query: str, case_texts: list[str], k: int = 8) -> list[int]:
    """The original project's retrieval: re-embed the query and every case, cosine top-k."""
    q = embedder.embed_uncached([query])[0]
    cases = embedder.embed_uncached(case_texts)
    sims = cases @ q
    return list(np.argsort(-sims)[:k])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="Bank sizes (comma-separated).")
    parser.add_argument(
        "--baseline-sizes", default="1000,10000", help="Sizes at which to run the slow original method."
    )
    parser.add_argument("--queries", type=int, default=60, help="Queries per size for the bank.")
    parser.add_argument("--baseline-queries", type=int, default=3, help="Queries per size for the original method.")
    parser.add_argument("--unique", type=int, default=3000, help="Unique synthetic questions encoded with MiniLM.")
    parser.add_argument("--noise", type=float, default=0.03, help="Per-dimension noise added to make variants.")
    parser.add_argument("--k", type=int, default=8, help="Hits per query.")
    parser.add_argument("--memory-jsonl", default="../shared/data/memento/memory.jsonl", help="The original case bank.")
    parser.add_argument("--workdir", default=None, help="Where to build banks (default: a temp folder).")
    parser.add_argument("--out", default="results/benchmarks/retrieval.json", help="JSON results file.")
    args = parser.parse_args(argv)

    from memory.bank import CaseBank
    from memory.cases import Case
    from memory.embeddings import MiniLMEmbedder
    from memory.io import import_jsonl

    sizes = sorted(int(s) for s in args.sizes.split(",") if s)
    baseline_sizes = {int(s) for s in args.baseline_sizes.split(",") if s}
    work = Path(args.workdir or tempfile.mkdtemp(prefix="memento-bench-"))
    results: dict = {
        "vectors": (
            f"synthetic: MiniLM on {args.unique} unique synthetic questions, each case = one of them + "
            f"N(0, {args.noise}^2) noise per dimension, renormalised; queries: real MiniLM on distinct strings"
        ),
        "k": args.k,
        "cpu_threads": __import__("torch").get_num_threads(),
        "sizes": {},
    }

    embedder = MiniLMEmbedder()
    embedder.embed_uncached(["warm up the encoder"])
    console.print(f"[bold]encoding {args.unique} unique synthetic questions with MiniLM…")
    t = time.perf_counter()
    uniques = synthetic_questions(args.unique, seed=1)
    base_vecs = embedder.embed_uncached(uniques)
    results["unique_encode_s"] = time.perf_counter() - t
    query_pool = iter(synthetic_questions((args.queries * 2 + args.baseline_queries + 10) * len(sizes) + 100, seed=7))

    rng = np.random.default_rng(3)
    bank = CaseBank(work / "bank", embedder=embedder, namespace="bench")
    built = 0
    texts: list[str] = []
    insert_time = 0.0
    for size in sizes:
        console.print(f"[bold]building bank to {size} cases…")
        while built < size:
            n = min(5000, size - built)
            pick = rng.integers(0, len(uniques), n)
            vecs = base_vecs[pick] + rng.normal(0.0, args.noise, (n, base_vecs.shape[1])).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            batch_texts = [f"{uniques[p]} (case {built + i})" for i, p in enumerate(pick)]
            cases = [Case(question=q, namespace="bench", reward=float(i % 3 != 0)) for i, q in enumerate(batch_texts)]
            t = time.perf_counter()
            bank.upsert(cases, embeddings=vecs)
            insert_time += time.perf_counter() - t
            texts.extend(batch_texts)
            built += n
        assert bank.count() == size, (bank.count(), size)

        ours, embed_only = [], []
        for _ in range(5):  # the first queries after a build load the index and warm caches
            bank.search(next(query_pool), args.k)
        for _ in range(args.queries):
            q1, q2 = next(query_pool), next(query_pool)
            t = time.perf_counter()
            embedder.embed_uncached([q2])
            embed_only.append(time.perf_counter() - t)
            t = time.perf_counter()
            hits = bank.search(q1, args.k)
            ours.append(time.perf_counter() - t)
            assert len(hits) == args.k
        row: dict[str, Any] = {"ours": percentiles(ours), "query_embedding": percentiles(embed_only)}
        row["ours_vs_embedding_p50"] = row["ours"]["p50_ms"] / row["query_embedding"]["p50_ms"]
        if size in baseline_sizes:
            console.print(f"  original method at {size} ({args.baseline_queries} queries)…")
            base = []
            for _ in range(args.baseline_queries):
                q = next(query_pool)
                t = time.perf_counter()
                baseline_search(embedder, q, texts, args.k)
                base.append(time.perf_counter() - t)
            row["original_reembed"] = percentiles(base)
            row["speedup_p50"] = row["original_reembed"]["p50_ms"] / row["ours"]["p50_ms"]
        results["sizes"][str(size)] = row
        console.print(
            f"  ours p50 {row['ours']['p50_ms']:.1f} ms, embedding pass p50 {row['query_embedding']['p50_ms']:.1f} ms"
        )
    results["bulk_insert_precomputed_per_s"] = built / insert_time if insert_time else None

    memory_jsonl = Path(args.memory_jsonl)
    if memory_jsonl.is_file():
        console.print(f"[bold]importing {memory_jsonl} (real MiniLM)…")
        fresh = CaseBank(work / "import", embedder=MiniLMEmbedder())
        t = time.perf_counter()
        report = import_jsonl(fresh, memory_jsonl)
        dt = time.perf_counter() - t
        results["import_memory_jsonl"] = {
            "rows": report.rows,
            "cases": report.written,
            "errors": len(report.errors),
            "seconds": dt,
            "cases_per_s": report.written / dt,
        }
    else:
        console.print(f"[yellow]skipping the memory.jsonl import: no file at {memory_jsonl}")

    table = Table(title=f"Case retrieval latency (query embedding + search), top-{args.k}")
    for col in (
        "cases",
        "ours p50",
        "ours p95",
        "1 embedding pass p50",
        "ours / embedding",
        "original p50",
        "speed-up",
    ):
        table.add_column(col, justify="right")
    for size, row in results["sizes"].items():
        orig = row.get("original_reembed")
        table.add_row(
            f"{int(size):,}",
            f"{row['ours']['p50_ms']:.1f} ms",
            f"{row['ours']['p95_ms']:.1f} ms",
            f"{row['query_embedding']['p50_ms']:.1f} ms",
            f"{row['ours_vs_embedding_p50']:.2f}x",
            f"{orig['p50_ms']:.0f} ms" if orig else "-",
            f"{row['speedup_p50']:.0f}x" if orig else "-",
        )
    console.print(table)
    console.print(f"bulk insert (precomputed vectors): {results['bulk_insert_precomputed_per_s']:.0f} cases/s")
    if "import_memory_jsonl" in results:
        imp = results["import_memory_jsonl"]
        console.print(
            f"import of memory.jsonl: {imp['cases']} cases in {imp['seconds']:.1f} s ({imp['cases_per_s']:.0f}/s, with MiniLM)"
        )
    console.print(f"[dim]{results['vectors']}")
    write_json_atomic(args.out, results)
    console.print(f"results written to {args.out}")
    return results


if __name__ == "__main__":
    main()
