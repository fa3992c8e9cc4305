"""Dollar cost of a task from its token usage and per-model prices."""

from __future__ import annotations

from typing import Any


def cost_usd(usage: dict[str, Any], models: dict[str, str], prices: dict[str, float]) -> float:
    """Dollar cost of one task from its token usage and $/1k-token prices per model.

    Usage broken down per model (``usage["by_model"]``) is priced model by model; the graph's
    total-only usage is priced at the planner's rate (an upper bound when the executor is cheaper).
    """
    if not prices:
        return 0.0
    by_model = usage.get("by_model")
    if isinstance(by_model, dict):
        return sum(
            (int(u.get("prompt_tokens", 0)) + int(u.get("completion_tokens", 0))) / 1000 * prices.get(m, 0.0)
            for m, u in by_model.items()
        )
    tokens = int(usage.get("prompt_tokens", 0)) + int(usage.get("completion_tokens", 0))
    return tokens / 1000 * prices.get(models.get("planner", ""), 0.0)
