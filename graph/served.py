"""The graph as `langgraph dev` / `langgraph up` serve it (``langgraph.json`` points here).

Importing this module is the server's start: it warms the case bank and the embedder on a
background thread so the first run costs what later runs cost. Scripts and tests import
`graph.builder` instead and pay nothing.
"""

from __future__ import annotations

import contextlib

from graph.builder import graph
from graph.context import Context
from nodes.resources import warm_resources

# A bad MEMENTO_* setting is left for the first run to report in its own words.
with contextlib.suppress(ValueError):
    warm_resources(Context.resolve(None))

__all__ = ["graph"]
