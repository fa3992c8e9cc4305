"""An OpenAI-compatible embeddings endpoint (the scripted server on loopback) behind a real bank."""

from __future__ import annotations

import numpy as np

from memory.bank import CaseBank
from memory.cases import Case
from memory.embeddings import OpenAIEmbedder


def test_openai_embedder_against_the_scripted_server(llm_server, tmp_path):
    emb = OpenAIEmbedder("text-embedding-fake", base_url=llm_server.url, api_key="test")
    vectors = emb.embed(["alpha", "beta", "alpha"])
    assert vectors.shape == (3, emb.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors[0], vectors[2])
    bank = CaseBank(tmp_path / "b", embedder=emb)
    bank.upsert([Case(question="alpha"), Case(question="beta")])
    assert bank.search("alpha", 1)[0].case.question == "alpha"
    assert bank.stats()["embedder"] == "text-embedding-fake"
