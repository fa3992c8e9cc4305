"""`langgraph dev` serves the graph offline; one question end to end through the SDK client."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from evals.sim.openai_server import final, plan, tool_call, verdict

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.anyio


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dev_server(agent_env, tmp_path):
    exe = shutil.which("langgraph", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("langgraph CLI not installed (pip install 'langgraph-cli[inmem]')")
    port = free_port()
    log = open(tmp_path / "dev.log", "w")  # noqa: SIM115 - the server writes to it until teardown
    proc = subprocess.Popen(
        [
            exe,
            "dev",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--no-browser",
            "--no-reload",
            "--config",
            str(ROOT / "langgraph.json"),
        ],
        cwd=ROOT,  # langgraph.json paths are relative to the working directory
        env={**os.environ, **agent_env, "LANGGRAPH_CLI_NO_ANALYTICS": "1", "LANGGRAPH_NO_VERSION_CHECK": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"langgraph dev exited:\n{(tmp_path / 'dev.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"langgraph dev did not start in 120s:\n{(tmp_path / 'dev.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
        log.close()


async def test_dev_server_runs_a_question_and_exposes_the_context_schema(dev_server, llm_server, agent_env, tmp_path):
    from langgraph_sdk import get_client

    llm_server.script("planner", plan(["Compute 2^10"]), final("1024"))
    llm_server.script("executor", tool_call("math_evaluate", {"expression": "2^10"}), "2^10 = 1024")
    llm_server.script("judge", verdict(True, "same number"))
    client = get_client(url=dev_server)
    assistants = await client.assistants.search(graph_id="memento")
    assert assistants, "the memento graph is not registered"
    assistant_id = assistants[0]["assistant_id"]

    schemas = await client.assistants.get_schemas(assistant_id)
    props = schemas["context_schema"]["properties"]
    assert {"planner_model", "k", "max_cycles", "memory_mode", "bank_path", "mcp_config"} <= set(props)
    assert props["k"]["default"] == 4 and props["max_cycles"]["default"] == 3
    assert "description" in props["memory_mode"]
    assert "question" in schemas["input_schema"]["properties"]

    thread = await client.threads.create()
    result = await client.runs.wait(
        thread["thread_id"],
        assistant_id,
        input={"question": "What is 2 to the 10th power?", "ground_truth": "1024"},
        context={"k": 2},
    )
    assert result["answer"] == "1024", result
    assert result["reward"] == 1.0 and result["case_written"] is True
    assert result["tool_calls"][0]["name"] == "math_evaluate" and "1024" in result["tool_calls"][0]["result"]
    assert (Path(agent_env["MEMENTO_BANK_PATH"]) / "chroma.sqlite3").exists()

    # A person's feedback on the finished thread, as the SDK (or Studio) sends it: a run whose
    # input is only `feedback`. It relabels the run's case without re-running anything.
    assert "feedback" in schemas["input_schema"]["properties"]
    feedback = await client.runs.wait(
        thread["thread_id"],
        assistant_id,
        input={"feedback": {"good": False, "note": "checked by hand"}},
        context={"k": 2},
    )
    assert feedback["label"] == "negative" and feedback["reward_source"] == "human", feedback
    assert feedback["answer"] == "1024" and feedback["judge_rationale"] == "checked by hand"
    from memory.bank import CaseBank

    case = CaseBank(agent_env["MEMENTO_BANK_PATH"]).get(result["case_id"])
    assert case.label == "negative" and case.reward_source == "human"


async def test_dev_server_unreachable_model_returns_the_configuration_help(dev_server):
    """A client of `langgraph dev` gets the CLI's setup help, not "An internal error occurred"."""
    from langgraph_sdk import get_client

    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    client = get_client(url=dev_server)
    thread = await client.threads.create()
    result = await client.runs.wait(
        thread["thread_id"],
        "memento",
        input={"question": "What is 2 + 2?"},
        context={"base_url": dead, "max_retries": 0, "memory_mode": "none", "mcp_config": ""},
        raise_error=False,
    )
    error = result.get("__error__") or {}
    assert error.get("error") == "ModelEndpointError", result
    assert dead in error["message"] and "OPENAI_BASE_URL" in error["message"] and "Ollama" in error["message"]
    runs = await client.runs.list(thread["thread_id"])
    assert runs[0]["status"] == "error"


async def test_sdk_rejection_resumed_without_settings_never_runs_the_tool(dev_server, llm_server, agent_env):
    """The approval policy travels with the thread: a resume that sends no context still applies it."""
    from langgraph_sdk import get_client

    from memory.experience import ExperienceLog

    llm_server.script("planner", plan(["Compute 74^2"]), final("unknown"))
    llm_server.script("executor", tool_call("math_evaluate", {"expression": "74^2"}), "refused")
    llm_server.script("judge", verdict(False))
    client = get_client(url=dev_server)
    thread = await client.threads.create()
    paused = await client.runs.wait(
        thread["thread_id"],
        "memento",
        input={"question": "What is 74 squared?", "ground_truth": "5476"},
        context={"sensitive_tools": ["math"], "memory_mode": "none", "write_back": False},
    )
    assert paused["__interrupt__"][0]["value"]["tool_calls"][0]["name"] == "math_evaluate", paused

    result = await client.runs.wait(
        thread["thread_id"], "memento", command={"resume": {"approved": False, "by": "sdk:alice"}}
    )
    (call,) = result["tool_calls"]
    assert call["approved"] is False and call["status"] == "error" and "5476" not in call["result"]
    assert "rejected" in llm_server.requests_for("executor")[1]["messages"][-1]["content"]
    (decision,) = result["approvals"]
    assert decision["approved"] is False and decision["by"] == "sdk:alice"
    (logged,) = ExperienceLog(agent_env["MEMENTO_EXPERIENCE_PATH"]).approvals(thread["thread_id"])
    assert logged["approved"] is False and logged["by"] == "sdk:alice" and logged["tool"] == "math_evaluate"
