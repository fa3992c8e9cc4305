"""`retrieve_cases` node: past cases for the question, split into positive and negative examples."""

from __future__ import annotations

import hashlib
import time

from langgraph.config import get_config
from langgraph.runtime import Runtime

from graph.context import Context
from graph.state import State
from memory.bank import BankError
from memory.cases import clean_text
from memory.retrieval import retrieve_cases as select_cases
from nodes.approvals import bind_policy
from nodes.resources import Resources


def _retrieval_id(state: State) -> str:
    """Unique per task attempt (thread), stable across resumes of that attempt."""
    thread = get_config().get("configurable", {}).get("thread_id", "")
    key = f"{thread}|{state.task_id or ''}|{state.question}"
    return "ret-" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def retrieve_cases(state: State, runtime: Runtime[Context], resources: Resources) -> dict:
    """Fetch cases from the bank and log the retrieval for policy training."""
    ctx = Context.resolve(runtime.context)
    # Lone surrogates (a "\udcff" escape from an HTTP caller) cannot be encoded for the bank.
    question = clean_text((state.question or "").strip())
    if not question:
        raise ValueError("the question is empty: send {'question': '...'}")
    started = time.time()
    # The approval policy is bound to the thread here, at its start, for every later resume.
    policy = bind_policy(state.sensitive_tools, ctx.sensitive_tools)
    if ctx.memory_mode == "none" or ctx.k == 0:
        return {
            "question": question,
            "cases": [],
            "retrieval": {"selector": "none"},
            "started_at": started,
            "sensitive_tools": policy,
        }
    # The bank worker `memento ask` started answers this first search (see memory.bank_worker).
    bank = resources.retrieval_bank(ctx)
    retrieval_id = _retrieval_id(state)
    try:
        result = select_cases(
            bank,
            question,
            mode=ctx.memory_mode,
            k=ctx.k,
            n_candidates=ctx.n_candidates,
            namespace=ctx.namespace,
            exclude_task_ids=(state.task_id,) if ctx.eval_mode and state.task_id else (),
            exclude_similarity_above=ctx.leakage_threshold if ctx.eval_mode else None,
            policy_path=ctx.policy_path,
            exploration=ctx.exploration,
            # Exploration draws are seeded per task attempt: a rerun of the same thread (or an eval
            # with the same seed) shows the same cases.
            rng_seed=int(retrieval_id[4:20], 16),
            min_similarity=ctx.min_similarity,
            # Learned mode only: the selector module imports torch.
            selectors=resources.selectors if ctx.memory_mode == "learned" else None,
            warned=resources.warned,
        )
    except BankError as exc:
        # A damaged bank must not cost the task: answer without memory and say why.
        note = f"no cases shown: {exc}"
        return {
            "question": question,
            "cases": [],
            "retrieval": {"selector": "none", "note": note},
            "started_at": started,
            "errors": [*state.errors, note],
        }
    resources.experience(ctx).log_retrieval(
        retrieval_id,
        namespace=ctx.namespace,
        query=question,
        candidates=result.candidates,
        selector=result.selector,
        policy_version=result.policy_version,
        task_id=state.task_id,
        slates=result.slates,
        arm=result.arm,
    )
    return {
        "question": question,
        "cases": result.shown,
        "retrieval_id": retrieval_id,
        "retrieval": {
            "selector": result.selector,
            "policy_version": result.policy_version,
            "note": result.note,
            "candidates": len(result.candidates),
        },
        "started_at": started,
        "sensitive_tools": policy,
    }
