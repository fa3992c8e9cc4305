"""The optional fine-tuned variant: same interface, query encoder trained too (kept tiny)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memory.bank import ScoredCase
from memory.cases import Case
from memory.policy.data import PolicyData
from memory.policy.features import N_FEATURES
from memory.policy.model import FinetuneScorer, load_backbone
from memory.policy.selection import Selector
from memory.policy.train import TrainConfig, fit_and_save, predict


def tiny_pairs() -> PolicyData:
    rng = np.random.default_rng(0)
    n_q, per = 6, 2
    c = rng.normal(size=(n_q * per, 384)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    return PolicyData(
        queries=[f"what is item number {i}?" for i in range(n_q)],
        query_emb=np.zeros((n_q, 384), np.float32),  # unused: the variant encodes the text itself
        q_index=np.repeat(np.arange(n_q), per),
        case_emb=c,
        features=rng.random((n_q * per, N_FEATURES)).astype(np.float32),
        is_null=np.zeros(n_q * per, bool),
        target=np.tile([1.0, 0.0], n_q).astype(np.float32),
        weight=np.ones(n_q * per, np.float32),
        case_ids=[f"c{i}" for i in range(n_q * per)],
    )


def test_finetune_variant_trains_saves_and_selects(tmp_path):
    data = tiny_pairs()
    path = tmp_path / "ft.pt"
    cfg = TrainConfig(variant="finetune", epochs=1, batch_size=6, val_fraction=0.34, max_length=16)
    pretrained = next(load_backbone()[1].parameters()).detach().clone()
    version, result = fit_and_save(data, path, cfg, progress=False)
    assert isinstance(result.model, FinetuneScorer)
    # The encoder itself moved (it is being fine-tuned, not frozen).
    assert not torch.equal(pretrained, next(result.model.encoder.parameters()).detach())

    selector = Selector.from_path(path)
    assert selector.variant == "finetune" and selector.needs_query_text and selector.version == version
    np.testing.assert_allclose(
        predict(selector.model, data, selector._loaded.tokenizer),
        predict(result.model, data, result.tokenizer),
        rtol=1e-4,
        atol=1e-5,
    )
    hits = [
        ScoredCase(Case(question=f"case {i}", label="positive", reward=1.0), 0.5, data.case_emb[i]) for i in range(4)
    ]
    choices = selector.select(
        np.zeros(384, np.float32),
        hits,
        2,
        np.random.default_rng(0),
        exploration="greedy",
        query_text="what is item number 1?",
    )
    assert len(choices) == 4 and sum(c.shown for c in choices) == 2
    with pytest.raises(ValueError, match="query_text"):
        selector.select(np.zeros(384, np.float32), hits, 2, np.random.default_rng(0))
