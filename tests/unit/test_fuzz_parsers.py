"""Fuzz-style: hostile text into the planner, judge and executor parsers and the importer.

Every parser either returns a result or raises ValueError (the path that becomes a recorded
failure or a repair prompt); nothing else may escape. Valid inputs hidden among hostile ones are
still read, and every valid import row is written.
"""

from __future__ import annotations

import contextlib
import json
import random

import pytest
from langchain_core.messages import AIMessage
from langchain_openai.chat_models.base import _convert_dict_to_message

from memory.bank import CaseBank
from memory.embeddings import HashEmbedder
from memory.io import import_jsonl
from nodes.json_output import extract_json_object
from nodes.judge import parse_verdict
from nodes.models import ModelReplyError, ainvoke, text_of
from nodes.plan import parse_planner_reply
from nodes.tools import _invalid_call_result

DEEP = 50_000


def deep(open_: str, close: str, depth: int = DEEP) -> str:
    return open_ * depth + close * depth


def hostile_texts() -> list[str]:
    rng = random.Random(12)
    nested_dict = '{"a": ' * 900 + "1" + "}" * 900  # parses, but is nearly at the decoder's limit
    fixed = [
        "",
        " ",
        "\x00",
        "\ufeff",
        "\ud800",
        '\udcff{"plan": 1}',
        "{",
        "}",
        "{{{{",
        "}}}}",
        '"',
        '{"',
        "```",
        "```json",
        "```json\n{",
        deep("[", "]"),
        deep("{", "}"),
        '{"plan": ' + deep("[", "]") + "}",
        '{"final_answer": ' + deep("[", "]") + "}",
        '{"plan": [{"description": ' + nested_dict + "}]}",
        '{"final_answer": "x", "rationale": ' + nested_dict + "}",
        '{"correct": true, "rationale": ' + nested_dict + "}",
        '{"correct": ' + deep("[", "]") + "}",
        '{"plan": null}',
        '{"plan": 5}',
        '{"plan": "do it"}',
        '{"plan": []}',
        '{"plan": [null, 3, true, []]}',
        '{"plan": [{"description": null}]}',
        '{"plan": [{"description": {"x": 1}}]}',
        '{"final_answer": null}',
        '{"final_answer": {}}',
        '{"final_answer": []}',
        '{"final_answer": 1e400}',
        '{"final_answer": NaN}',
        '{"answer": -Infinity}',
        '{"correct": "maybe"}',
        '{"correct": null}',
        '{"correct": 1}',
        '{"correct": [true]}',
        '{"plan": [{"description": "' + "x" * 2_000_000 + '"}]}',
        '{"final_answer": "' + "\\ud800" * 1000 + '"}',
        "\\u0000" * 10_000,
        "{" + '"k": 1, ' * 100_000 + '"plan": ["last"]}',
        "[" + "1," * 100_000 + "1]",
        '{"a": "\\',
        '{"a": "\\u12',
        "{'plan': ['single quotes']}",
        bytes(range(256)).decode("latin-1"),
        bytes(rng.randrange(256) for _ in range(5000)).decode("utf-8", errors="replace"),
    ]
    fuzzed = []
    seeds = [
        '{"plan": [{"id": 1, "description": "look"}]}',
        '{"final_answer": "Lima"}',
        '{"correct": true, "rationale": "ok"}',
    ]
    alphabet = '{}[]":,\\ \n`aeu0123456789.-+eE' + "\ud800\x00\u2028"
    for _ in range(300):
        chars = list(rng.choice(seeds))
        for _ in range(rng.randrange(1, 6)):
            pos = rng.randrange(len(chars) + 1)
            op = rng.random()
            if op < 0.4:
                chars.insert(pos, rng.choice(alphabet))
            elif op < 0.7 and chars:
                del chars[min(pos, len(chars) - 1)]
            else:
                chars[pos:pos] = list(rng.choice(seeds))
        fuzzed.append("".join(chars))
    return fixed + fuzzed


CORPUS = hostile_texts()


@pytest.mark.parametrize(
    "parse", [extract_json_object, lambda t: parse_planner_reply(t, 6), parse_verdict], ids=["json", "planner", "judge"]
)
def test_parsers_raise_only_value_error(parse):
    for text in CORPUS:
        with contextlib.suppress(ValueError):  # the recorded-failure path
            parse(text)


@pytest.mark.parametrize(
    "wrapper",
    [
        "{}",
        "Here you go:\n{}\nThanks!",
        "```json\n{}\n```",
        "```\n{}\n```",
        "{} trailing {{{{",
        "[1, 2] {}",
        '{{"bad": }} {}',
        "\ud800 {} \udcff",
    ],
)
def test_valid_replies_inside_hostile_text_are_still_read(wrapper):
    def wrap(payload: dict) -> str:
        return wrapper.replace("{}", json.dumps(payload, ensure_ascii=False), 1)

    steps = parse_planner_reply(wrap({"plan": [{"id": 1, "description": "look it up"}, "then answer"]}), 6).steps
    assert steps == [{"id": 1, "description": "look it up"}, {"id": 2, "description": "then answer"}]
    assert parse_planner_reply(wrap({"final_answer": "Lima \u00e9\U0001f600"}), 6).answer == "Lima \u00e9\U0001f600"
    assert parse_verdict(wrap({"correct": "yes", "rationale": "matches"})) == (True, "matches")


class RawReplyModel:
    """Builds the reply from a raw API message dict the way ChatOpenAI does."""

    def __init__(self, raw: dict):
        self.raw = raw

    async def ainvoke(self, messages):
        return _convert_dict_to_message(self.raw)


@pytest.mark.anyio
async def test_executor_tool_calls_with_hostile_arguments_become_error_results():
    unreadable = 0
    for i, text in enumerate(CORPUS[:150]):
        raw = {
            "role": "assistant",
            "content": text,
            "tool_calls": [
                {"id": f"call_{i}", "type": "function", "function": {"name": "math_add", "arguments": text}},
                {
                    "id": f"ok_{i}",
                    "type": "function",
                    "function": {"name": "math_add", "arguments": '{"a": 1, "b": 2}'},
                },
            ],
        }
        try:
            message = await ainvoke(RawReplyModel(raw), [])
        except ModelReplyError as exc:
            # JSON that is not an object cannot become a message at all: a recorded subtask error.
            assert "chat message format" in str(exc)
            unreadable += 1
            continue
        text_of(message)
        # The valid call is never lost beside a broken one.
        assert {
            "name": "math_add",
            "args": {"a": 1, "b": 2},
            "id": f"ok_{i}",
            "type": "tool_call",
        } in message.tool_calls
        for bad in message.invalid_tool_calls:
            result = _invalid_call_result(bad, "fallback")
            assert result.status == "error" and result.tool_call_id == f"call_{i}" and len(result.content) < 1000
    assert unreadable < 20
    for bad in (
        {},
        {"name": None, "args": None, "id": None},
        {"name": "x" * 10_000, "args": "\ud800" * 10_000, "id": "c", "error": None},
    ):
        assert _invalid_call_result(bad, "fallback").status == "error"
    assert text_of(
        AIMessage(content=[{"type": "text", "text": "a"}, "b", {"type": "image"}, {"text": None}])
    ).startswith("ab")


def test_importer_keeps_every_valid_row_among_hostile_ones(tmp_path):
    valid = [
        json.dumps({"question": f"Valid question {i}?", "plan": [{"id": 1, "description": "step"}], "reward": i % 2})
        for i in range(40)
    ]
    hostile = [
        *(t for t in CORPUS if "\n" not in t and "\r" not in t and "\u2028" not in t and len(t) < 3_000_000),
        json.dumps({"question": "x" * 30_000}),
        json.dumps({"question": "wrong plan", "plan": {"plan": 5}}),
        json.dumps({"question": ["not", "text"]}),
        json.dumps({"question": "reward text", "reward": "1"}),
        json.dumps({"question": "reward big", "reward": 1e308}),
        json.dumps({"question": "deep plan", "plan": json.loads('{"a": ' * 500 + "1" + "}" * 500)}),
        json.dumps({"question": "task id list", "task_id": [1]}),
    ]
    rng = random.Random(5)
    lines = valid + hostile
    rng.shuffle(lines)
    f = tmp_path / "hostile.jsonl"
    with open(f, "wb") as fh:
        for line in lines:
            fh.write(line.encode("utf-8", errors="surrogatepass") + b"\n")
        fh.write(b"\xff\xfe\x00garbage bytes\n")
        fh.write(b"{" * 3_000_000 + b"\n")  # over the line limit
    bank = CaseBank(tmp_path / "bank", embedder=HashEmbedder(32))
    report = import_jsonl(bank, f, fmt="qpr")
    questions = {c.question for c in bank.iter_cases()}
    assert {f"Valid question {i}?" for i in range(40)} <= questions
    assert report.written == len(questions) and len(report.errors) >= len(hostile) - 10
    assert all(isinstance(e.line, int) and e.message for e in report.errors)
