"""A simulated LLM whose success depends on which past cases its prompt shows.

It plugs into the scripted OpenAI-compatible server (`ScriptedOpenAI.respond_with`), so the real
graph, case bank, retrieval and policy run unchanged over real HTTP; only the model is simulated:

* planner — on the first cycle it writes a one-step plan (unless ``plan_first`` is off); once a
  subtask result is in the prompt it answers. It reads the ``<case id=… label=…>`` blocks and the task's ``Question:`` from the
  prompt, looks up each case's family by its question, and answers correctly with probability
  ``p = base + bonus·(same-family positives) + neg_bonus·(same-family negatives)
  − penalty·(other-family cases + mislabelled cases)``, clipped to ``[floor, cap]``. A
  mislabelled case says "positive" but carries a wrong answer: it misleads like a look-alike,
  and nothing in its text or its label tells similarity so.
* executor — returns a short note (no tools).
* judge — compares the predicted answer with the reference answers in its prompt; with
  ``wrong_label > 0`` it is lenient: a wrong answer is graded correct with that probability (a
  judge that lets mistakes through), so that share of failed tasks is stored as positive.

The draw is a hash of ``(seed, question, attempt)``: the same attempt at the same task draws the
same number in every memory mode (common random numbers), so differences between modes come from
the cases shown, not from luck. ``attempt`` counts finished tasks per question (judge calls).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from evals.metrics import exact_match, split_answers
from evals.sim.openai_server import ScriptedOpenAI, final, last_user_text, plan, verdict
from evals.sim.tasks import SimTask

_CASE = re.compile(
    r'<case id="(?P<id>[^"]*)" label="(?P<label>[^"]*)"[^>]*>\s*Question:\s*(?P<q>.*?)\n(?P<body>.*?)</case>', re.S
)
_CASE_ANSWER = re.compile(r"^Answer:\s*(?P<a>.*)$", re.M)
_CASE_BLOCK = re.compile(r"<case\b.*?</case>", re.S)
_QUESTION = re.compile(r"^Question:\s*(?P<q>.+)$", re.M)
_REFERENCES = re.compile(r"^Reference answers:\s*(?P<r>.*)$", re.M)
_PREDICTED = re.compile(r"^Predicted answer:\s*(?P<a>.*)$", re.M)
_ANSWER = re.compile(r"^Answer:\s*(.*)$", re.M)


@dataclass(frozen=True)
class SimParams:
    """How much shown cases move the simulated model's chance of success."""

    base: float = 0.25
    bonus: float = 0.3
    neg_bonus: float = 0.05
    penalty: float = 0.08
    floor: float = 0.02
    cap: float = 0.95
    wrong_label: float = 0.0


@dataclass(frozen=True)
class ShownCase:
    """A case block parsed out of a planner prompt."""

    id: str
    label: str
    question: str
    answer: str = ""


def parse_planner_prompt(text: str) -> tuple[str, list[ShownCase]]:
    """The task's question and the cases shown, from the planner's user message.

    Raises:
        ValueError: No ``Question:`` line outside the case blocks.

    """
    cases = []
    for m in _CASE.finditer(text):
        answer = _CASE_ANSWER.search(m["body"])
        cases.append(ShownCase(m["id"], m["label"], m["q"].strip(), answer["a"].strip() if answer else ""))
    rest = _CASE_BLOCK.sub("", text)
    found = _QUESTION.findall(rest)
    if not found:
        raise ValueError("no 'Question:' line in the planner prompt")
    return found[-1].strip(), cases


def success_probability(
    family: str | None, shown: list[tuple[str | None, str]] | list[tuple[str | None, str, bool]], params: SimParams
) -> float:
    """Chance of a correct answer given the shown cases.

    Args:
        family: The task's family.
        shown: Per shown case ``(family, label)`` or ``(family, label, answer_is_right)``; a
            positive case whose answer is wrong (a lenient judge's mistake) misleads.
        params: Effect sizes.

    """
    same_pos = same_neg = misleading = 0
    for item in shown:
        f, label = item[0], item[1]
        right = bool(item[2]) if len(item) > 2 else True
        if f != family or (label == "positive" and not right):
            misleading += 1
        elif label == "positive":
            same_pos += 1
        elif label == "negative":
            same_neg += 1
    p = params.base + params.bonus * same_pos + params.neg_bonus * same_neg - params.penalty * misleading
    return min(params.cap, max(params.floor, p))


def lenient_verdict(seed: int, question: str, attempt: int, correct: bool, wrong_label: float) -> bool:
    """The judge's verdict: right answers pass; wrong ones pass with probability ``wrong_label``."""
    return correct or uniform(seed, f"lenient|{question}", attempt) < wrong_label


def uniform(seed: int, question: str, attempt: int) -> float:
    """A deterministic draw in [0, 1) per (seed, task, attempt)."""
    digest = hashlib.sha256(f"{seed}|{question}|{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def wrong_answer(answer: str) -> str:
    """A plausible, always-wrong answer."""
    return f"unknown-{hashlib.sha256(answer.encode()).hexdigest()[:6]}"


@dataclass
class SimLLM:
    """Responders for one memory mode (planner, executor and judge model names end in ``-suffix``)."""

    tasks: list[SimTask]
    seed: int = 0
    params: SimParams = field(default_factory=SimParams)
    suffix: str = "sim"
    plan_first: bool = True
    decisions: list[dict[str, Any]] = field(default_factory=list)
    # Self-judge prompts (no reference answers): the verdict is right with this probability.
    judge_accuracy: float = 1.0

    def __post_init__(self) -> None:
        self._by_question = {t.question: t for t in self.tasks}
        self._attempts: Counter[str] = Counter()
        self._lock = threading.Lock()

    @property
    def models(self) -> dict[str, str]:
        """Model names to put in the run's Context."""
        return {role: f"sim-{role}-{self.suffix}" for role in ("planner", "executor", "judge")}

    def install(self, server: ScriptedOpenAI) -> SimLLM:
        """Register the three responders on a scripted server."""
        names = self.models
        server.respond_with(names["planner"], self.planner)
        server.respond_with(names["executor"], self.executor)
        server.respond_with(names["judge"], self.judge)
        return self

    def family_of(self, question: str) -> str | None:
        """The family of a known task question (None for anything else)."""
        task = self._by_question.get(question.strip())
        return task.family if task else None

    def planner(self, request: dict[str, Any]) -> str:
        """Plan on the first cycle, answer (right or wrong by the draw) once results are in."""
        text = last_user_text(request)
        question, cases = parse_planner_prompt(text)
        task = self._by_question.get(question)
        if self.plan_first and "Results of the subtasks so far:" not in text:
            family = task.family if task else "unknown"
            return plan([f"Recall how earlier {family} questions were resolved and apply the same rule."])
        if task is None:
            return final("I do not know")
        shown = [(self.family_of(c.question), c.label, self._answer_right(c)) for c in cases]
        p = success_probability(task.family, shown, self.params)
        with self._lock:
            attempt = self._attempts[question]
        u = uniform(self.seed, question, attempt)
        correct = u < p
        with self._lock:
            self.decisions.append(
                {
                    "task_id": task.task_id,
                    "attempt": attempt,
                    "p": p,
                    "correct": correct,
                    "same_family_positive": sum(1 for f, lab, _ in shown if f == task.family and lab == "positive"),
                    "other_family": sum(1 for f, _, _ in shown if f != task.family),
                    "mislabelled": sum(
                        1 for f, lab, right in shown if f == task.family and lab == "positive" and not right
                    ),
                }
            )
        return final(task.answer if correct else wrong_answer(task.answer))

    def _answer_right(self, case: ShownCase) -> bool:
        task = self._by_question.get(case.question.strip())
        return task is not None and case.answer.strip() == task.answer

    def executor(self, request: dict[str, Any]) -> str:
        """A plain-text subtask result."""
        return "Noted the rule from earlier cases; ready to answer."

    def judge(self, request: dict[str, Any]) -> str:
        """Grade by normalised exact match against the references in the prompt."""
        text = last_user_text(request)
        question = _QUESTION.search(text)
        refs = _REFERENCES.search(text)
        pred = _PREDICTED.search(text)
        attempt = 0
        if question:
            with self._lock:
                attempt = self._attempts[question["q"].strip()]
                self._attempts[question["q"].strip()] += 1
        if not refs and question and _ANSWER.search(text):
            return self._self_judge(question["q"].strip(), _ANSWER.findall(text)[-1].strip())
        if not refs or not pred:
            return json.dumps({"rationale": "unreadable judge prompt"})
        answers = split_answers(refs["r"].split(" | "))
        ok = bool(exact_match(pred["a"].strip(), answers))
        passed = lenient_verdict(
            self.seed, question["q"].strip() if question else "", attempt, ok, self.params.wrong_label
        )
        return verdict(passed, "matches a reference answer" if ok else "differs from every reference answer")

    def _self_judge(self, question: str, answer: str) -> str:
        """A noisy self-judge: it knows the task's answer but is right only with ``judge_accuracy``."""
        task = self._by_question.get(question)
        ok = task is not None and bool(exact_match(answer, [task.answer]))
        with self._lock:
            attempt = self._attempts[question]
        if uniform(self.seed, "self-judge|" + question, attempt) >= self.judge_accuracy:
            ok = not ok
        return json.dumps({"correct": ok, "confidence": self.judge_accuracy, "rationale": "simulated self-judge"})
