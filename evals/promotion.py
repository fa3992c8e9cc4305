"""Policy promotion between passes: refit the bandit on a mode's log, promote it only if OPE prefers it."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger("evals.runner")


def train_policy_before_pass(
    mode: str, iteration: int, ctx: Any, resources: Any = None, *, seed: int = 0, notes: list[str] | None = None
) -> None:
    """Learned mode, before passes 2, 3, ...: refit the bandit on this mode's experience log.

    The refit serves the bandit's share of the next pass; the off-policy A/B comparison of the
    bandit and similarity arms on the log moves that share (`memory.policy.online.OnlineTrainer.retrain`). The graph's online trainer also refits every
    few dozen outcomes within a pass; this makes each pass start from everything before it.
    ``resources`` is the runner's (`nodes.resources.Resources`): its trainer is the graph's, so a
    refit still running from the last pass finishes first. None builds one for this call.
    """
    if mode != "learned" or iteration < 2:
        return
    try:
        import memory.policy.online  # noqa: F401 - the policy extra may be missing
        from nodes.resources import Resources
    except ImportError as exc:
        _note(notes, f"learned pass {iteration}: policy package unavailable ({exc}); graph uses similarity")
        return
    try:
        owner = resources if resources is not None else Resources(ctx)
        trainer = owner.trainer(ctx, owner.bank(ctx))
        trainer.wait()  # a background refit of the last pass finishes first
        result = trainer.retrain()
    except (ValueError, RuntimeError, OSError) as exc:
        _note(notes, f"learned pass {iteration}: policy not trained ({exc}); the current policy keeps serving")
        return
    moved = "promoted" if result.promoted else "demoted" if result.demoted else "kept"
    _note(
        notes,
        f"learned pass {iteration}: bandit {result.version} refit on {result.rows} retrievals, share {moved} at "
        f"{result.share:.0%} ({result.reason})",
    )


def policy_version(path: str) -> str | None:
    """A short content hash of a policy checkpoint, None when there is none."""
    p = Path(path)
    if not p.is_file():
        return None
    return "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()[:12]


def _note(notes: list[str] | None, text: str) -> None:
    logger.info(text)
    if notes is not None:
        notes.append(text)
