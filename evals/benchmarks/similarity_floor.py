"""How similar is a related case, and how similar is an unrelated one? Picks `min_similarity`.

    python -m evals.benchmarks.similarity_floor ../shared/data/memento
        [--out results/benchmarks/similarity_floor.json]

Embeds (MiniLM, the bank's default encoder) the 1278 questions of Memento's case bank
(``memory.jsonl``) and the 3197 DeepResearcher questions (``deepresearcher.jsonl``), then for each
DeepResearcher question looks at its nearest case, as similarity retrieval would:

* related: the nearest case asks the same kind of question (same first four words, e.g. "What is
  the capital of …", "Who was the director of …"), a case whose plan transfers;
* unrelated, two ways: a DeepResearcher question against a random case (what an arbitrary case
  scores), and the nearest case of everyday requests outside the bank's domain (arithmetic,
  coding, cooking, writing: like "What is 3+3?"), which similarity retrieval would otherwise show;
* identical questions (the same question asked again) are counted apart: they score ~1.

The suggested floor is the smallest multiple of 0.05 above the 99th percentile of random pairs and
the 95th percentile of the off-domain nearest cases; the report says how many related nearest
cases it keeps. The data is read from the folder given, never copied.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np

# Everyday requests a user of `memento ask` makes that no factoid case helps with.
OFF_DOMAIN = [
    "What is 3+3?",
    "What is 17 times 23?",
    "Solve 2x + 5 = 11 for x.",
    "Write a haiku about autumn.",
    "Write a Python function that reverses a string.",
    "How do I sort a list of dictionaries by a key in Python?",
    "Fix this SQL query: SELECT * FORM users",
    "Translate 'good morning' into Spanish.",
    "Summarise this paragraph in one sentence.",
    "How long should I boil an egg?",
    "Give me a recipe for pancakes.",
    "What should I name my cat?",
    "Draft a polite email declining a meeting.",
    "Explain recursion to a child.",
    "What is the derivative of x squared?",
    "Convert 100 Fahrenheit to Celsius.",
    "Is 97 a prime number?",
    "Plan a three-day trip itinerary.",
    "How do I center a div in CSS?",
    "Suggest a name for my startup.",
    "What is 12% of 250?",
    "Tell me a joke.",
    "How can I improve my sleep?",
    "Write a limerick about a programmer.",
    "What time zone should I schedule a call in for London and New York?",
    "List three tips for a job interview.",
    "Why does my laptop fan make noise?",
    "Compute the square root of 144.",
    "How do I undo the last git commit?",
    "Recommend a book for a long flight.",
]


def _template(question: str, words: int = 4) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", question.lower())[:words])


def _norm(question: str) -> str:
    return re.sub(r"\s+", " ", question.strip().lower())


def _pct(values: np.ndarray, qs: tuple[int, ...]) -> dict[str, float]:
    return {f"p{q}": round(float(np.percentile(values, q)), 3) for q in qs} if len(values) else {}


def measure(data_dir: Path, seed: int = 0) -> dict:
    """Nearest-case similarities of related, unrelated and identical questions, and the floor."""
    from memory.embeddings import load_embedder

    cases = [
        json.loads(line)["case"]
        for line in (data_dir / "memory.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    questions = [
        json.loads(line)["question"]
        for line in (data_dir / "deepresearcher.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    embedder = load_embedder("minilm")
    case_vecs = np.asarray(embedder.embed(cases), dtype=np.float32)
    query_vecs = np.asarray(embedder.embed(questions), dtype=np.float32)
    probe_vecs = np.asarray(embedder.embed(OFF_DOMAIN), dtype=np.float32)

    sims = query_vecs @ case_vecs.T
    nearest = sims.argmax(axis=1)
    best = sims[np.arange(len(questions)), nearest]
    case_norm = [_norm(c) for c in cases]
    identical = np.array([_norm(q) == case_norm[j] for q, j in zip(questions, nearest, strict=True)])
    same_kind = np.array([_template(q) == _template(cases[j]) for q, j in zip(questions, nearest, strict=True)])
    related = best[same_kind & ~identical]
    other_nearest = best[~same_kind & ~identical]
    rng = np.random.default_rng(seed)
    random_pairs = sims[np.arange(len(questions)), rng.integers(0, len(cases), len(questions))]
    probe_best = (probe_vecs @ case_vecs.T).max(axis=1)

    bound = max(float(np.percentile(random_pairs, 99)), float(np.percentile(probe_best, 95)))
    floor = round((math.floor(bound / 0.05) + 1) * 0.05, 2)
    return {
        "encoder": embedder.name,
        "cases": len(cases),
        "questions": len(questions),
        "identical_nearest": int(identical.sum()),
        "identical_nearest_similarity_min": round(float(best[identical].min()), 3) if identical.any() else None,
        "related_nearest": {"n": len(related), **_pct(related, (5, 10, 25, 50))},
        "other_nearest": {"n": len(other_nearest), **_pct(other_nearest, (5, 25, 50, 75))},
        "random_pairs": {"n": len(random_pairs), **_pct(random_pairs, (50, 90, 95, 99))},
        "off_domain_nearest": {
            "n": len(OFF_DOMAIN),
            **_pct(probe_best, (50, 90, 95)),
            "max": round(float(probe_best.max()), 3),
        },
        "suggested_floor": floor,
        "related_kept": round(float((related >= floor).mean()), 3) if len(related) else None,
        "all_nearest_kept": round(float((best >= floor).mean()), 3),
        "off_domain_kept": round(float((probe_best >= floor).mean()), 3),
        "random_pairs_kept": round(float((random_pairs >= floor).mean()), 4),
    }


def main(argv: list[str] | None = None) -> None:
    """Run the measurement and print (and optionally write) the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, help="folder holding memory.jsonl and deepresearcher.jsonl")
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("memory.jsonl", "deepresearcher.jsonl"):
        if not (args.data_dir / name).is_file():
            parser.error(f"{args.data_dir / name} not found: pass the folder of Memento's reference data")
    report = measure(args.data_dir, args.seed)
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
