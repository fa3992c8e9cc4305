"""Run settings: models, memory and tools. LangGraph Studio renders these fields as a form.

Every field has a default and a description. A field left at its default falls back to the
environment variable ``MEMENTO_<FIELD_NAME>`` (read at construction), so `.env` files and
deployments configure the agent without code.
"""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal

from mcp_servers.paths import DEFAULT_SERVERS_CONFIG
from memory.limits import ANSWER_CHARS, PLAN_CHARS, PROMPT_CASE_CHARS

MemoryMode = Literal["none", "similarity", "learned"]


def load_env_file() -> None:
    """Load ``.env`` from the working directory into the environment (set variables win).

    Every CLI entry calls it before the first `Context` is built; ``usecwd``: look beside the user,
    not beside this installed module.
    """
    from dotenv import find_dotenv, load_dotenv

    load_dotenv(find_dotenv(usecwd=True), override=False)


@dataclass(kw_only=True)
class Context:
    """Settings for one run of the Memento graph."""

    planner_model: str = field(
        default="gpt-4.1",
        metadata={"description": "Planner model (strong): writes plans and final answers."},
    )
    executor_model: str = field(
        default="gpt-4.1-mini",
        metadata={"description": "Executor model (cheaper): works on one subtask with tools."},
    )
    judge_model: str = field(
        default="gpt-4.1-mini",
        metadata={"description": "Judge model: grades the answer (against the ground truth when there is one)."},
    )
    base_url: str = field(
        default="",
        metadata={
            "description": "OpenAI-compatible endpoint (OpenAI, Azure's /openai/v1/, vLLM, Ollama's "
            "/v1). Empty uses OPENAI_BASE_URL or api.openai.com."
        },
    )
    api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={"description": "Name of the environment variable holding the API key (never the key)."},
    )
    temperature: float = field(default=0.0, metadata={"description": "Sampling temperature of all models."})
    request_timeout: float = field(
        default=60.0,
        metadata={
            "description": "Seconds one LLM request may take before it is abandoned (a hung endpoint costs at most this x (retries + 1))."
        },
    )
    max_retries: int = field(
        default=2, metadata={"description": "Retries per LLM request on transient errors and timeouts."}
    )
    k: int = field(default=4, metadata={"description": "Cases shown to the planner (top K)."})
    n_candidates: int = field(
        default=32, metadata={"description": "Nearest cases fetched before the policy reranks them (N)."}
    )
    max_cycles: int = field(default=3, metadata={"description": "Plan-execute cycles before a forced final answer."})
    max_executor_steps: int = field(
        default=6, metadata={"description": "Executor model calls per subtask before it is cut off."}
    )
    max_subtasks: int = field(default=6, metadata={"description": "Subtasks kept from one plan."})
    memory_mode: MemoryMode = field(
        default="similarity",
        metadata={
            "description": "Case selection: none (no memory), similarity (nearest cases) or learned "
            "(the case-value bandit chooses 0..K of the nearest N; it serves a share of selections and "
            "similarity the rest, and an off-policy A/B comparison of the two moves the share)."
        },
    )
    exploration: str = field(
        default="greedy",
        metadata={
            "description": "Exploration of learned mode's similarity fallback (an unusable checkpoint): "
            "greedy, epsilon[:rate] or thompson[:draws]. The bandit explores by Thompson sampling."
        },
    )
    namespace: str = field(default="default", metadata={"description": "Case-bank namespace (per user or project)."})
    bank_path: str = field(
        default=".memento/cases", metadata={"description": "Folder of the embedded Chroma case bank."}
    )
    chroma_url: str = field(
        default="", metadata={"description": "Chroma server URL (http://host:port); empty uses the embedded bank."}
    )
    experience_path: str = field(
        default=".memento/experience.sqlite",
        metadata={"description": "Experience log (retrievals joined with outcomes) for policy training."},
    )
    policy_path: str = field(
        default=".memento/policy.pt", metadata={"description": "Learned case-selection policy checkpoint."}
    )
    embedder: str = field(
        default="minilm",
        metadata={
            "description": "Question embedder of the case bank: minilm (local), a model folder or "
            "openai:<model>; a bank keeps the one it was built with."
        },
    )
    checkpoint_url: str = field(
        default="",
        metadata={
            "description": "CLI and eval runs: where threads are checkpointed (a SQLite path or a "
            "postgresql:// URL); empty uses .memento/checkpoints.sqlite. The LangGraph server keeps its own."
        },
    )
    bank_worker: bool = field(
        default=True,
        metadata={
            "description": "CLI: `memento ask` opens the case bank in a child process while it starts, so "
            "its cases show sooner on an idle second core (skipped with one core or a load average at "
            "the core count); off always opens it in-process."
        },
    )
    write_back: bool = field(default=True, metadata={"description": "Store each finished task as a new case."})
    case_answer_chars: int = field(
        default=ANSWER_CHARS,
        metadata={
            "description": "Longest answer stored in a case (the rest is cut; the run's state keeps it all). 0: no cap."
        },
    )
    case_plan_chars: int = field(
        default=PLAN_CHARS, metadata={"description": "Most plan characters stored in a case. 0: no cap."}
    )
    case_prompt_chars: int = field(
        default=PROMPT_CASE_CHARS,
        metadata={"description": "Most characters of one past case (question, plan, answer) shown to the planner."},
    )
    mcp_config: str = field(
        default=DEFAULT_SERVERS_CONFIG,
        metadata={"description": "MCP servers config (JSON, mcpServers style); empty means no tools."},
    )
    sensitive_tools: list[str] = field(
        default_factory=list,
        metadata={"description": "Tool names (or server_ prefixes) that pause for human approval."},
    )
    eval_mode: bool = field(
        default=False,
        metadata={"description": "Leakage guard: never retrieve cases of the same task or near-identical questions."},
    )
    leakage_threshold: float = field(
        default=0.95, metadata={"description": "Cosine similarity above which a case counts as the same question."}
    )
    self_judge: bool = field(
        default=True,
        metadata={
            "description": "Without a ground truth, the judge model grades the run (question, plan, tool "
            "results, answer) so everyday runs are learned from; off leaves such cases unlabelled."
        },
    )
    min_similarity: float = field(
        default=0.45,
        metadata={
            "description": "Similarity mode: cases less similar to the question than this (cosine) are "
            "never shown. Measured default, see README (Similarity floor)."
        },
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            env = os.environ.get(f"MEMENTO_{f.name.upper()}")
            if env is None or getattr(self, f.name) != _default(f):
                continue
            setattr(self, f.name, _coerce(env, _default(f)))
        if self.memory_mode not in ("none", "similarity", "learned"):
            raise ValueError(f"memory_mode must be none, similarity or learned, got {self.memory_mode!r}")
        if not -1.0 <= self.min_similarity <= 1.0:
            raise ValueError(f"min_similarity must be a cosine similarity in [-1, 1], got {self.min_similarity}")
        if self.k < 0 or self.n_candidates < 1 or self.max_cycles < 1 or self.max_executor_steps < 1:
            raise ValueError("k must be >= 0 and n_candidates, max_cycles, max_executor_steps >= 1")
        if not self.request_timeout > 0:
            raise ValueError(f"request_timeout must be a positive number of seconds, got {self.request_timeout!r}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries!r}")

    @classmethod
    def resolve(cls, value: Context | dict[str, Any] | None) -> Context:
        """Accept what LangGraph hands a node: a Context, a plain dict (HTTP callers) or None."""
        if isinstance(value, cls):
            return value
        if not value:
            return cls()
        assert isinstance(value, dict)  # what is left of the union: a mapping of settings
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in value.items() if k in known})

    @property
    def api_key(self) -> str | None:
        """The key, read from the environment at use time so it never lands in state or traces."""
        return os.environ.get(self.api_key_env) or None

    @property
    def endpoint(self) -> str | None:
        """The base URL in effect."""
        return self.base_url or os.environ.get("OPENAI_BASE_URL") or None


def _default(f) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory()


def _coerce(raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    if isinstance(default, list):
        raw = raw.strip()
        return json.loads(raw) if raw.startswith("[") else [s.strip() for s in raw.split(",") if s.strip()]
    return raw
