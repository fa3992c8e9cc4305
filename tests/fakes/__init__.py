"""Test doubles for what lies outside this machine (an LLM provider, search APIs)."""

from evals.sim.openai_server import (
    ScriptedOpenAI,
    error,
    fake_embedding,
    final,
    last_user_text,
    plan,
    tool_call,
    verdict,
)

__all__ = [
    "ScriptedOpenAI",
    "error",
    "fake_embedding",
    "final",
    "last_user_text",
    "plan",
    "tool_call",
    "verdict",
]
