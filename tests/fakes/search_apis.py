"""A local stand-in for the web search APIs the `search` server talks to.

One loopback HTTP server speaks four real APIs at their real paths, with their parameters, auth
and JSON shapes (as documented by each provider), so the server's requests and parsing are
exercised over real HTTP:

- SearxNG: ``GET /search?q=…&format=json`` (no auth; 403 HTML page when the format is not json,
  which is what an instance without JSON enabled answers).
- SerpAPI: ``GET /search.json?engine=google&q=…&api_key=…`` (401 ``{"error": …}`` on a bad key).
- Brave: ``GET /res/v1/web/search?q=…&count=…`` with ``X-Subscription-Token`` (422
  ``ErrorResponse``/``SUBSCRIPTION_TOKEN_INVALID`` on a bad key, ``VALIDATION`` when count > 20).
- Tavily: ``POST /search`` with ``Authorization: Bearer …`` and a JSON body (401
  ``{"detail": {"error": …}}`` on a bad key).

Faults for retry tests: `fail_next` answers the next requests with an HTTP error, ``delay`` makes
every answer slow.

    with SearchAPIs(keys={"serpapi": "k"}) as apis:
        apis.add_results("python", [{"title": "Python", "url": "https://python.org", "snippet": "…"}])
        os.environ["SERPAPI_BASE_URL"] = apis.url
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

DEFAULT_KEYS = {"serpapi": "serp-test-key", "brave": "brave-test-key", "tavily": "tvly-test-key"}


class SearchAPIs:
    """The stand-in server; thread-safe, records every request."""

    def __init__(self, keys: dict[str, str] | None = None, host: str = "127.0.0.1", port: int = 0):
        """Bind to a free loopback port; ``keys`` are the API keys each provider accepts."""
        self.keys = {**DEFAULT_KEYS, **(keys or {})}
        self.requests: list[dict[str, Any]] = []
        self.delay = 0.0
        self._results: dict[str, list[dict[str, str]]] = {}
        self._failures: list[int] = []
        self._lock = threading.Lock()
        apis = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._dispatch("GET")

            def do_POST(self) -> None:
                self._dispatch("POST")

            def _dispatch(self, method: str) -> None:
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                body: Any = None
                if method == "POST":
                    raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                    try:
                        body = json.loads(raw or b"null")
                    except ValueError:
                        body = raw.decode(errors="replace")
                route = {
                    ("GET", "/search"): ("searxng", apis._searxng),
                    ("GET", "/search.json"): ("serpapi", apis._serpapi),
                    ("GET", "/res/v1/web/search"): ("brave", apis._brave),
                    ("POST", "/search"): ("tavily", apis._tavily),
                }.get((method, parts.path))
                with apis._lock:
                    apis.requests.append(
                        {
                            "api": route[0] if route else None,
                            "method": method,
                            "path": parts.path,
                            "query": query,
                            "headers": dict(self.headers.items()),
                            "body": body,
                        }
                    )
                    failure = apis._failures.pop(0) if apis._failures else None
                if apis.delay:
                    time.sleep(apis.delay)
                if route is None:
                    self._send(404, {"error": f"no route {method} {parts.path}"})
                    return
                if failure is not None:
                    self._send(
                        failure, {"error": "scripted failure"} if route[0] != "searxng" else "<html>error</html>"
                    )
                    return
                status, payload = route[1](query, dict(self.headers.items()), body)
                self._send(status, payload)

            def _send(self, status: int, payload: Any) -> None:
                is_text = isinstance(payload, str)
                data = payload.encode() if is_text else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/html; charset=utf-8" if is_text else "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL (no trailing slash) to use for every provider."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def add_results(self, query: str, results: list[dict[str, str]]) -> SearchAPIs:
        """Canned results (``title``, ``url``, ``snippet``) for an exact query; others get generated ones."""
        with self._lock:
            self._results[query] = results
        return self

    def fail_next(self, count: int, status: int = 503) -> SearchAPIs:
        """Answer the next ``count`` requests with HTTP ``status``."""
        with self._lock:
            self._failures.extend([status] * count)
        return self

    def requests_to(self, api: str) -> list[dict[str, Any]]:
        """Requests routed to one provider, in order."""
        with self._lock:
            return [r for r in self.requests if r["api"] == api]

    def _hits(self, query: str, count: int = 10) -> list[dict[str, str]]:
        with self._lock:
            canned = self._results.get(query)
        if canned is not None:
            return canned[:count]
        slug = "-".join(query.lower().split())[:40] or "empty"
        return [
            {
                "title": f"{query} - result {i}",
                "url": f"https://example.org/{slug}/{i}",
                "snippet": f"About {query}, part {i}.",
            }
            for i in range(1, count + 1)
        ]

    # --- SearxNG -------------------------------------------------------------------------------
    def _searxng(self, query: dict[str, str], headers: dict[str, str], body: Any) -> tuple[int, Any]:
        if query.get("format") != "json":
            return 403, "<html><body><h1>403 Forbidden</h1></body></html>"
        q = query.get("q", "")
        results = [
            {
                "url": hit["url"],
                "title": hit["title"],
                "content": hit["snippet"],
                "engine": "duckduckgo",
                "parsed_url": list(urlsplit(hit["url"])),
                "template": "default.html",
                "engines": ["duckduckgo", "brave"],
                "positions": [i, i],
                "score": round(2.0 / i, 3),
                "category": "general",
            }
            for i, hit in enumerate(self._hits(q, 20), 1)
        ]
        return 200, {
            "query": q,
            "number_of_results": 0,
            "results": results,
            "answers": [],
            "corrections": [],
            "infoboxes": [],
            "suggestions": [],
            "unresponsive_engines": [],
        }

    # --- SerpAPI -------------------------------------------------------------------------------
    def _serpapi(self, query: dict[str, str], headers: dict[str, str], body: Any) -> tuple[int, Any]:
        if query.get("api_key") != self.keys["serpapi"]:
            return 401, {"error": "Invalid API key. Your API key should be here: https://serpapi.com/manage-api-key"}
        if query.get("engine", "google") != "google":
            return 400, {"error": f"Unsupported `{query['engine']}` search engine."}
        q = query.get("q", "")
        hits = self._hits(q, int(query.get("num", "10")))
        payload: dict[str, Any] = {
            "search_metadata": {"id": uuid.uuid4().hex[:24], "status": "Success", "total_time_taken": 0.42},
            "search_parameters": {"engine": "google", "q": q, "google_domain": "google.com", "device": "desktop"},
            "search_information": {"query_displayed": q, "total_results": len(hits), "time_taken_displayed": 0.21},
        }
        if hits:
            payload["search_information"]["organic_results_state"] = "Results for exact spelling"
            payload["organic_results"] = [
                {
                    "position": i,
                    "title": hit["title"],
                    "link": hit["url"],
                    "displayed_link": hit["url"].split("://", 1)[-1],
                    "snippet": hit["snippet"],
                    "source": urlsplit(hit["url"]).hostname,
                }
                for i, hit in enumerate(hits, 1)
            ]
        else:
            # What SerpAPI really does for an empty result page: success plus an "error" string.
            payload["search_information"]["organic_results_state"] = "Fully empty"
            payload["error"] = "Google hasn't returned any results for this query."
        return 200, payload

    # --- Brave ---------------------------------------------------------------------------------
    @staticmethod
    def _brave_error(status: int, code: str, detail: str) -> tuple[int, Any]:
        return status, {
            "type": "ErrorResponse",
            "error": {"id": str(uuid.uuid4()), "status": status, "code": code, "detail": detail, "meta": {}},
            "time": int(time.time()),
        }

    def _brave(self, query: dict[str, str], headers: dict[str, str], body: Any) -> tuple[int, Any]:
        token = {k.lower(): v for k, v in headers.items()}.get("x-subscription-token")
        if token != self.keys["brave"]:
            return self._brave_error(422, "SUBSCRIPTION_TOKEN_INVALID", "The provided subscription token is invalid.")
        count = int(query.get("count", "20"))
        if not 1 <= count <= 20:
            return self._brave_error(422, "VALIDATION", "Unable to validate request parameter(s)")
        q = query.get("q", "")
        results = [
            {
                "type": "search_result",
                "title": hit["title"],
                "url": hit["url"],
                # Brave highlights the matched words with <strong> in descriptions.
                "description": hit["snippet"].replace(q, f"<strong>{q}</strong>") if q else hit["snippet"],
                "is_source_local": False,
                "is_source_both": False,
                "language": "en",
                "family_friendly": True,
                "profile": {"name": urlsplit(hit["url"]).hostname, "url": hit["url"]},
                "meta_url": {
                    "scheme": "https",
                    "netloc": urlsplit(hit["url"]).hostname,
                    "path": urlsplit(hit["url"]).path,
                },
            }
            for hit in self._hits(q, count)
        ]
        return 200, {
            "type": "search",
            "query": {"original": q, "show_strict_warning": False, "is_navigational": False, "spellcheck_off": True},
            "mixed": {
                "type": "mixed",
                "main": [{"type": "web", "index": i, "all": False} for i in range(len(results))],
            },
            "web": {"type": "search", "results": results, "family_friendly": True},
        }

    # --- Tavily --------------------------------------------------------------------------------
    def _tavily(self, query: dict[str, str], headers: dict[str, str], body: Any) -> tuple[int, Any]:
        auth = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        if auth != f"Bearer {self.keys['tavily']}":
            return 401, {"detail": {"error": "Unauthorized: missing or invalid API key."}}
        if not isinstance(body, dict) or not body.get("query"):
            return 400, {"detail": {"error": "Query is missing."}}
        q = body["query"]
        hits = self._hits(q, int(body.get("max_results", 5)))
        return 200, {
            "query": q,
            "follow_up_questions": None,
            "answer": None,
            "images": [],
            "results": [
                {
                    "title": hit["title"],
                    "url": hit["url"],
                    "content": hit["snippet"],
                    "score": round(0.9 - 0.05 * i, 3),
                    "raw_content": None,
                }
                for i, hit in enumerate(hits)
            ],
            "response_time": 0.61,
        }

    def start(self) -> SearchAPIs:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Shut down and free the port."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> SearchAPIs:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
