"""write_back under hostile text, a failing bank, a damaged spool and a kill mid-way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.sim.openai_server import final, verdict
from graph.builder import compile_graph
from graph.persistence import open_checkpointer
from memory.bank import CaseBank

pytestmark = pytest.mark.anyio

SURROGATE_ANSWER = "Lima \ud800"  # a lone surrogate, as a "\ud800" escape in the model's JSON


def spool_of(ctx) -> Path:
    return Path(ctx.experience_path).with_name("pending_cases.jsonl")


async def run_with_spool(ctx, llm_server, thread_id, spool_text: str, question: str, answer: str) -> tuple[dict, Path]:
    """One answered and judged run of ``question`` with ``spool_text`` waiting in the spool; its output and the spool."""
    spool = spool_of(ctx)
    spool.parent.mkdir(parents=True, exist_ok=True)
    spool.write_text(spool_text, encoding="utf-8")
    llm_server.script("planner", final(answer))
    llm_server.script("judge", verdict(True))
    out = await compile_graph().ainvoke(
        {"question": question, "ground_truth": answer}, {"configurable": {"thread_id": thread_id}}, context=ctx
    )
    return out, spool


async def test_lone_surrogate_in_the_answer_is_stored_cleaned(ctx, llm_server, thread_id, tmp_path, embedder):
    llm_server.script("planner", final(SURROGATE_ANSWER))
    llm_server.script("judge", verdict(True))
    async with open_checkpointer(str(tmp_path / "cp.sqlite")) as saver:
        out = await compile_graph(saver).ainvoke(
            {"question": "Capital of Peru? \udcff", "ground_truth": "Lima"},
            {"configurable": {"thread_id": thread_id}},
            context=ctx,
        )
    assert out["case_written"] is True
    case = CaseBank(ctx.bank_path, embedder=embedder).get(out["case_id"])
    assert case.answer == "Lima \ufffd" and case.question == "Capital of Peru? \ufffd"


async def test_lone_surrogate_is_spooled_intact_when_the_bank_fails(
    ctx, llm_server, thread_id, tmp_path, monkeypatch, embedder
):
    import memory.bank

    llm_server.script("planner", final(SURROGATE_ANSWER))
    llm_server.script("judge", verdict(True))
    real_upsert = memory.bank.CaseBank.upsert
    monkeypatch.setattr(
        memory.bank.CaseBank, "upsert", lambda self, cases, **kw: (_ for _ in ()).throw(OSError("disk full"))
    )
    config = {"configurable": {"thread_id": thread_id}}
    async with open_checkpointer(str(tmp_path / "cp.sqlite")) as saver:
        graph = compile_graph(saver)
        with pytest.raises(RuntimeError, match=r"pending_cases\.jsonl"):
            await graph.ainvoke({"question": "Capital of Peru?", "ground_truth": "Lima"}, config, context=ctx)
        rows = [json.loads(line) for line in spool_of(ctx).read_text(encoding="utf-8").splitlines()]
        assert [r["answer"] for r in rows] == ["Lima \ufffd"]
        monkeypatch.setattr(memory.bank.CaseBank, "upsert", real_upsert)
        out = await graph.ainvoke(None, config, context=ctx)
    assert out["case_written"] is True and not spool_of(ctx).exists()
    # The checkpointer itself stores the surrogate as "?"; either way the text is encodable now.
    answer = CaseBank(ctx.bank_path, embedder=embedder).get(out["case_id"]).answer
    assert answer in ("Lima \ufffd", "Lima ?") and answer.encode("utf-8")


async def test_damaged_spool_line_is_set_aside_and_good_lines_are_written(ctx, llm_server, thread_id, embedder):
    from memory.cases import Case

    waiting = Case(question="Spooled earlier?", answer="yes")
    torn = '{"question": "torn line\n' + json.dumps(waiting.to_dict()) + "\n"
    out, spool = await run_with_spool(ctx, llm_server, thread_id, torn, "Capital of Peru?", "Lima")
    assert out["case_written"] is True
    bank = CaseBank(ctx.bank_path, embedder=embedder)
    assert bank.get(waiting.id).answer == "yes" and bank.count() == 2
    assert not spool.exists()
    assert spool.with_name(spool.name + ".bad").read_text(encoding="utf-8") == '{"question": "torn line\n'


async def test_kill_between_usage_and_outcome_does_not_count_usage_twice(
    ctx, llm_server, thread_id, tmp_path, monkeypatch, embedder
):
    import memory.experience
    from memory.cases import Case

    bank = CaseBank(ctx.bank_path, embedder=embedder)
    shown = Case(question="What is the capital of Peru?", answer="Lima", reward=1.0)
    bank.upsert(shown)
    llm_server.script("planner", final("Lima"))
    llm_server.script("judge", verdict(True))
    real_log_outcome = memory.experience.ExperienceLog.log_outcome

    def killed(self, *args, **kwargs):
        raise RuntimeError("killed")  # the process dies after record_usage, before the outcome row

    monkeypatch.setattr(memory.experience.ExperienceLog, "log_outcome", killed)
    config = {"configurable": {"thread_id": thread_id}}
    async with open_checkpointer(str(tmp_path / "cp.sqlite")) as saver:
        graph = compile_graph(saver)
        with pytest.raises(RuntimeError, match="killed"):
            await graph.ainvoke({"question": "Capital of Peru?", "ground_truth": "Lima"}, config, context=ctx)
        assert bank.get(shown.id).times_retrieved == 1
        monkeypatch.setattr(memory.experience.ExperienceLog, "log_outcome", real_log_outcome)
        out = await graph.ainvoke(None, config, context=ctx)
    assert [c["id"] for c in out["cases"]] == [shown.id]
    after = bank.get(shown.id)
    assert (after.times_retrieved, after.retrieved_successes) == (1, 1)


async def test_a_spooled_attempt_joins_the_history_other_runs_wrote_meanwhile(ctx, llm_server, thread_id, embedder):
    """The bank was down for one run (its case waits in the spool) while another run of the same
    question was stored: the replay adds the spooled attempt instead of replacing that history."""
    from memory.cases import Case
    from memory.outcomes import attempt_record, merge_attempt

    bank = CaseBank(ctx.bank_path, embedder=embedder)
    question = "Capital of Peru?"

    def attempt_case(attempt_id: str, answer: str, reward: float) -> Case:
        case = Case(question=question, answer=answer, reward=reward, reward_source="ground_truth_judge")
        attempt = attempt_record(attempt_id, retrieval_id=None, reward=reward, label=case.label,
                                 reward_source="ground_truth_judge", answer=answer)  # fmt: skip
        return merge_attempt(None, case, attempt)

    stored = attempt_case("stored-meanwhile", "Lima", 1.0)
    bank.upsert(stored)
    spooled = attempt_case("spooled-earlier", "Cusco", 0.0)
    line = json.dumps(spooled.to_dict()) + "\n"
    out, spool = await run_with_spool(ctx, llm_server, thread_id, line, "Capital of France?", "Paris")
    assert out["case_written"] is True and not spool.exists()
    case = bank.get(stored.id)
    assert [a["id"] for a in case.attempt_log] == ["stored-meanwhile", "spooled-earlier"]
    assert case.attempts == 2
    assert case.answer == "Cusco"  # equally trusted labels: the later attempt is the one shown
