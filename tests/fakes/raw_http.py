"""A loopback HTTP server that answers every POST with fixed raw bytes (or never answers)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class RawServer:
    """Serves ``body`` with ``status`` to every POST; ``hang`` seconds of silence first, if set.

    The scripted OpenAI server always sends well-formed JSON; this one sends what a broken proxy
    or endpoint might: invalid UTF-8, truncated JSON, or nothing at all.
    """

    def __init__(
        self,
        body: bytes = b"",
        status: int = 200,
        hang: float = 0.0,
        content_type: str = "application/json",
        answer: Callable[[dict[str, Any]], bytes] | None = None,
    ):
        """``answer``, if given, picks the body per request (it gets the parsed request JSON)."""
        self.body, self.status, self.hang, self.content_type = body, status, hang, content_type
        self.answer = answer
        self.posts = 0
        self._stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                server.posts += 1
                if server.hang and server._stop.wait(server.hang):
                    return
                body = server.answer(request) if server.answer else server.body
                self.send_response(server.status)
                self.send_header("Content-Type", server.content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True

    @property
    def url(self) -> str:
        """Base URL for ``ChatOpenAI(base_url=...)``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> RawServer:
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()


def completion(request: dict[str, Any], message: dict[str, Any] | str) -> bytes:
    """A well-formed chat completion body for ``request`` (the bytes a caller may then damage)."""
    message = (
        {"role": "assistant", "content": message} if isinstance(message, str) else {"role": "assistant", **message}
    )
    return json.dumps(
        {
            "id": "chatcmpl-raw",
            "object": "chat.completion",
            "created": 0,
            "model": request.get("model"),
            "choices": [
                {"index": 0, "message": message, "finish_reason": "tool_calls" if message.get("tool_calls") else "stop"}
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    ).encode()
