"""The Memento loop as a LangGraph state machine.

    retrieve_cases -> plan -> execute <-> tools
                       ^        |
                       +--------+ (next cycle, up to max_cycles)
                 plan/execute -> finalize -> judge -> write_back

    feedback (an input carrying ``feedback`` on a finished thread: a person's verdict on it)

The nodes share one `nodes.resources.Resources` (models, case bank, experience log, toolbox,
selector, online trainer), bound into them here: `build_graph` takes it, and every entry point
builds its own (the CLI per command, `graph.served.make_graph` once per server, the eval runner
per run, each test its own). Scripts and tests call `compile_graph` with their checkpointer; the
LangGraph server brings its own persistence.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime

from graph.context import Context
from graph.state import InputState, OutputState, State
from nodes.execute import execute
from nodes.feedback import feedback
from nodes.finalize import finalize
from nodes.judge import judge
from nodes.models import explain_endpoint_errors
from nodes.plan import plan
from nodes.resources import Resources
from nodes.retrieve_cases import retrieve_cases
from nodes.routing import route_after_execute, route_after_plan, route_start
from nodes.tools import tools
from nodes.write_back import write_back


def _bind(node: Callable[..., Any], resources: Resources) -> Callable[..., Any]:
    """``node(state, runtime, resources)`` as the ``(state, runtime)`` node LangGraph calls.

    Sync nodes stay sync (LangGraph runs them on a worker thread), async ones stay async.
    """
    if inspect.iscoroutinefunction(node):

        async def bound_async(state: State, runtime: Runtime[Context]) -> dict:
            return await node(state, runtime, resources)

        bound: Callable[..., Any] = bound_async
    else:

        def bound_sync(state: State, runtime: Runtime[Context]) -> dict:
            return node(state, runtime, resources)

        bound = bound_sync
    bound.__name__ = bound.__qualname__ = node.__name__
    bound.__doc__ = node.__doc__
    return bound


def build_graph(resources: Resources) -> StateGraph[State, Context, InputState, OutputState]:
    """The uncompiled graph: nodes (bound to ``resources``) and edges."""
    builder = StateGraph(State, input_schema=InputState, output_schema=OutputState, context_schema=Context)
    builder.add_node("retrieve_cases", _bind(retrieve_cases, resources))
    builder.add_node("plan", explain_endpoint_errors(_bind(plan, resources)))
    builder.add_node("execute", explain_endpoint_errors(_bind(execute, resources)))
    builder.add_node("tools", _bind(tools, resources))
    builder.add_node("finalize", explain_endpoint_errors(_bind(finalize, resources)))
    builder.add_node("judge", explain_endpoint_errors(_bind(judge, resources)))
    builder.add_node("write_back", _bind(write_back, resources))
    builder.add_node("feedback", _bind(feedback, resources))

    builder.add_conditional_edges(START, route_start)
    builder.add_edge("feedback", END)
    builder.add_edge("retrieve_cases", "plan")
    builder.add_conditional_edges("plan", route_after_plan)
    builder.add_conditional_edges("execute", route_after_execute)
    builder.add_edge("tools", "execute")
    builder.add_edge("finalize", "judge")
    builder.add_edge("judge", "write_back")
    builder.add_edge("write_back", END)
    return builder


def compile_graph(
    checkpointer: Any = None, *, resources: Resources | None = None, **kwargs: Any
) -> CompiledStateGraph[State, Context, InputState, OutputState]:
    """Compile with a checkpointer (SQLite/Postgres/in-memory) for resumable runs.

    Args:
        checkpointer: Where runs are saved (None: not saved, or the server's own).
        resources: The owner of the nodes' clients; the caller closes it (`Resources.aclose`).
            None builds a new one from the environment's settings for this graph alone.
        **kwargs: Passed to ``StateGraph.compile``.

    """
    owner = resources if resources is not None else Resources()
    return build_graph(owner).compile(checkpointer=checkpointer, name="memento", **kwargs)
