"""Settings of the memory library, read from ``MEMENTO_*`` environment variables in one place.

The graph passes its `graph.context.Context` values down explicitly; this config supplies the
defaults for callers that give none (the memory and policy CLIs, the memory MCP server, library
use), so every module below reads `MemoryConfig.from_env()` instead of ``os.environ`` itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_BANK_PATH = os.path.join(".memento", "cases")
DEFAULT_LOG_PATH = os.path.join(".memento", "experience.sqlite")
DEFAULT_EXPLORATION = "epsilon:0.1"
# 10, not 20: on the confounder grid (24 seeds) refitting every 10 outcomes closed 74% of the gap at the
# hardest point against 64% for every 20, with pass 1 +0.026 against -0.010 next to no memory
# (learning within the first pass is what it buys); a refit of 1,000 retrievals is ~0.3 s of CPU.
DEFAULT_RETRAIN_EVERY = 10


@dataclass(frozen=True, kw_only=True)
class MemoryConfig:
    """Memory settings; each field is read from ``MEMENTO_<FIELD>`` when set (see `from_env`)."""

    bank_path: str = field(default=DEFAULT_BANK_PATH, metadata={"description": "Folder of the embedded case bank."})
    chroma_url: str = field(default="", metadata={"description": "Chroma server URL; empty: the embedded bank."})
    namespace: str = field(default="default", metadata={"description": "Default case-bank namespace."})
    embedder: str = field(
        default="minilm",
        metadata={"description": "minilm, a model folder, openai:<model> or hash[:dim] (tests and benchmarks)."},
    )
    embedder_backend: str = field(
        default="auto", metadata={"description": "MiniLM backend: auto (ONNX, else transformers), onnx, transformers."}
    )
    embeddings_base_url: str = field(
        default="", metadata={"description": "Endpoint of openai:<model> embedders (default OPENAI_BASE_URL)."}
    )
    cache_dir: str = field(
        default="", metadata={"description": "Folder of built ONNX graphs (default $XDG_CACHE_HOME/memento)."}
    )
    experience_path: str = field(
        default=DEFAULT_LOG_PATH, metadata={"description": "Experience log (SQLite) of retrievals and outcomes."}
    )
    policy_exploration: str = field(
        default=DEFAULT_EXPLORATION, metadata={"description": "Exploration when a caller names none."}
    )
    policy_retrain_every: int = field(
        default=DEFAULT_RETRAIN_EVERY, metadata={"description": "Judged outcomes between bandit retrains (0: never)."}
    )
    policy_retrain_sync: bool = field(
        default=False, metadata={"description": "Retrain inside the outcome that makes it due (reproducible evals)."}
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MemoryConfig:
        """The settings in effect: ``MEMENTO_<FIELD>`` where set and not empty, defaults otherwise.

        Raises:
            ValueError: A numeric setting is not a whole number.

        """
        env = os.environ if environ is None else environ

        def text(name: str, default: str) -> str:
            return env.get(f"MEMENTO_{name.upper()}") or default

        every = text("policy_retrain_every", str(DEFAULT_RETRAIN_EVERY))
        try:
            retrain_every = int(every)
        except ValueError:
            raise ValueError(f"MEMENTO_POLICY_RETRAIN_EVERY must be a whole number, got {every!r}") from None
        return cls(
            bank_path=text("bank_path", DEFAULT_BANK_PATH),
            chroma_url=text("chroma_url", ""),
            namespace=text("namespace", "default"),
            embedder=env.get("MEMENTO_EMBEDDER", "minilm"),
            embedder_backend=text("embedder_backend", "auto").lower(),
            embeddings_base_url=text("embeddings_base_url", "") or env.get("OPENAI_BASE_URL", ""),
            cache_dir=text("cache_dir", ""),
            experience_path=text("experience_path", DEFAULT_LOG_PATH),
            policy_exploration=text("policy_exploration", DEFAULT_EXPLORATION),
            policy_retrain_every=retrain_every,
            policy_retrain_sync=text("policy_retrain_sync", "").strip().lower() in ("1", "true", "yes"),
        )
