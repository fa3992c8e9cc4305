"""The Memento loop as a LangGraph state machine.

    retrieve_cases -> plan -> execute <-> tools
                       ^        |
                       +--------+ (next cycle, up to max_cycles)
                 plan/execute -> finalize -> judge -> write_back

    feedback (an input carrying ``feedback`` on a finished thread: a person's verdict on it)

``graph`` is compiled without persistence for the LangGraph server, which brings its own;
scripts and tests call `compile_graph` with their checkpointer.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from graph.context import Context
from graph.state import InputState, OutputState, State
from nodes.execute import execute
from nodes.feedback import feedback
from nodes.finalize import finalize
from nodes.judge import judge
from nodes.models import explain_endpoint_errors
from nodes.plan import plan
from nodes.retrieve_cases import retrieve_cases
from nodes.routing import route_after_execute, route_after_plan, route_start
from nodes.tools import tools
from nodes.write_back import write_back


def build_graph() -> StateGraph:
    """The uncompiled graph: nodes and edges only."""
    builder = StateGraph(State, input_schema=InputState, output_schema=OutputState, context_schema=Context)
    builder.add_node("retrieve_cases", retrieve_cases)
    builder.add_node("plan", explain_endpoint_errors(plan))
    builder.add_node("execute", explain_endpoint_errors(execute))
    builder.add_node("tools", tools)
    builder.add_node("finalize", explain_endpoint_errors(finalize))
    builder.add_node("judge", explain_endpoint_errors(judge))
    builder.add_node("write_back", write_back)
    builder.add_node("feedback", feedback)

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


builder = build_graph()


def compile_graph(checkpointer=None, **kwargs):
    """Compile with a checkpointer (SQLite/Postgres/in-memory) for resumable runs."""
    return builder.compile(checkpointer=checkpointer, name="memento", **kwargs)


graph = compile_graph()
