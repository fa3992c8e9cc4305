"""Evaluators: plain functions LangSmith calls with ``(inputs, outputs, reference_outputs)``."""

from __future__ import annotations

from evals.metrics import exact_match, is_correct, token_f1


def correctness(inputs: dict, outputs: dict, reference_outputs: dict) -> dict:
    """The graph judge's verdict (or exact match when it had none), with its rationale."""
    reward = outputs.get("reward")
    ok = is_correct(reward, exact_match(outputs.get("answer"), reference_outputs.get("ground_truth")))
    judge = outputs.get("judge_model") or outputs.get("reward_source") or "none"
    return {
        "key": "correctness",
        "score": None if ok is None else float(ok),
        "comment": f"[{judge}] {outputs.get('judge_rationale') or ''}".strip(),
    }


def exact_match_evaluator(inputs: dict, outputs: dict, reference_outputs: dict) -> dict:
    """Normalised exact match against any reference alternative."""
    return {"key": "exact_match", "score": exact_match(outputs.get("answer"), reference_outputs.get("ground_truth"))}


def f1_evaluator(inputs: dict, outputs: dict, reference_outputs: dict) -> dict:
    """Best token F1 against the reference alternatives."""
    return {"key": "f1", "score": token_f1(outputs.get("answer"), reference_outputs.get("ground_truth"))}


EVALUATORS = (correctness, exact_match_evaluator, f1_evaluator)
