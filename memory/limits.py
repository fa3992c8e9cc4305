"""How much of a case is stored and shown, so one huge answer cannot flood every later prompt.

The same defaults serve the agent (`Context` fields ``case_answer_chars``, ``case_plan_chars``,
``case_prompt_chars``) and the memory MCP server; both read ``MEMENTO_CASE_*`` from the
environment. A cut text keeps its beginning and says how much was left out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

ANSWER_CHARS = 4000
PLAN_CHARS = 4000
TRAJECTORY_CHARS = 2000
QUESTION_CHARS = 4000
PROMPT_CASE_CHARS = 2000


def cut(text: str, limit: int, note: str = "") -> str:
    """The first ``limit`` characters and a marker naming what was cut (``limit`` <= 0: no cap)."""
    text = str(text)
    if limit <= 0 or len(text) <= limit:
        return text
    return text[:limit] + f" … [cut {len(text) - limit:,} characters{note}]"


def cap_plan(steps: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """Steps whose descriptions total at most ``limit`` characters; later steps are dropped, and said so."""
    if limit <= 0:
        return steps
    kept: list[dict[str, Any]] = []
    budget = limit
    for i, step in enumerate(steps):
        if budget <= 0:
            kept[-1] = {**kept[-1], "description": kept[-1]["description"] + f" … [{len(steps) - i} more steps cut]"}
            break
        description = str(step.get("description", ""))
        kept.append({**step, "description": cut(description, budget)})
        budget -= len(description)
    return kept


def share(lengths: list[int], limit: int) -> list[int]:
    """Split ``limit`` characters over fields: short ones keep all they have, long ones share the rest."""
    caps = [0] * len(lengths)
    left = limit
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    for n, i in enumerate(order):
        fair = left // (len(order) - n)
        caps[i] = min(lengths[i], fair)
        left -= caps[i]
    return caps


@dataclass(frozen=True)
class CaseLimits:
    """Per-case storage caps (characters); 0 turns one off."""

    answer_chars: int = ANSWER_CHARS
    plan_chars: int = PLAN_CHARS
    trajectory_chars: int = TRAJECTORY_CHARS
    # Questions are never cut (a case's id derives from its question); the memory MCP server
    # refuses longer ones instead.
    question_chars: int = QUESTION_CHARS

    @classmethod
    def from_env(cls) -> CaseLimits:
        """The caps configured by ``MEMENTO_CASE_ANSWER_CHARS`` / ``_PLAN_CHARS`` / ``_TRAJECTORY_CHARS`` / ``_QUESTION_CHARS``."""
        values = {}
        for name in ("answer_chars", "plan_chars", "trajectory_chars", "question_chars"):
            raw = os.environ.get(f"MEMENTO_CASE_{name.upper()}")
            if raw:
                try:
                    values[name] = int(raw)
                except ValueError:
                    raise ValueError(f"MEMENTO_CASE_{name.upper()} must be a whole number, got {raw!r}") from None
        return cls(**values)

    def apply(self, case: Any, note: str = "") -> Any:
        """Cap a case's answer, plan and trajectory summary in place; returns the case."""
        case.answer = cut(case.answer, self.answer_chars, note)
        case.plan = cap_plan(case.plan, self.plan_chars)
        case.trajectory_summary = cut(case.trajectory_summary, self.trajectory_chars)
        return case
