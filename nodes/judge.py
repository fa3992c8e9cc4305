"""`judge` node: the reward. An LLM judge against the ground truth, plus exact match and token F1."""

from __future__ import annotations

import json

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from graph.context import Context
from graph.state import State
from memory.cases import label_for_reward
from nodes import prompts
from nodes.json_output import extract_json_object
from nodes.models import ModelReplyError, add_usage, ainvoke, text_of
from nodes.resources import Resources
from nodes.scoring import exact_match, split_answers, token_f1


def parse_verdict(text: str) -> tuple[bool, str]:
    """``(correct, rationale)`` from a judge reply.

    Raises:
        ValueError: The reply holds no boolean verdict.

    """
    data = extract_json_object(text)
    correct = data.get("correct")
    if isinstance(correct, str) and correct.strip().lower() in ("true", "false", "yes", "no"):
        correct = correct.strip().lower() in ("true", "yes")
    if not isinstance(correct, bool):
        raise ValueError('the judge reply needs "correct": true or false')
    return correct, str(data.get("rationale") or "")


def parse_confidence(text: str) -> float | None:
    """The judge's confidence in [0, 1], or None when it gave none (or nothing usable)."""
    try:
        value = float(extract_json_object(text).get("confidence"))  # type: ignore[arg-type]  # None raises TypeError, caught
    except (ValueError, TypeError):
        return None
    if value != value:  # NaN
        return None
    # Some models answer in percent.
    value = value / 100.0 if 1.0 < value <= 100.0 else value
    return min(1.0, max(0.0, value))


async def judge(state: State, runtime: Runtime[Context], resources: Resources) -> dict:
    """Grade the answer: against the ground truth, else by self-judgement (unless turned off)."""
    ctx = Context.resolve(runtime.context)
    answers = split_answers(state.ground_truth)
    answer = state.answer or ""
    em: float | None
    f1: float | None
    if answers:
        em = exact_match(answer, answers)
        f1 = token_f1(answer, answers)
        if not answer:
            return {
                "reward": 0.0,
                "label": "negative",
                "reward_source": "exact_match",
                "exact_match": 0.0,
                "f1": 0.0,
                "judge_rationale": "no answer was produced",
            }
        system, task = (
            prompts.JUDGE_SYSTEM,
            prompts.JUDGE_TASK.format(question=state.question, references=" | ".join(answers), answer=answer),
        )
        source = "ground_truth_judge"
    elif ctx.self_judge and answer:
        em = f1 = None
        system, task = (
            prompts.SELF_JUDGE_SYSTEM,
            prompts.SELF_JUDGE_TASK.format(
                question=state.question,
                plan=json.dumps({"plan": state.plan}, ensure_ascii=False),
                results_block=prompts.format_results(state.subtask_results),
                tools_block=prompts.format_tool_calls(state.tool_calls),
                answer=answer,
            ),
        )
        source = "self_judge"
    else:
        return {
            "reward": None,
            "label": "unknown",
            "reward_source": "none",
            "exact_match": None,
            "f1": None,
            "judge_confidence": None,
        }

    model = resources.chat_model(ctx, "judge")
    usage = state.usage
    rationale = ""
    verdict = confidence = None
    errors = list(state.errors)
    try:
        reply = await ainvoke(model, [SystemMessage(system), HumanMessage(task)])
        usage = add_usage(usage, reply, ctx.judge_model)
        verdict, rationale = parse_verdict(text_of(reply))
        confidence = parse_confidence(text_of(reply))
    except ValueError as exc:
        errors.append(f"judge reply unusable: {exc}")
    except Exception as exc:
        # openai is imported only here: importing it with the graph delays `memento ask`'s first
        # output by about half a second (the chat model imports it when it is first called).
        from openai import APIError

        if not isinstance(exc, APIError | ModelReplyError):
            raise
        # A broken judge must not cost the run: the answer and its case are still worth keeping
        # (graded by exact match against a ground truth, or left unlabelled after a self-check).
        what = "self-judge failed" if source == "self_judge" else "judge call failed"
        tail = "; the case stays unlabelled" if source == "self_judge" else ""
        errors.append(f"{what} ({type(exc).__name__}: {exc}){tail}")
    if verdict is None:
        if source == "self_judge":
            return {"reward": None, "label": "unknown", "reward_source": "none", "usage": usage, "errors": errors}
        # The string metrics still give a trustworthy (strict) reward when the judge fails.
        reward = float(em or 0.0)  # em is set: a ground truth was given
        return {
            "reward": reward,
            "label": label_for_reward(reward),
            "reward_source": "exact_match",
            "exact_match": em,
            "f1": f1,
            "judge_model": None,
            "judge_rationale": "judge failed; reward is normalised exact match",
            "usage": usage,
            "errors": errors,
        }
    reward = 1.0 if verdict else 0.0
    return {
        "reward": reward,
        "label": label_for_reward(reward),
        "reward_source": source,
        "exact_match": em,
        "f1": f1,
        "judge_model": ctx.judge_model,
        "judge_rationale": rationale,
        "judge_confidence": confidence,
        "usage": usage,
        "errors": errors,
    }
