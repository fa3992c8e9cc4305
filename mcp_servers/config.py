"""Settings of the bundled MCP servers, read from ``MEMENTO_*`` environment variables in one place.

Each server runs as its own process (the toolbox starts it with the environment its config
names), so it reads its settings here when it needs them: `ServerConfig.from_env()` at the call
keeps a changed variable effective for the next call, as the servers always behaved. Settings
with their own reader stay there: the code sandbox's limits (`mcp_servers.sandbox.Limits`), the
egress policy (`mcp_servers.netguard.EgressPolicy`), the crawler's (`mcp_servers.crawl.CrawlSettings`),
the search backends' API keys (`mcp_servers.search`, named per backend), and the rest of the code
sandbox's (`mcp_servers.sandbox.Sandbox`: that file also runs as a standalone script in the sandbox).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field


def _flag(raw: str) -> bool:
    return raw.strip().lower() in ("1", "true", "yes")


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Every server's settings; the field ``x_y`` is read from ``MEMENTO_X_Y``."""

    # Serving and authentication (mcp_servers.serving, mcp_servers.auth)
    mcp_log_level: str = field(default="WARNING", metadata={"description": "Log level of a server."})
    mcp_no_auth: bool = field(default=False, metadata={"description": "Serve HTTP without a token (loopback)."})
    mcp_token: str = field(default="", metadata={"description": "The one client token of an HTTP server."})
    mcp_token_file: str = field(default="", metadata={"description": "File of `client:token` lines."})
    mcp_client: str = field(default="", metadata={"description": "This client's name (stdio, or a lone token)."})
    # memory
    namespaces: str = field(
        default="default",
        metadata={"description": "Namespaces the memory server serves, comma-separated (MEMENTO_NAMESPACES, "
                  "else MEMENTO_NAMESPACE)."},
    )  # fmt: skip
    # math
    math_timeout_s: float = field(default=5.0, metadata={"description": "Seconds one computation may take."})
    math_memory_mb: int = field(default=2048, metadata={"description": "Memory one computation may use."})
    # code
    code_workspace: str = field(default="default", metadata={"description": "Workspace of calls without a session."})
    # documents
    documents_roots: str = field(default="", metadata={"description": "Folders reads are confined to."})
    documents_max_bytes: int = field(default=50_000_000, metadata={"description": "Largest file read."})
    documents_max_zip_members: int = field(default=10_000, metadata={"description": "Most members of a package."})
    documents_max_unzipped_bytes: int = field(
        default=100_000_000, metadata={"description": "Most bytes a package unpacks to."}
    )
    documents_max_ratio: int = field(default=200, metadata={"description": "Highest compression ratio."})
    media_base_url: str = field(default="", metadata={"description": "Endpoint of the media models."})
    media_api_key: str = field(default="", metadata={"description": "Key of the media endpoint."})
    vision_model: str = field(default="", metadata={"description": "Model that describes images."})
    transcribe_model: str = field(default="", metadata={"description": "Model that transcribes audio."})
    # search
    search_backend: str = field(default="", metadata={"description": "Search backend (empty: the first configured)."})
    search_timeout: float = field(default=15.0, metadata={"description": "Seconds per search request."})
    search_retries: int = field(default=2, metadata={"description": "Retries of a failed search request."})
    search_backoff: float = field(default=0.5, metadata={"description": "First retry delay in seconds."})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerConfig:
        """The settings in effect: ``MEMENTO_<FIELD>`` where set and not empty, defaults otherwise.

        Raises:
            ValueError: A numeric setting is not a number.

        """
        env = os.environ if environ is None else environ

        def get(name: str, default: str = "") -> str:
            return env.get(f"MEMENTO_{name.upper()}") or default

        def number(name: str, kind: type, default: float) -> float:
            raw = get(name)
            if not raw:
                return default
            try:
                return kind(raw)
            except ValueError:
                raise ValueError(f"MEMENTO_{name.upper()} must be a number, got {raw!r}") from None

        return cls(
            mcp_log_level=get("mcp_log_level", "WARNING").upper(),
            mcp_no_auth=_flag(get("mcp_no_auth")),
            mcp_token=get("mcp_token").strip(),
            mcp_token_file=get("mcp_token_file"),
            mcp_client=get("mcp_client"),
            namespaces=get("namespaces") or get("namespace") or "default",
            math_timeout_s=float(number("math_timeout_s", float, 5.0)),
            math_memory_mb=int(number("math_memory_mb", int, 2048)),
            code_workspace=env.get("MEMENTO_CODE_WORKSPACE", "default"),
            documents_roots=get("documents_roots"),
            documents_max_bytes=int(number("documents_max_bytes", int, 50_000_000)),
            documents_max_zip_members=int(number("documents_max_zip_members", int, 10_000)),
            documents_max_unzipped_bytes=int(number("documents_max_unzipped_bytes", int, 100_000_000)),
            documents_max_ratio=int(number("documents_max_ratio", int, 200)),
            media_base_url=get("media_base_url"),
            media_api_key=get("media_api_key"),
            vision_model=get("vision_model").strip(),
            transcribe_model=get("transcribe_model").strip(),
            search_backend=get("search_backend").strip().lower(),
            search_timeout=float(number("search_timeout", float, 15.0)),
            search_retries=int(number("search_retries", int, 2)),
            search_backoff=float(number("search_backoff", float, 0.5)),
        )
