"""`write_back` node: store the finished task as a case, idempotently and without silent loss."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path

from langgraph.config import get_config
from langgraph.runtime import Runtime
from tenacity import retry, stop_after_attempt, wait_exponential

from graph.context import Context
from graph.state import State
from memory.cases import Case, case_id_for, clean_text
from memory.limits import CaseLimits
from memory.outcomes import attempt_record, merge_attempt, record_outcome
from memory.records import Attempt
from nodes.resources import Resources

logger = logging.getLogger(__name__)


def trajectory_summary(state: State, limit: int = 1200) -> str:
    """Tools used and subtask results, truncated: enough to recognise what was tried."""
    tools = sorted({t["name"] for t in state.tool_calls})
    parts = [f"cycles: {state.cycle}; tools: {', '.join(tools) or 'none'}"]
    for r in state.subtask_results:
        parts.append(f"[{r['id']}] {r['description'][:120]} => {str(r['result'])[:160]}")
    if state.errors:
        parts.append("errors: " + "; ".join(e[:120] for e in state.errors))
    text = "\n".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pending_path(ctx: Context) -> Path:
    """Where cases wait when the bank cannot take them (replayed by the next write)."""
    return Path(ctx.experience_path).with_name("pending_cases.jsonl")


def _spool(path: Path, case: Case) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Serialised before the file is opened, so an unencodable record cannot leave a torn line.
    line = json.dumps(clean_text(case.to_dict()), ensure_ascii=False) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def _read_spool(path: Path) -> list[Case]:
    """Spooled cases; a damaged line is moved to ``<spool>.bad`` instead of blocking every write."""
    cases, bad = [], []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            cases.append(Case.from_dict(json.loads(line)))
        except (ValueError, TypeError, RecursionError) as exc:
            bad.append(line)
            logger.warning("skipping a damaged line of %s (%s); kept in %s.bad", path, exc, path.name)
    if bad:
        with open(path.with_name(path.name + ".bad"), "a", encoding="utf-8") as fh:
            fh.write("\n".join(bad) + "\n")
    return cases


@retry(stop=stop_after_attempt(3), wait=wait_exponential(multiplier=0.2, max=2), reraise=True)
def _upsert_merged(bank, case: Case, attempt: Attempt) -> Case:
    return bank.upsert_merged(case, lambda existing: merge_attempt(existing, case, attempt))


def merge_spooled(existing: Case | None, spooled: Case) -> Case:
    """A spooled case merged into its stored version: every attempt it carries joins the history.

    Written whole, a case spooled while the bank was down would replace the attempts other runs
    stored meanwhile. A case without an attempt history (written by an older version) is written
    whole, as before.
    """
    if existing is None or not spooled.attempt_log:
        return spooled
    merged = existing
    for attempt in spooled.attempt_log:
        merged = merge_attempt(merged, replace(spooled, attempt_log=[]), attempt)
    return merged


@retry(stop=stop_after_attempt(3), wait=wait_exponential(multiplier=0.2, max=2), reraise=True)
def _replay(bank, cases: list[Case]) -> None:
    for case in cases:
        bank.upsert_merged(case, lambda existing, case=case: merge_spooled(existing, case))


def write_back(state: State, runtime: Runtime[Context], resources: Resources) -> dict:
    """Upsert the case under a deterministic id, then log the outcome for the policy."""
    ctx = Context.resolve(runtime.context)
    if not ctx.write_back:
        return {}
    thread = get_config().get("configurable", {}).get("thread_id")
    # One case per question and namespace (per task id when the caller gives one): a re-ask
    # updates it. The thread names the attempt, so a resumed run is not counted twice.
    attempt_id = thread or state.retrieval_id or f"run-{state.started_at}"
    case = Case(
        # The id is derived from the stored (cleaned) question, so a re-import maps onto it.
        id=case_id_for(ctx.namespace, clean_text(state.question), state.task_id),
        namespace=ctx.namespace,
        question=state.question,
        plan=state.plan,
        answer=state.answer or "",
        reward=state.reward,
        label=state.label,  # type: ignore[arg-type]
        reward_source=state.reward_source,  # type: ignore[arg-type]
        judge_model=state.judge_model,
        judge_rationale=state.judge_rationale,
        judge_confidence=state.judge_confidence,
        trajectory_summary=trajectory_summary(state),
        task_id=state.task_id,
        source=state.source,
        models={"planner": ctx.planner_model, "executor": ctx.executor_model, "judge": ctx.judge_model},
        created_at=state.started_at or time.time(),
    )
    # One huge answer must not be stored in full and then shown to every similar task's planner;
    # the thread's state keeps the full text.
    CaseLimits(ctx.case_answer_chars, ctx.case_plan_chars).apply(case, note=f"; full text in thread {thread}")
    bank = resources.bank(ctx)
    attempt = attempt_record(
        attempt_id,
        retrieval_id=state.retrieval_id,
        reward=state.reward,
        label=state.label,
        reward_source=state.reward_source,
        answer=state.answer or "",
    )
    spool = pending_path(ctx)
    try:
        if spool.exists():
            _replay(bank, _read_spool(spool))
            spool.unlink(missing_ok=True)
        # Read, merged and written under the bank's lock: a concurrent run of the same question
        # cannot drop this attempt from the history, nor this run drop its.
        case = _upsert_merged(bank, case, attempt)
    except Exception as exc:
        if not case.attempt_log:  # the bank failed before the merge: this attempt alone is kept
            case = merge_attempt(None, case, attempt)
        _spool(spool, case)
        raise RuntimeError(
            f"could not write case {case.id} to the bank at {bank.location} ({exc}); it is saved in "
            f"{spool} and will be written by the next run, or resume this thread to retry now"
        ) from exc
    log = resources.experience(ctx)
    if state.retrieval_id:
        success = None if state.reward is None else state.reward >= 0.5
        # A resumed write_back must not count the usage twice: the outcome row marks it done, and
        # the retrieval id stored with each case covers a kill between these two writes.
        if not log.has_outcome(state.retrieval_id):
            bank.record_usage(
                [c["id"] for c in state.cases], success, namespace=ctx.namespace, usage_key=state.retrieval_id
            )
        # A person's feedback given before this (resumed) write is not overwritten by the judge.
        record_outcome(
            log, state.retrieval_id, reward=state.reward, label=state.label, reward_source=state.reward_source
        )
        if ctx.memory_mode == "learned" and state.reward is not None:
            # Counts judged outcomes; every N of them a background thread refits the bandit on
            # this namespace's log and promotes it only if off-policy evaluation prefers it.
            resources.trainer(ctx, bank).notify_outcome()
    return {"case_id": case.id, "case_written": True}
