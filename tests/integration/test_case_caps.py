"""A huge answer through `memento ask`: the user gets all of it, the bank and later prompts a bounded part."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from evals.sim.openai_server import final, verdict
from graph.cli import app
from memory.bank import CaseBank

runner = CliRunner()


def test_huge_answer_is_capped_in_the_bank_and_in_later_prompts(agent_env, llm_server, monkeypatch, embedder):
    huge = "The answer is " + "very " * 40_000 + "long."  # ~200 KB
    llm_server.script("planner", final(huge))
    llm_server.script("judge", verdict(True))
    first = runner.invoke(app, ["ask", "How long is the longest answer?", "--ground-truth", huge, "--mcp-config", ""])
    assert first.exit_code == 0, first.output
    assert huge in first.stdout.replace("\n", "")  # the user still gets the full answer
    thread = re.search(r"thread (\w+)", first.output).group(1)

    (case,) = CaseBank(agent_env["MEMENTO_BANK_PATH"], embedder=embedder).list_cases()
    assert case.label == "positive"
    assert case.answer.startswith("The answer is very") and 4000 <= len(case.answer) < 4100
    assert f"full text in thread {thread}" in case.answer

    # A similar question shows the case, within the per-case prompt budget (default, then configured).
    monkeypatch.setenv("MEMENTO_WRITE_BACK", "false")  # only the huge case in the bank
    for budget in (None, 300):
        if budget:
            monkeypatch.setenv("MEMENTO_CASE_PROMPT_CHARS", str(budget))
        llm_server.script("planner", final("short"))
        llm_server.script("judge", verdict(True))
        again = runner.invoke(
            app, ["ask", "How long was the longest answer?", "--ground-truth", "short", "--mcp-config", ""]
        )
        assert again.exit_code == 0, again.output
        prompt = llm_server.requests_for("planner")[-1]["messages"][-1]["content"]
        block = prompt[prompt.index("<case id=") : prompt.index("</case>")]
        assert "The answer is very" in block and "characters]" in block
        assert len(block) < (budget or 2000) + 250, len(block)
