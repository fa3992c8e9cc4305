"""Human approval through the real CLI: the thread keeps its policy, a rejection never runs the tool."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from evals.sim.openai_server import final, plan, tool_call, verdict
from memory.experience import ExperienceLog


def memento(*args: str, env: dict) -> tuple[int, str, str]:
    """Run `memento` as a new process, as a user does (stdio MCP servers need real file handles)."""
    full = {**os.environ, **env}
    # Plain piped output whatever the calling shell sets: these would make Rich treat the pipe
    # as a terminal (colour codes inside the checked lines, the spinner).
    for forced in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        full.pop(forced, None)
    proc = subprocess.run(
        [sys.executable, "-m", "graph", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=full,
        stdin=subprocess.DEVNULL,  # not a terminal: the CLI pauses instead of prompting
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("answer", ["--reject", "--approve"])
def test_resume_applies_the_threads_policy_and_records_the_decision(answer, agent_env, llm_server):
    approved = answer == "--approve"
    llm_server.script("planner", plan(["Compute 74^2"]), final("5476" if approved else "unknown"))
    llm_server.script(
        "executor", tool_call("math_evaluate", {"expression": "74^2"}), "74^2 = 5476" if approved else "refused"
    )
    llm_server.script("judge", verdict(approved))
    env = {**agent_env, "MEMENTO_MEMORY_MODE": "none", "MEMENTO_WRITE_BACK": "false"}

    code, _, err = memento("ask", "What is 74 squared?", "--ground-truth", "5476", "--sensitive", "math", env=env)
    assert code == 3, err
    thread = re.search(r"memento ask --thread (\S+) --approve \(or --reject\)", err).group(1)

    # Exactly the printed command: no --sensitive, nothing in the environment. The thread's own
    # policy must still apply.
    code, out, err = memento("ask", "--thread", thread, answer, "--json", env=env)
    assert code == 0, err
    state = json.loads(out)
    call = state["tool_calls"][0]
    assert call["name"] == "math_evaluate" and call["approved"] is approved
    tool_msg = llm_server.requests_for("executor")[1]["messages"][-1]
    assert tool_msg["role"] == "tool"
    if approved:
        assert call["status"] == "success" and "5476" in call["result"] and "5476" in tool_msg["content"]
    else:
        # The tool never ran: the model was told a person rejected it, and no result exists.
        assert call["status"] == "error" and "rejected" in call["result"] and "5476" not in call["result"]
        assert "rejected" in tool_msg["content"] and "5476" not in tool_msg["content"]
    assert state["sensitive_tools"] == ["math"]

    (decision,) = state["approvals"]
    assert decision["approved"] is approved and decision["tool"] == "math_evaluate"
    assert decision["by"].startswith("cli:") and decision["at"] > 0
    (logged,) = ExperienceLog(agent_env["MEMENTO_EXPERIENCE_PATH"]).approvals(thread)
    assert logged["approved"] is approved and logged["by"] == decision["by"]
    assert logged["tool"] == "math_evaluate" and logged["args"] == {"expression": "74^2"}
    assert ("approved" if approved else "rejected") + " math_evaluate by cli:" in err
