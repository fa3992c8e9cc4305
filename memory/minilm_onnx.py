"""all-MiniLM-L6-v2 on ONNX Runtime: the packaged weights, no torch, no transformers.

Importing torch and transformers and building the model costs about 5 s on 2 cores, for a query
that then takes 15 ms. ONNX Runtime (already installed as a Chroma dependency) and the Rust
``tokenizers`` library load in a fraction of that and compute the same vectors (cosine above
0.99999 against the transformers path, checked by the tests).

No ONNX file ships with the model package, so the first use builds the BERT graph from the
packaged ``model.safetensors`` with ``onnx.helper`` (about a second, no torch) and caches it in
``$MEMENTO_CACHE_DIR`` (default ``$XDG_CACHE_HOME/memento`` or ``~/.cache/memento``). The file
name carries a fingerprint of the weights and of this builder, so a changed model or builder never
reuses a stale graph. Banks stay valid: the vectors and the embedder name are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

# Bump when the graph below changes: the cache file name includes it.
GRAPH_VERSION = 1
MAX_LENGTH = 256  # the transformers path truncates at 256 tokens too


def cache_dir() -> Path:
    """Folder holding built ONNX graphs."""
    from memory.config import MemoryConfig

    explicit = MemoryConfig.from_env().cache_dir
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "memento"


def _fingerprint(model_path: Path) -> str:
    weights = model_path / "model.safetensors"
    stat = weights.stat()
    config = (model_path / "config.json").read_bytes()
    key = f"{GRAPH_VERSION}|{stat.st_size}|{int(stat.st_mtime)}|".encode() + config
    return hashlib.sha256(key).hexdigest()[:16]


def build_graph(model_path: Path) -> bytes:
    """Serialise a BERT encoder plus mean pooling as an ONNX model, from safetensors weights.

    Inputs ``input_ids`` and ``attention_mask`` (int64, batch x tokens); output ``pooled``
    (float32, batch x hidden): the masked mean of the last hidden state, not yet normalised.
    Token type ids are all zero for single sentences, so that row is folded into the position
    table.
    """
    from onnx import TensorProto, helper, numpy_helper
    from safetensors.numpy import load_file

    cfg = json.loads((model_path / "config.json").read_text())
    hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    layers, eps = int(cfg["num_hidden_layers"]), float(cfg.get("layer_norm_eps", 1e-12))
    if cfg.get("model_type") != "bert" or cfg.get("hidden_act") != "gelu":
        raise ValueError(f"not a BERT encoder with exact GELU: {model_path}")
    head_dim = hidden // heads
    w = load_file(str(model_path / "model.safetensors"))
    inits: list[Any] = []
    nodes: list[Any] = []

    def init(name: str, array: np.ndarray) -> str:
        # copy(), not ascontiguousarray: that one turns 0-d scalars into 1-element vectors.
        inits.append(numpy_helper.from_array(array if array.flags.c_contiguous else array.copy(), name))
        return name

    def node(op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    f32 = np.float32
    init("word", w["embeddings.word_embeddings.weight"])
    init("pos", w["embeddings.position_embeddings.weight"] + w["embeddings.token_type_embeddings.weight"][0])
    init("emb_g", w["embeddings.LayerNorm.weight"])
    init("emb_b", w["embeddings.LayerNorm.bias"])
    init("zero_i", np.array(0, np.int64))
    init("one_i", np.array(1, np.int64))
    init("one_f", np.array(1.0, f32))
    init("neg", np.array(np.finfo(f32).min, f32))
    init("scale", np.array(1.0 / np.sqrt(head_dim), f32))
    init("half", np.array(0.5, f32))
    init("rsqrt2", np.array(1.0 / np.sqrt(2.0), f32))
    init("tiny", np.array(1e-9, f32))
    init("qkv_shape", np.array([0, 0, 3, heads, head_dim], np.int64))
    init("ctx_shape", np.array([0, 0, hidden], np.int64))
    init("ax1", np.array([1], np.int64))
    init("ax2", np.array([2], np.int64))
    init("ax12", np.array([1, 2], np.int64))

    # Embeddings: word + (position + token type 0), then LayerNorm.
    node("Shape", ["input_ids"], "ids_shape")
    node("Gather", ["ids_shape", "one_i"], "seq_len", axis=0)
    node("Range", ["zero_i", "seq_len", "one_i"], "positions")
    node("Gather", ["word", "input_ids"], "word_e", axis=0)
    node("Gather", ["pos", "positions"], "pos_e", axis=0)
    node("Add", ["word_e", "pos_e"], "emb")
    x = node("LayerNormalization", ["emb", "emb_g", "emb_b"], "x0", axis=-1, epsilon=eps)

    # Additive attention mask (B, 1, 1, T): 0 for tokens, the most negative float for padding.
    node("Cast", ["attention_mask"], "maskf", to=TensorProto.FLOAT)
    node("Sub", ["one_f", "maskf"], "inv_mask")
    node("Mul", ["inv_mask", "neg"], "mask_add")
    node("Unsqueeze", ["mask_add", "ax12"], "mask_bias")

    for i in range(layers):
        p = f"encoder.layer.{i}."
        names = ("query", "key", "value")
        wqkv = np.concatenate([w[f"{p}attention.self.{n}.weight"] for n in names], 0).T
        bqkv = np.concatenate([w[f"{p}attention.self.{n}.bias"] for n in names])
        qkv = node("MatMul", [x, init(f"l{i}_wqkv", wqkv)], f"l{i}_qkv_mm")
        qkv = node("Add", [qkv, init(f"l{i}_bqkv", bqkv)], f"l{i}_qkv")
        qkv = node("Reshape", [qkv, "qkv_shape"], f"l{i}_qkv_r")
        qkv = node("Transpose", [qkv], f"l{i}_qkv_t", perm=[2, 0, 3, 1, 4])  # 3, B, H, T, D
        q = node("Gather", [qkv, "zero_i"], f"l{i}_q", axis=0)
        k = node("Gather", [qkv, "one_i"], f"l{i}_k", axis=0)
        v = node("Gather", [qkv, init(f"l{i}_two", np.array(2, np.int64))], f"l{i}_v", axis=0)
        kt = node("Transpose", [k], f"l{i}_kt", perm=[0, 1, 3, 2])
        s = node("MatMul", [q, kt], f"l{i}_s")
        s = node("Mul", [s, "scale"], f"l{i}_ss")
        s = node("Add", [s, "mask_bias"], f"l{i}_sm")
        s = node("Softmax", [s], f"l{i}_p", axis=-1)
        c = node("MatMul", [s, v], f"l{i}_c")
        c = node("Transpose", [c], f"l{i}_ct", perm=[0, 2, 1, 3])
        c = node("Reshape", [c, "ctx_shape"], f"l{i}_cr")
        a = node("MatMul", [c, init(f"l{i}_wao", w[f"{p}attention.output.dense.weight"].T)], f"l{i}_ao")
        a = node("Add", [a, init(f"l{i}_bao", w[f"{p}attention.output.dense.bias"])], f"l{i}_aob")
        a = node("Add", [a, x], f"l{i}_res1")
        g1 = init(f"l{i}_ln1g", w[f"{p}attention.output.LayerNorm.weight"])
        b1 = init(f"l{i}_ln1b", w[f"{p}attention.output.LayerNorm.bias"])
        h = node("LayerNormalization", [a, g1, b1], f"l{i}_h", axis=-1, epsilon=eps)
        m = node("MatMul", [h, init(f"l{i}_wi", w[f"{p}intermediate.dense.weight"].T)], f"l{i}_i")
        m = node("Add", [m, init(f"l{i}_bi", w[f"{p}intermediate.dense.bias"])], f"l{i}_ib")
        # Exact GELU, as BERT's "gelu": 0.5 * x * (1 + erf(x / sqrt(2))).
        e = node("Mul", [m, "rsqrt2"], f"l{i}_gs")
        e = node("Erf", [e], f"l{i}_erf")
        e = node("Add", [e, "one_f"], f"l{i}_erf1")
        e = node("Mul", [m, e], f"l{i}_gx")
        m = node("Mul", [e, "half"], f"l{i}_gelu")
        o = node("MatMul", [m, init(f"l{i}_wo", w[f"{p}output.dense.weight"].T)], f"l{i}_o")
        o = node("Add", [o, init(f"l{i}_bo", w[f"{p}output.dense.bias"])], f"l{i}_ob")
        o = node("Add", [o, h], f"l{i}_res2")
        g2 = init(f"l{i}_ln2g", w[f"{p}output.LayerNorm.weight"])
        b2 = init(f"l{i}_ln2b", w[f"{p}output.LayerNorm.bias"])
        x = node("LayerNormalization", [o, g2, b2], f"l{i}_x", axis=-1, epsilon=eps)

    # Mean pooling over real tokens.
    node("Unsqueeze", ["maskf", "ax2"], "mask3")
    node("Mul", [x, "mask3"], "masked")
    node("ReduceSum", ["masked", "ax1"], "summed", keepdims=0)
    node("ReduceSum", ["mask3", "ax1"], "counts", keepdims=0)
    node("Max", ["counts", "tiny"], "counts_c")
    node("Div", ["summed", "counts_c"], "pooled")

    graph = helper.make_graph(
        nodes,
        "minilm_mean_pooled",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"]),
        ],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", hidden])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="memento")
    model.ir_version = 8  # readable by every onnxruntime since 1.10
    return model.SerializeToString()


def graph_file(model_path: Path) -> Path | bytes:
    """The cached ONNX file for this model, built on first use; bytes if the cache is unwritable."""
    folder = cache_dir()
    target = folder / f"minilm-{_fingerprint(model_path)}.onnx"
    if target.is_file():
        return target
    data = build_graph(model_path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Atomic publish: concurrent first uses each write a temp file; the last rename wins.
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".minilm-", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except OSError:
        return data
    return target


def load_tokenizer(model_path: Path):
    """The packaged fast tokenizer, padding and truncating as the transformers path does."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_path / "tokenizer.json"))
    # The packaged tokenizer pads every input to 128; transformers pads to the longest
    # input and truncates at 256, which is what the vectors were computed with.
    tok.no_padding()
    tok.enable_truncation(MAX_LENGTH)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


class OnnxMiniLM:
    """Tokenizer plus ONNX session computing mean-pooled MiniLM vectors (not normalised)."""

    def __init__(self, model_path: str | os.PathLike[str], batch_size: int = 64):
        """Load the tokenizer and the (cached or freshly built) graph.

        Raises:
            Exception: Anything that stops the fast path (no ``onnx`` to build the graph, an
                unreadable model); the caller falls back to transformers.

        """
        import onnxruntime as ort

        path = Path(model_path)
        self.batch_size = batch_size
        self.tokenizer = load_tokenizer(path)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        # Spinning worker threads steal the only other core from Chroma and the CLI on 2 cores.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        source = graph_file(path)
        self.session = ort.InferenceSession(
            str(source) if isinstance(source, Path) else source, opts, providers=["CPUExecutionProvider"]
        )

    def pooled(self, texts: list[str]) -> np.ndarray:
        """Mean-pooled hidden states, batch by batch."""
        out = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer.encode_batch(texts[start : start + self.batch_size])
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
            (vec,) = self.session.run(None, {"input_ids": ids, "attention_mask": mask})
            out.append(vec)
        return np.concatenate(out, axis=0) if out else np.zeros((0, 0), np.float32)
