"""A scripted OpenAI-compatible HTTP server: the test suite's LLM and the simulator's transport.

It answers ``POST /v1/chat/completions`` (plain and streamed) and ``POST /v1/embeddings`` on
127.0.0.1, so the real ``ChatOpenAI`` client, tool calling and JSON parsing run over real HTTP.
Replies are scripted per model name (planner, executor and judge use different model names), either
as a queue of canned replies or as a function of the request.

    with ScriptedOpenAI() as llm:
        llm.script("planner", plan(["look it up"]))
        llm.script("executor", tool_call("add", {"a": 1, "b": 2}), "3")
        ChatOpenAI(model="planner", base_url=llm.url, api_key="test")
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = str | dict[str, Any]
Responder = Callable[[dict[str, Any]], Reply]

_ids = itertools.count(1)


def tool_call(name: str, args: dict[str, Any] | None = None, *more: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """A reply that calls one tool (or several: pass extra ``(name, args)`` tuples)."""
    calls = [(name, args or {}), *more]
    return {
        "content": "",
        "tool_calls": [
            {"id": f"call_{next(_ids)}", "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
            for n, a in calls
        ],
    }


def plan(steps: list[str]) -> str:
    """A planner reply holding a JSON plan."""
    return json.dumps({"plan": [{"id": i, "description": s} for i, s in enumerate(steps, 1)]})


def final(answer: str) -> str:
    """A planner reply holding a final answer."""
    return json.dumps({"final_answer": answer})


def verdict(correct: bool, rationale: str = "scripted") -> str:
    """A judge reply."""
    return json.dumps({"correct": correct, "rationale": rationale})


def error(status: int, message: str = "scripted failure") -> dict[str, Any]:
    """A reply that is an HTTP error."""
    return {"__error__": status, "message": message}


def last_user_text(request: dict[str, Any]) -> str:
    """Text of the last user message of a chat request."""
    for msg in reversed(request.get("messages", [])):
        if msg.get("role") == "user":
            content = msg.get("content")
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return content or ""
    return ""


def fake_embedding(text: str, dim: int = 32) -> list[float]:
    """Deterministic unit vector from a text hash."""
    raw = hashlib.sha256(text.encode()).digest() * ((dim // 32) + 1)
    vec = [b / 255.0 - 0.5 for b in raw[:dim]]
    norm = sum(v * v for v in vec) ** 0.5 or 1.0
    return [v / norm for v in vec]


class ScriptedOpenAI:
    """The server; thread-safe, records every request it receives."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        """Bind to a free loopback port (started by `start` or the context manager)."""
        self._queues: dict[str, deque[Reply]] = defaultdict(deque)
        self._responders: dict[str, Responder] = {}
        self._lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.delay = 0.0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": []})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path.endswith("/embeddings"):
                    inputs = body.get("input")
                    inputs = [inputs] if isinstance(inputs, str) else inputs
                    data = [
                        {"object": "embedding", "index": i, "embedding": fake_embedding(t)}
                        for i, t in enumerate(inputs)
                    ]
                    self._send(
                        200,
                        {
                            "object": "list",
                            "data": data,
                            "model": body.get("model"),
                            "usage": {"prompt_tokens": 0, "total_tokens": 0},
                        },
                    )
                    return
                if not self.path.endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                with server._lock:
                    server.requests.append(body)
                try:
                    reply = server._next_reply(body)
                except LookupError as exc:
                    self._send(500, {"error": {"message": str(exc), "type": "scripted_server_error"}})
                    return
                if server.delay:
                    time.sleep(server.delay)
                if isinstance(reply, dict) and "__error__" in reply:
                    self._send(reply["__error__"], {"error": {"message": reply["message"], "type": "scripted"}})
                    return
                message = (
                    {"role": "assistant", "content": reply}
                    if isinstance(reply, str)
                    else {"role": "assistant", **reply}
                )
                if body.get("stream"):
                    self._stream(body, message)
                else:
                    self._send(200, server._completion(body, message))

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, body: dict[str, Any], message: dict[str, Any]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                base = {
                    "id": f"chatcmpl-{next(_ids)}",
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": body.get("model"),
                }
                delta: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
                if message.get("tool_calls"):
                    delta["tool_calls"] = [{"index": i, **tc} for i, tc in enumerate(message["tool_calls"])]
                chunks: list[dict[str, Any]] = [
                    {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
                    {
                        **base,
                        "choices": [
                            {
                                "index": 0,
                                "delta": {},
                                "finish_reason": "tool_calls" if message.get("tool_calls") else "stop",
                            }
                        ],
                    },
                ]
                for chunk in chunks:
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL to hand to ``ChatOpenAI(base_url=...)``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def script(self, model: str, *replies: Reply) -> ScriptedOpenAI:
        """Queue replies for a model name; each request pops one."""
        with self._lock:
            self._queues[model].extend(replies)
        return self

    def respond_with(self, model: str, responder: Responder) -> ScriptedOpenAI:
        """Answer a model's requests with a function of the request (used when its queue is empty)."""
        with self._lock:
            self._responders[model] = responder
        return self

    def requests_for(self, model: str) -> list[dict[str, Any]]:
        """Requests a model received, in order."""
        with self._lock:
            return [r for r in self.requests if r.get("model") == model]

    def pending(self, model: str) -> int:
        """Scripted replies not yet consumed."""
        with self._lock:
            return len(self._queues[model])

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        model = body.get("model", "")
        with self._lock:
            queue = self._queues.get(model)
            if queue:
                return queue.popleft()
            responder = self._responders.get(model) or self._responders.get("*")
        if responder is None:
            raise LookupError(f"no scripted reply left for model {model!r}")
        return responder(body)

    @staticmethod
    def _completion(body: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
        prompt_chars = sum(len(str(m.get("content") or "")) for m in body.get("messages", []))
        completion_chars = len(str(message.get("content") or ""))
        return {
            "id": f"chatcmpl-{next(_ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [
                {"index": 0, "message": message, "finish_reason": "tool_calls" if message.get("tool_calls") else "stop"}
            ],
            "usage": {
                "prompt_tokens": prompt_chars // 4,
                "completion_tokens": completion_chars // 4,
                "total_tokens": (prompt_chars + completion_chars) // 4,
            },
        }

    def start(self) -> ScriptedOpenAI:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Shut down and free the port."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> ScriptedOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
