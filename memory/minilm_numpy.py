"""all-MiniLM-L6-v2 in plain numpy: the cheapest cold start for a single query.

A one-off query (``memento memory search``, the first retrieval of ``memento ask``) needs one
forward pass of a dozen tokens. numpy is already imported by Chroma, the packaged safetensors
weights load in tens of milliseconds and the Rust tokenizer in less, so this path is ready long
before an ONNX Runtime session (about 0.5 s to import and build) or torch (about 5 s). It computes
the same function as BERT in transformers (exact GELU, the same masking and mean pooling); batches
go to ONNX Runtime, which is faster per sentence.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from memory.blas import one_blas_thread
from memory.minilm_onnx import load_tokenizer

_LN_EPS = 1e-12


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    x = x - mean
    var = (x * x).mean(-1, keepdims=True)
    return x / np.sqrt(var + _LN_EPS) * gamma + beta


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz & Stegun 7.1.26: absolute error below 1.5e-7, float32 rounding level.
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t
    return np.sign(x) * (1.0 - poly * np.exp(-a * a))


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x * np.float32(0.7071067811865476)))


class NumpyMiniLM:
    """Tokenizer plus a numpy BERT forward pass returning mean-pooled vectors (not normalised)."""

    def __init__(self, model_path: str | os.PathLike[str]):
        """Load the tokenizer and the packaged weights (no graph to build, nothing cached)."""
        import json

        from safetensors.numpy import load_file

        path = Path(model_path)
        cfg = json.loads((path / "config.json").read_text())
        if cfg.get("model_type") != "bert" or cfg.get("hidden_act") != "gelu":
            raise ValueError(f"not a BERT encoder with exact GELU: {path}")
        self.heads = int(cfg["num_attention_heads"])
        self.hidden = int(cfg["hidden_size"])
        self.layers = int(cfg["num_hidden_layers"])
        self.tokenizer = load_tokenizer(path)
        self.w = load_file(str(path / "model.safetensors"))
        # Token type ids are all zero for single sentences: fold that row into the positions.
        self.pos = (
            self.w["embeddings.position_embeddings.weight"] + self.w["embeddings.token_type_embeddings.weight"][0]
        )

    def pooled(self, texts: list[str]) -> np.ndarray:
        """Mean-pooled last hidden states for a few texts (one forward pass)."""
        with one_blas_thread():
            return self._forward(texts)

    def _forward(self, texts: list[str]) -> np.ndarray:
        w, heads, hidden = self.w, self.heads, self.hidden
        head_dim = hidden // heads
        enc = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.float32)
        batch, tokens = ids.shape
        x = w["embeddings.word_embeddings.weight"][ids] + self.pos[:tokens]
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]
        scale = np.float32(1.0 / np.sqrt(head_dim))

        def split(t: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(t.reshape(batch, tokens, heads, head_dim).transpose(0, 2, 1, 3))

        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            q = split(x @ w[p + "attention.self.query.weight"].T + w[p + "attention.self.query.bias"])
            k = split(x @ w[p + "attention.self.key.weight"].T + w[p + "attention.self.key.bias"])
            v = split(x @ w[p + "attention.self.value.weight"].T + w[p + "attention.self.value.bias"])
            s = (q @ np.ascontiguousarray(k.transpose(0, 1, 3, 2))) * scale + bias
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            c = (s @ v).transpose(0, 2, 1, 3).reshape(batch, tokens, hidden)
            a = c @ w[p + "attention.output.dense.weight"].T + w[p + "attention.output.dense.bias"] + x
            h = _layer_norm(a, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"])
            m = _gelu(h @ w[p + "intermediate.dense.weight"].T + w[p + "intermediate.dense.bias"])
            o = m @ w[p + "output.dense.weight"].T + w[p + "output.dense.bias"] + h
            x = _layer_norm(o, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
        m3 = mask[:, :, None]
        return ((x * m3).sum(1) / np.clip(m3.sum(1), 1e-9, None)).astype(np.float32)
