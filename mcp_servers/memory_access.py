"""What the memory MCP server lets its clients read and write.

- Namespaces: only those the server was started for (``MEMENTO_NAMESPACES``, a comma list, else
  ``MEMENTO_NAMESPACE``, else ``default``); the first is the default.
- Cases a client adds live in their own id space (``case-mcp-…``, keyed by the client's name) and
  carry ``created_by="mcp:<client>"``, so they can never replace a case the agent wrote or a user
  imported, nor another client's case.
"""

from __future__ import annotations

import hashlib
import json

from mcp_servers.config import ServerConfig
from memory.bank import validate_namespace
from memory.cases import Case, normalise_question

CLIENT_ID_PREFIX = "case-mcp-"


def served_namespaces() -> list[str]:
    """The namespaces this server serves, default first."""
    raw = ServerConfig.from_env().namespaces
    names: list[str] = []
    for name in (n.strip() for n in raw.split(",")):
        if name and name not in names:
            validate_namespace(name)  # a bad name fails at start-up, not on a client's call
            names.append(name)
    return names or ["default"]


def resolve_namespace(requested: str | None) -> str:
    """The namespace a call may use: the requested one if served, the default when none is named.

    Raises:
        ValueError: The namespace is not one this server serves.

    """
    served = served_namespaces()
    if not requested:
        return served[0]
    if requested not in served:
        raise ValueError(f"namespace {requested!r} is not served here (this server serves: {', '.join(served)})")
    return requested


def owner_tag(client: str) -> str:
    """The ``created_by`` value of cases a client adds."""
    return f"mcp:{client}"


def client_case_id(client: str, namespace: str, question: str, task_id: str | None) -> str:
    """Deterministic id in the clients' own id space: the same client re-adding a task replaces it."""
    key = json.dumps([client, namespace, normalise_question(question), task_id or ""])
    return CLIENT_ID_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:24]


def check_can_replace(existing: Case | None, client: str) -> None:
    """A client may replace only a case it created itself.

    Raises:
        ValueError: The case at that id belongs to the agent, an import or another client.

    """
    if existing is not None and existing.created_by != owner_tag(client):
        raise ValueError(f"case {existing.id} was not created by this client; it cannot be replaced")
