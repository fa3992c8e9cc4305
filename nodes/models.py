"""Chat models for the nodes: any OpenAI-compatible endpoint through ``langchain-openai``."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage

from graph.context import Context

if TYPE_CHECKING:
    from langchain_openai import ChatOpenAI

CONFIG_HELP = """Configure the model endpoint, e.g. in a .env file:
  OpenAI:          OPENAI_API_KEY=sk-...
  Azure OpenAI:    OPENAI_BASE_URL=https://<resource>.openai.azure.com/openai/v1/  OPENAI_API_KEY=<azure key>
                   (model names are your deployment names: MEMENTO_PLANNER_MODEL=..., MEMENTO_EXECUTOR_MODEL=...)
  vLLM:            OPENAI_BASE_URL=http://localhost:8000/v1  OPENAI_API_KEY=EMPTY
  Ollama:          OPENAI_BASE_URL=http://localhost:11434/v1  OPENAI_API_KEY=ollama
Models: MEMENTO_PLANNER_MODEL, MEMENTO_EXECUTOR_MODEL, MEMENTO_JUDGE_MODEL (or --planner/--executor/--judge)."""


class ModelConfigError(RuntimeError):
    """No usable endpoint or key: the message says how to configure one."""


def check_endpoint(ctx: Context) -> None:
    """Fail early with setup instructions instead of a stack trace from deep inside a node."""
    if ctx.api_key is None and ctx.endpoint is None:
        raise ModelConfigError(f"No API key found in ${ctx.api_key_env} and no OPENAI_BASE_URL set.\n{CONFIG_HELP}")


@functools.lru_cache(maxsize=32)
def _chat_model(model: str, base_url: str | None, api_key: str, temperature: float, timeout: float, retries: int) -> ChatOpenAI:
    # Imported here: langchain-openai (and openai) take about a second to import, which would
    # otherwise delay `memento ask` before it can show the retrieved cases.
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=model,
        base_url=base_url,
        api_key=api_key,
        temperature=temperature,
        timeout=timeout,
        max_retries=retries,
        # Token counts come back in the response; get_num_tokens would download tiktoken files.
        stream_usage=True,
    )


def chat_model(ctx: Context, role: str) -> ChatOpenAI:
    """The model for a role (``planner``, ``executor`` or ``judge``), shared per process."""
    check_endpoint(ctx)
    name = {"planner": ctx.planner_model, "executor": ctx.executor_model, "judge": ctx.judge_model}[role]
    # Local servers (vLLM, Ollama) accept any key; the client insists on one.
    return _chat_model(name, ctx.endpoint, ctx.api_key or "not-needed", ctx.temperature, ctx.request_timeout, ctx.max_retries)


def add_usage(usage: dict[str, Any], message: Any, model: str | None = None) -> dict[str, Any]:
    """Accumulate one reply's token usage into the state's counters (a new dict).

    Totals drive the progress display; the per-model breakdown lets evals price a strong planner
    and a cheap executor separately.
    """
    meta = getattr(message, "usage_metadata", None) or {}
    prompt = int(meta.get("input_tokens", 0) or 0)
    completion = int(meta.get("output_tokens", 0) or 0)
    by_model = {name: dict(counts) for name, counts in (usage.get("by_model") or {}).items()}
    if model:
        entry = by_model.setdefault(model, {"prompt_tokens": 0, "completion_tokens": 0, "llm_calls": 0})
        entry["prompt_tokens"] += prompt
        entry["completion_tokens"] += completion
        entry["llm_calls"] += 1
    return {
        "prompt_tokens": usage.get("prompt_tokens", 0) + prompt,
        "completion_tokens": usage.get("completion_tokens", 0) + completion,
        "llm_calls": usage.get("llm_calls", 0) + 1,
        "by_model": by_model,
    }


def text_of(message: AIMessage) -> str:
    """Plain text of a reply whose content may be a list of blocks."""
    content = message.content
    if isinstance(content, list):
        return "".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in content)
    return str(content or "")
