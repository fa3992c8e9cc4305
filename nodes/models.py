"""Chat models for the nodes: any OpenAI-compatible endpoint through ``langchain-openai``."""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage
from pydantic import ValidationError

from graph.context import Context
from graph.state import ModelUsage, Usage

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


class ModelEndpointError(ModelConfigError):
    """The endpoint cannot be reached or refuses the key; the message carries `CONFIG_HELP`.

    A RuntimeError on purpose: the LangGraph server shows such a message to its client, while an
    ``openai`` connection error reaches it only as "An internal error occurred".
    """


def explain_endpoint_errors(node: Callable[..., Awaitable[dict]]) -> Callable[..., Awaitable[dict]]:
    """Wrap a node so an unreachable endpoint or a rejected key raises `ModelEndpointError`.

    The run still fails (and stays resumable from its last checkpoint); only the error changes,
    so every surface (CLI, eval, ``langgraph dev`` clients) shows the same configuration help.

    A timeout (``APITimeoutError``, a subclass of ``APIConnectionError``) is not a setup problem:
    the endpoint was reached but did not answer within ``Context.request_timeout``, so it
    propagates unchanged.
    """

    @functools.wraps(node)
    async def wrapper(state: Any, runtime: Any) -> dict:
        try:
            return await node(state, runtime)
        except Exception as exc:
            # openai is imported only when a node fails: importing it while the graph is built
            # would delay `memento ask`'s first output by about half a second.
            from openai import APIConnectionError, APITimeoutError, AuthenticationError

            if isinstance(exc, APITimeoutError) or not isinstance(exc, APIConnectionError | AuthenticationError):
                raise
            try:
                where = Context.resolve(getattr(runtime, "context", None)).endpoint or "https://api.openai.com/v1"
            except ValueError:  # a bad context was reported by the node already; keep this error
                where = "the configured endpoint"
            raise ModelEndpointError(f"cannot use the model endpoint {where}: {exc}\n{CONFIG_HELP}") from exc

    return wrapper


class ModelReplyError(RuntimeError):
    """The endpoint answered, but its reply could not be read (bad encoding, broken JSON)."""


async def ainvoke(model: Any, messages: list[Any]) -> AIMessage:
    """``model.ainvoke(messages)``, with an unreadable HTTP reply turned into `ModelReplyError`.

    The OpenAI client decodes the body with ``json.loads``: invalid UTF-8, a truncated body or an
    HTML error page from a proxy would otherwise escape a node as a bare decoding error.

    Raises:
        ModelReplyError: The reply was not valid UTF-8 JSON, was nested too deeply to read, or
            could not be made into a message (tool-call arguments that are not an object).

    """
    try:
        return await model.ainvoke(messages)
    except UnicodeDecodeError as exc:
        raise ModelReplyError(
            f"the model endpoint sent a reply that is not valid UTF-8 ({exc.reason} at byte {exc.start})"
        ) from None
    except json.JSONDecodeError as exc:
        raise ModelReplyError(
            f"the model endpoint sent a reply that is not JSON ({exc.msg} at position {exc.pos})"
        ) from None
    except RecursionError:
        raise ModelReplyError("the model endpoint sent a reply nested too deeply to read") from None
    except ValidationError as exc:
        # E.g. tool-call arguments that are JSON but not an object ("[1, 2]"): langchain cannot
        # build the message at all, so there is no partial reply to keep.
        errors = exc.errors()
        first: dict[str, Any] = dict(errors[0]) if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ModelReplyError(
            f"the model's reply does not fit the chat message format ({where}: {first.get('msg', exc)})"
        ) from None


def check_endpoint(ctx: Context) -> None:
    """Fail early with setup instructions instead of a stack trace from deep inside a node."""
    if ctx.api_key is None and ctx.endpoint is None:
        raise ModelConfigError(f"No API key found in ${ctx.api_key_env} and no OPENAI_BASE_URL set.\n{CONFIG_HELP}")


def model_key(ctx: Context, role: str) -> tuple[Any, ...]:
    """What makes two chat clients for a role interchangeable (a cache key for their owner)."""
    name = {"planner": ctx.planner_model, "executor": ctx.executor_model, "judge": ctx.judge_model}[role]
    return (name, ctx.endpoint, ctx.api_key or "not-needed", ctx.temperature, ctx.request_timeout, ctx.max_retries)


def build_chat_model(ctx: Context, role: str) -> ChatOpenAI:
    """A new client for a role (``planner``, ``executor`` or ``judge``); `Resources` keeps one per setting.

    Raises:
        ModelConfigError: No API key and no endpoint are configured.

    """
    check_endpoint(ctx)
    # Imported here: langchain-openai (and openai) take about a second to import, which would
    # otherwise delay `memento ask` before it can show the retrieved cases.
    from langchain_openai import ChatOpenAI

    name, base_url, api_key, temperature, timeout, retries = model_key(ctx, role)
    return ChatOpenAI(
        model=name,
        base_url=base_url,
        # Local servers (vLLM, Ollama) accept any key; the client insists on one.
        api_key=api_key,
        temperature=temperature,
        timeout=timeout,
        max_retries=retries,
        # Token counts come back in the response; get_num_tokens would download tiktoken files.
        stream_usage=True,
    )


def add_usage(usage: Usage | Mapping[str, Any], message: Any, model: str | None = None) -> Usage:
    """Accumulate one reply's token usage into the state's counters (a new record).

    Totals drive the progress display; the per-model breakdown lets evals price a strong planner
    and a cheap executor separately.
    """
    meta = getattr(message, "usage_metadata", None) or {}
    prompt = int(meta.get("input_tokens", 0) or 0)
    completion = int(meta.get("output_tokens", 0) or 0)
    by_model: dict[str, ModelUsage] = {
        name: ModelUsage(
            prompt_tokens=counts.get("prompt_tokens", 0),
            completion_tokens=counts.get("completion_tokens", 0),
            llm_calls=counts.get("llm_calls", 0),
        )
        for name, counts in (usage.get("by_model") or {}).items()
    }
    if model:
        entry = by_model.setdefault(model, ModelUsage(prompt_tokens=0, completion_tokens=0, llm_calls=0))
        entry["prompt_tokens"] += prompt
        entry["completion_tokens"] += completion
        entry["llm_calls"] += 1
    return Usage(
        prompt_tokens=usage.get("prompt_tokens", 0) + prompt,
        completion_tokens=usage.get("completion_tokens", 0) + completion,
        llm_calls=usage.get("llm_calls", 0) + 1,
        by_model=by_model,
    )


def text_of(message: AIMessage) -> str:
    """Plain text of a reply whose content may be a list of blocks."""
    content = message.content
    if isinstance(content, list):
        return "".join(str(b.get("text") or "") if isinstance(b, dict) else str(b) for b in content)
    return str(content or "")
