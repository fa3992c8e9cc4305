"""A small fake chat model: scripted replies, `bind_tools`, and a record of every call.

Unit tests hand it to `nodes.resources.Resources` (``chat_models={"planner": ..., ...}``) and run
nodes or the whole graph in-process, with no HTTP server and no sockets. The scripted
OpenAI-compatible server (`evals.sim.openai_server`) stays for the integration tests, which
exercise the real ``ChatOpenAI`` client over HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field

Reply = AIMessage | str | Callable[[list[BaseMessage]], "AIMessage | str"]


class FakeChatModel(BaseChatModel):
    """Answers each call with the next scripted reply and records what it was asked.

    A reply is an `AIMessage` (tool calls included), a string (plain content), or a function of
    the call's messages returning either. Every reply carries token usage (10 in, 5 out) so the
    graph's counters move as with a real endpoint. Running out of replies is an error: a test
    states every call it expects.
    """

    replies: list[Any] = Field(default_factory=list)
    calls: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "fake-scripted"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools as a real chat model does (their OpenAI schemas reach `_generate`)."""
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(
        self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        tools = [t["function"]["name"] for t in kwargs.get("tools") or []]
        self.calls.append({"messages": list(messages), "tools": tools})
        if len(self.calls) > len(self.replies):
            raise AssertionError(f"unscripted call {len(self.calls)} to the fake model: {messages[-1].content!r}")
        reply = self.replies[len(self.calls) - 1]
        if callable(reply):
            reply = reply(list(messages))
        message = AIMessage(content=reply) if isinstance(reply, str) else reply.model_copy()
        message.usage_metadata = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
        return ChatResult(generations=[ChatGeneration(message=message)])

    def last_text(self, call: int = -1) -> str:
        """The text of the last message of one recorded call (default: the latest)."""
        return str(self.calls[call]["messages"][-1].content)
