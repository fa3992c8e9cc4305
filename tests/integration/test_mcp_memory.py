"""The `memory` MCP server: another agent searches, reads, grows and scores a real case bank."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_mcp_adapters.tools import load_mcp_tools

from memory.cases import Case
from memory.experience import ExperienceLog

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


async def call(tools, name: str, **args):
    msg = await tools[name].ainvoke({"type": "tool_call", "id": "1", "name": name, "args": args})
    text = "".join(block["text"] for block in msg.content if block.get("type") == "text")
    if msg.status == "error":
        return {"error": text}
    return (msg.artifact or {}).get("structured_content") or json.loads(text)


async def test_search_get_report_and_add_over_mcp(tmp_path, bank):
    seeded = [
        Case(
            question="What is the capital of France?",
            answer="Paris",
            plan=["look it up"],
            reward=1.0,
            label="positive",
        ),
        Case(
            question="Which river flows through Paris?",
            answer="Seine",
            plan=["search"],
            reward=0.0,
            label="negative",
        ),
        Case(
            question="How many legs does a spider have?",
            answer="8",
            plan=["recall"],
            reward=1.0,
            label="positive",
        ),
    ]
    bank.upsert(seeded)
    experience_path = tmp_path / "experience.sqlite"
    client = MultiServerMCPClient(
        {
            "memory": {
                "transport": "stdio",
                "command": sys.executable,
                "args": ["-m", "mcp_servers.memory"],
                "cwd": str(REPO),
                "env": {
                    "MEMENTO_BANK_PATH": str(bank.path),
                    "MEMENTO_EXPERIENCE_PATH": str(experience_path),
                    "MEMENTO_NAMESPACE": "default",
                },
            }
        }
    )
    async with client.session("memory") as session:
        tools = {t.name: t for t in await load_mcp_tools(session)}

        found = await call(tools, "search_cases", query="capital city of France", k=2)
        assert found["cases"][0]["id"] == seeded[0].id
        assert found["cases"][0]["answer"] == "Paris" and found["cases"][0]["plan"] == [
            {"id": 1, "description": "look it up"}
        ]
        assert len(found["cases"]) == 2 and found["cases"][0]["similarity"] > found["cases"][1]["similarity"]
        negatives = await call(tools, "search_cases", query="capital city of France", k=3, label="negative")
        assert [c["id"] for c in negatives["cases"]] == [seeded[1].id]

        got = await call(tools, "get_case", case_id=seeded[2].id)
        assert got["question"] == seeded[2].question and got["label"] == "positive"

        reported = await call(tools, "report_outcome", retrieval_id=found["retrieval_id"], reward=1.0)
        assert reported["recorded"] == [c["id"] for c in found["cases"]] and reported["success"] is True
        after = await call(tools, "get_case", case_id=seeded[0].id)
        assert after["times_retrieved"] == 1

        added = await call(
            tools,
            "add_case",
            question="What is the boiling point of water at sea level in Celsius?",
            answer="100",
            plan=["recall physics"],
            reward=1.0,
            task_id="t-1",
        )
        assert added["label"] == "positive"
        again = await call(tools, "search_cases", query="water boiling temperature", k=1)
        assert again["cases"][0]["id"] == added["case_id"] and again["cases"][0]["answer"] == "100"
        stats = await call(tools, "bank_stats")
        assert stats["cases"] == 4 and stats["by_label"] == {"positive": 3, "negative": 1}

        # Bad input: a clear error, nothing lost, and the session keeps serving.
        for name, args, expected in [
            ("get_case", {"case_id": "case-missing"}, "no case"),
            ("search_cases", {"query": "x", "k": 0}, "k must be"),
            ("search_cases", {"query": "x", "label": "great"}, "label must be"),
            ("report_outcome", {"reward": 2.0, "case_ids": [seeded[0].id]}, "between 0 and 1"),
            ("report_outcome", {"reward": 1.0, "retrieval_id": "nope"}, "no retrieval"),
            ("report_outcome", {"reward": 1.0}, "retrieval_id"),
            ("add_case", {"question": " ", "answer": "x"}, "non-empty question"),
        ]:
            result = await call(tools, name, **args)
            assert expected in result.get("error", ""), (name, result)
        assert (await call(tools, "bank_stats"))["cases"] == 4

    # The outcome landed in the experience log, joined to the retrieval the search logged.
    records = list(ExperienceLog(experience_path).records())
    assert [r["retrieval_id"] for r in records] == [found["retrieval_id"]]
    assert records[0]["reward"] == 1.0 and records[0]["query"] == "capital city of France"
