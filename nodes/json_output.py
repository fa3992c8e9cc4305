"""Pull one JSON object out of model text: code fences, prose around it, trailing commas."""

from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


def _balanced_objects(text: str) -> list[str]:
    """Every top-level ``{...}`` span, honouring strings and escapes."""
    spans, depth, start, in_str, escape = [], 0, -1, False, False
    for i, ch in enumerate(text):
        if in_str:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"':
            in_str = True
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                spans.append(text[start : i + 1])
    return spans


def extract_json_object(text: str) -> dict[str, Any]:
    """The first JSON object found in ``text``.

    Raises:
        ValueError: No parsable object; the message says what was wrong.

    """
    if not text or not text.strip():
        raise ValueError("the reply was empty")
    candidates = [m.strip() for m in _FENCE.findall(text)] + [text.strip()]
    last_error = "no JSON object found"
    for chunk in candidates:
        # A chunk that is not JSON-shaped at all is prose: nothing to parse in it.
        spans = _balanced_objects(chunk) or ([chunk] if chunk.startswith(("{", "[")) else [])
        for span in spans:
            for attempt in (span, re.sub(r",\s*([}\]])", r"\1", span)):
                try:
                    value = json.loads(attempt)
                except json.JSONDecodeError as exc:
                    last_error = f"invalid JSON ({exc.msg} at position {exc.pos})"
                    continue
                except RecursionError:
                    # Hostile or runaway output: the decoder recurses once per nesting level.
                    last_error = "the JSON is nested too deeply to read"
                    continue
                if isinstance(value, dict):
                    return value
                last_error = f"expected a JSON object, got {type(value).__name__}"
    raise ValueError(last_error)
