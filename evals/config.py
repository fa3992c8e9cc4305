"""Eval settings: what one run compares (modes, passes, splits) and the graph Context of each part."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.datasets import Example

MODES: tuple[str, ...] = ("none", "similarity", "learned")
# Passed to Context verbatim when set; everything else stays at Context's (env-aware) defaults.
_CONTEXT_KEYS = (
    "planner_model",
    "executor_model",
    "judge_model",
    "base_url",
    "api_key_env",
    "mcp_config",
    "chroma_url",
    "max_cycles",
    "n_candidates",
    "exploration",
    "temperature",
    "leakage_threshold",
)


@dataclass
class EvalConfig:
    """Settings of one eval run (a folder of results)."""

    out_dir: Path
    modes: list[str] = field(default_factory=lambda: ["similarity"])
    iterations: int = 1
    k: int = 4
    concurrency: int = 1
    seed: int = 0
    test_fraction: float = 0.0
    namespace_prefix: str = "eval"
    bank_path: str | None = None
    prices: dict[str, float] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    dataset_name: str = "dataset"
    progress: bool = True
    langsmith_upload: bool | None = None
    # The graph gets no ground truth (it self-judges, as in everyday use); accuracy is still
    # scored against the references, by exact match.
    hide_ground_truth: bool = False

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ValueError(f"memory modes must be among {', '.join(MODES)}; got {self.modes}")
        self.modes = list(dict.fromkeys(self.modes))
        if self.iterations < 1:
            raise ValueError("iterations must be >= 1")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError("test_fraction must be in [0, 1)")
        if self.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        unknown = set(self.context) - set(_CONTEXT_KEYS)
        if unknown:
            raise ValueError(f"unknown context settings {sorted(unknown)}; allowed: {', '.join(_CONTEXT_KEYS)}")


def split_of(task_id: str, test_fraction: float, seed: int) -> str:
    """``test`` for a seeded, stable fraction of task ids, else ``train``."""
    if test_fraction <= 0:
        return "train"
    h = int(hashlib.sha256(f"{seed}|{task_id}".encode()).hexdigest()[:12], 16) / 16**12
    return "test" if h < test_fraction else "train"


def make_context(config: EvalConfig, mode: str, split: str):
    """The graph Context for one mode and split: its own namespace, log and policy file."""
    from graph.context import Context

    out = config.out_dir.resolve()
    settings = {k: v for k, v in config.context.items() if v is not None}
    return Context(
        **settings,
        k=config.k,
        memory_mode=mode,  # type: ignore[arg-type]  # EvalConfig checks modes against MODES
        namespace=f"{config.namespace_prefix}-{mode}",
        bank_path=str(config.bank_path or out / "bank"),
        experience_path=str(out / "experience" / f"{mode}.sqlite"),
        policy_path=str(out / "policy" / f"{mode}.pt"),
        eval_mode=split == "test",
        write_back=split != "test",
    )


def models_of(ctx: Any) -> dict[str, str]:
    """The models a Context names, per role."""
    return {"planner": ctx.planner_model, "executor": ctx.executor_model, "judge": ctx.judge_model}


def check_resume(config: EvalConfig, examples: Sequence[Example]) -> None:
    """Refuse to mix results of different settings in one output folder.

    Raises:
        ValueError: ``config.json`` in the folder records different stream-defining settings.

    """
    path = config.out_dir / "config.json"
    if not path.exists():
        return
    old = json.loads(path.read_text(encoding="utf-8"))
    now = {
        "k": config.k,
        "seed": config.seed,
        "test_fraction": config.test_fraction,
        "dataset": config.dataset_name,
        "context": config.context,
        "modes": sorted(config.modes),
    }
    if isinstance(old.get("modes"), list):
        # The summary covers the folder's modes: another set would rewrite it without the others.
        old["modes"] = sorted(old["modes"])
    diff = {key: (old.get(key), val) for key, val in now.items() if key in old and old.get(key) != val}
    if diff:
        lines = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
        raise ValueError(
            f"{config.out_dir} holds results of a run with other settings ({lines}); "
            "resume with the same settings or choose another --out folder"
        )
