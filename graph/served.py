"""The graph as `langgraph dev` / `langgraph up` serve it (``langgraph.json`` points here).

Importing this module is the server's start: it opens the case bank, loads the embedder and
imports the model client before the server accepts runs, so the first run costs what later runs
cost. Scripts and tests import `graph.builder` instead and pay nothing.
"""

from __future__ import annotations

import contextlib

import langchain_openai  # noqa: F401 - imported lazily by the nodes; the server pays it at start

from graph.builder import graph
from graph.context import Context
from nodes.resources import warm_resources

# A bad MEMENTO_* setting is left for the first run to report in its own words.
with contextlib.suppress(ValueError):
    warm_resources(Context.resolve(None)).join(timeout=120)

__all__ = ["graph"]
