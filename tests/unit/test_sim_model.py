import json

from evals.sim.model import SimLLM, SimParams, parse_planner_prompt, success_probability, uniform
from evals.sim.tasks import generate_tasks
from nodes import prompts


def planner_request(model, question, cases, with_results=True):
    text = prompts.PLANNER_TASK.format(
        cases_block=prompts.format_cases(cases),
        question=question,
        results_block=prompts.format_results([{"id": 1, "description": "d", "result": "r"}]) if with_results else "",
        cycle=2,
        max_cycles=2,
        last_cycle_note=prompts.LAST_CYCLE_NOTE,
    )
    return {
        "model": model,
        "messages": [{"role": "system", "content": prompts.PLANNER_SYSTEM}, {"role": "user", "content": text}],
    }


def test_tasks_are_deterministic_distinct_and_share_surface_words():
    a, b = generate_tasks(4, 5, seed=1), generate_tasks(4, 5, seed=1)
    assert a == b and len(a) == 20
    assert len({t.question for t in a}) == 20
    assert {t.family for t in a} == {"f00", "f01", "f02", "f03"}
    assert generate_tasks(4, 5, seed=2) != a
    # Confusable pair: f00 and f01 differ only in the clause, contexts are shared.
    f00 = next(t for t in a if t.family == "f00")
    assert "shelf" in f00.question and "shelf" in next(t for t in a if t.family == "f01").question


def test_parse_planner_prompt_reads_real_prompt_format():
    cases = [
        {
            "id": "case-1",
            "label": "positive",
            "question": "Q one?",
            "plan": [{"id": 1, "description": "x"}],
            "answer": "A",
        },
        {"id": "case-2", "label": "negative", "question": "Q two?", "plan": [], "answer": ""},
    ]
    req = planner_request("m", "The real question?", cases)
    question, shown = parse_planner_prompt(req["messages"][1]["content"])
    assert question == "The real question?"
    assert [(c.id, c.label, c.question) for c in shown] == [
        ("case-1", "positive", "Q one?"),
        ("case-2", "negative", "Q two?"),
    ]


def test_success_probability_rewards_same_family_and_penalises_lookalikes():
    p = SimParams(base=0.3, bonus=0.2, neg_bonus=0.05, penalty=0.1, floor=0.05, cap=0.9)
    assert success_probability("f1", [], p) == 0.3
    assert success_probability("f1", [("f1", "positive"), ("f1", "negative")], p) == 0.55
    assert success_probability("f1", [("f2", "positive")] * 4, p) == 0.05
    assert success_probability("f1", [("f1", "positive")] * 5, p) == 0.9
    assert 0 <= uniform(0, "q", 0) < 1 and uniform(0, "q", 0) == uniform(0, "q", 0) != uniform(0, "q", 1)


def test_planner_and_judge_responders():
    tasks = generate_tasks(2, 3, seed=0)
    sim = SimLLM(tasks, seed=0, params=SimParams(base=0.0, bonus=1.0, floor=0.0, cap=1.0), suffix="t")
    task = tasks[0]
    same = next(t for t in tasks if t.family == task.family and t is not task)
    other = next(t for t in tasks if t.family != task.family)
    first = json.loads(sim.planner(planner_request("sim-planner-t", task.question, [], with_results=False)))
    assert "plan" in first
    # base 0: with no helpful case the answer is wrong; a same-family positive makes it right.
    wrong = json.loads(sim.planner(planner_request("m", task.question, [])))["final_answer"]
    assert wrong != task.answer
    pos = {"id": "c", "label": "positive", "question": same.question, "plan": [], "answer": same.answer}
    assert json.loads(sim.planner(planner_request("m", task.question, [pos])))["final_answer"] == task.answer
    neg_other = {**pos, "question": other.question}
    assert json.loads(sim.planner(planner_request("m", task.question, [neg_other])))["final_answer"] != task.answer

    judge_text = prompts.JUDGE_TASK.format(question=task.question, references=task.answer, answer=task.answer.upper())
    verdict = json.loads(sim.judge({"messages": [{"role": "user", "content": judge_text}]}))
    assert verdict["correct"] is True
    bad = prompts.JUDGE_TASK.format(question=task.question, references=task.answer, answer="nope")
    assert json.loads(sim.judge({"messages": [{"role": "user", "content": bad}]}))["correct"] is False
    assert sim.decisions[-1]["same_family_positive"] == 0 and sim.decisions[-1]["other_family"] == 1


def test_noisy_self_judge_is_right_with_its_accuracy():
    tasks = generate_tasks(10, 12, seed=0)
    sim = SimLLM(tasks, seed=0, suffix="t", judge_accuracy=0.8)
    right = 0
    for i, task in enumerate(tasks):
        answer = task.answer if i % 2 else "nope"
        text = prompts.SELF_JUDGE_TASK.format(
            question=task.question, plan='{"plan": []}', results_block="", tools_block="", answer=answer
        )
        verdict = json.loads(sim.judge({"messages": [{"role": "user", "content": text}]}))
        right += verdict["correct"] == bool(i % 2)
    assert 0.7 <= right / len(tasks) <= 0.9
    perfect = SimLLM(tasks, seed=0, suffix="p")
    text = prompts.SELF_JUDGE_TASK.format(
        question=tasks[0].question, plan="", results_block="", tools_block="", answer=tasks[0].answer
    )
    assert json.loads(perfect.judge({"messages": [{"role": "user", "content": text}]}))["correct"] is True
