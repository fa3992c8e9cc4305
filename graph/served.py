"""The graph as `langgraph dev` / `langgraph up` serve it (``langgraph.json`` points at `make_graph`).

Importing this module is the server's start, and this module is the server's composition root: it
builds the one `Resources` the server's runs share, opens the case bank, loads the embedder and
imports the model client before the server accepts runs, so the first run costs what later runs
cost. Scripts and tests import `graph.builder` instead and pay nothing.
"""

from __future__ import annotations

import contextlib

import langchain_openai  # noqa: F401 - imported lazily by the nodes; the server pays it at start
from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph

from graph.builder import compile_graph
from graph.context import Context
from graph.state import InputState, OutputState, State
from nodes.resources import Resources

# A bad MEMENTO_* setting is left for the first run to report in its own words.
_context: Context | None = None
with contextlib.suppress(ValueError):
    _context = Context()

resources = Resources(_context)
if _context is not None:
    resources.warm().join(timeout=120)

# Compiled once: the server calls the factory for every request and adds its own checkpointer.
_graph = compile_graph(resources=resources)


def make_graph(config: RunnableConfig) -> CompiledStateGraph[State, Context, InputState, OutputState]:
    """The graph factory LangGraph's server calls (per request): the graph bound to this server's resources."""
    return _graph


__all__ = ["make_graph", "resources"]
