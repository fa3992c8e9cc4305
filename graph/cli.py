"""`memento`: the command line. Sub-commands live beside the concern they drive."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from typing import Annotated, Any

import typer
from dotenv import find_dotenv, load_dotenv
from rich.console import Console
from rich.panel import Panel

from evals.cli import eval_command
from memory.cli import app as memory_app
from memory.policy.cli import app as policy_app

app = typer.Typer(
    help="Memento-Graph: an LLM agent that learns from its past cases without fine-tuning.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(memory_app, name="memory")
app.add_typer(policy_app, name="policy")
app.command("eval")(eval_command)

console = Console(stderr=True)
out = Console()

EXIT_CONFIG = 2
EXIT_PAUSED = 3


@app.callback()
def main() -> None:
    """Load `.env` from the working directory before any command reads its settings."""
    # usecwd: look beside the user, not beside this installed module.
    load_dotenv(find_dotenv(usecwd=True), override=False)


def _show_update(node: str, update: dict[str, Any]) -> None:
    """One line or panel per node so a user can follow the loop as it runs."""
    if not isinstance(update, dict):
        return
    if node == "retrieve_cases":
        cases = update.get("cases", [])
        note = (update.get("retrieval") or {}).get("note")
        selector = (update.get("retrieval") or {}).get("selector", "none")
        console.print(f"[bold]cases[/] {len(cases)} shown ({selector})" + (f" — {note}" if note else ""))
        for c in cases:
            console.print(f"  [{'green' if c['label'] == 'positive' else 'red'}]{c['label']:8}[/] {c['similarity']:.2f}  {c['question'][:90]}")
    elif node == "plan":
        if update.get("plan"):
            console.print(f"[bold]plan[/] (cycle {update.get('cycle')})")
            for step in update["plan"]:
                console.print(f"  {step['id']}. {step['description']}")
        elif update.get("answer"):
            console.print("[bold]plan[/] planner answered directly")
        for err in update.get("errors", [])[-1:]:
            console.print(f"[yellow]planner: {err}[/]")
    elif node == "execute":
        results = update.get("subtask_results")
        if results:
            r = results[-1]
            console.print(f"[bold]subtask {r['id']}[/] {r['status']}: {str(r['result'])[:200]}")
    elif node == "tools":
        for call in update.get("tool_calls", [])[-5:]:
            style = "red" if call["status"] == "error" else "cyan"
            console.print(f"  [{style}]tool {call['name']}[/] {json.dumps(call['args'])[:120]} -> {call['result'][:120]}")
    elif node == "judge" and update.get("reward") is not None:
        console.print(f"[bold]judge[/] reward {update['reward']} ({update.get('reward_source')}) {update.get('judge_rationale') or ''}")
    elif node == "write_back" and update.get("case_written"):
        console.print(f"[bold]memory[/] case {update['case_id']} written")


class _Spinner:
    """A transient status line between updates, only on a terminal (piped output stays clean)."""

    def __init__(self) -> None:
        self._status = None

    def start(self, text: str) -> None:
        self.stop()
        if console.is_terminal:
            self._status = console.status(f"[dim]{text}[/]", spinner="dots")
            self._status.start()

    def stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


async def _run(payload: Any, config: dict, ctx, checkpoint_url: str | None) -> tuple[dict | None, list]:
    spinner = _Spinner()
    spinner.start("loading the agent and the case bank…")
    from graph.builder import compile_graph
    from graph.persistence import open_checkpointer
    from mcp_servers.toolbox import close_toolboxes

    interrupts: list = []
    try:
        async with open_checkpointer(checkpoint_url) as saver:
            graph = compile_graph(saver)
            async for chunk in graph.astream(payload, config, context=ctx, stream_mode="updates"):
                spinner.stop()
                for node, update in chunk.items():
                    if node == "__interrupt__":
                        interrupts.extend(update)
                    else:
                        _show_update(node, update)
                spinner.start("working…")
            spinner.stop()
            snapshot = await graph.aget_state(config)
            return dict(snapshot.values), interrupts
    finally:
        spinner.stop()
        await close_toolboxes()


@app.command()
def ask(
    question: Annotated[str | None, typer.Argument(help="The task. Omit it with --thread to resume a paused run.")] = None,
    thread: Annotated[str | None, typer.Option("--thread", "-t", help="Thread id: resume an interrupted or approval-paused run.")] = None,
    approve: Annotated[bool | None, typer.Option("--approve/--reject", help="Answer a pending tool-approval request.")] = None,
    ground_truth: Annotated[str | None, typer.Option(help="Reference answer(s) ('<|answer_split|>'-separated) to judge against.")] = None,
    task_id: Annotated[str | None, typer.Option(help="Stable task id (re-asking it updates its case).")] = None,
    planner: Annotated[str | None, typer.Option(help="Planner model name.")] = None,
    executor: Annotated[str | None, typer.Option(help="Executor model name.")] = None,
    judge: Annotated[str | None, typer.Option(help="Judge model name.")] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL (else OPENAI_BASE_URL).")] = None,
    memory: Annotated[str | None, typer.Option(help="Case selection: none, similarity or learned.")] = None,
    k: Annotated[int | None, typer.Option(help="Cases shown to the planner.")] = None,
    max_cycles: Annotated[int | None, typer.Option(help="Plan-execute cycles before a forced answer.")] = None,
    namespace: Annotated[str | None, typer.Option(help="Case-bank namespace.")] = None,
    bank: Annotated[str | None, typer.Option(help="Embedded case-bank folder.")] = None,
    chroma_url: Annotated[str | None, typer.Option(help="Chroma server URL instead of the embedded bank.")] = None,
    mcp_config: Annotated[str | None, typer.Option(help="MCP servers JSON ('' for no tools).")] = None,
    sensitive: Annotated[list[str] | None, typer.Option(help="Tool (or server_) needing approval; repeatable.")] = None,
    checkpoint_url: Annotated[str | None, typer.Option(help="postgresql://... or a SQLite path (default .memento/checkpoints.sqlite).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final state as JSON on stdout.")] = False,
) -> None:
    """Ask the agent one question, showing cases, plan, subtasks and tool calls as they happen."""
    from langgraph.types import Command

    from graph.context import Context
    from nodes.models import CONFIG_HELP, ModelConfigError, check_endpoint

    overrides = {
        "planner_model": planner,
        "executor_model": executor,
        "judge_model": judge,
        "base_url": base_url,
        "memory_mode": memory,
        "k": k,
        "max_cycles": max_cycles,
        "namespace": namespace,
        "bank_path": bank,
        "chroma_url": chroma_url,
        "mcp_config": mcp_config,
        "sensitive_tools": sensitive,
    }
    try:
        ctx = Context(**{key: v for key, v in overrides.items() if v is not None})
        check_endpoint(ctx)
    except (ValueError, ModelConfigError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(EXIT_CONFIG) from None

    if question is not None and not question.strip():
        console.print("[red]error:[/] the question is empty")
        raise typer.Exit(EXIT_CONFIG)
    if question is None and thread is None:
        console.print("[red]error:[/] give a question, or --thread to resume a run")
        raise typer.Exit(EXIT_CONFIG)

    thread = thread or uuid.uuid4().hex[:12]
    config = {"configurable": {"thread_id": thread}}
    if question is not None:
        payload: Any = {"question": question, "ground_truth": ground_truth, "task_id": task_id}
    elif approve is not None:
        payload = Command(resume=approve)
    else:
        payload = None  # continue an interrupted run from its last checkpoint
    if question is not None:
        from nodes.resources import warm_resources

        # Bank and embedder load on a thread while the graph, the checkpointer and the model
        # client are imported; the question's vector is cached for retrieve_cases.
        warm_resources(ctx, question)
    console.print(f"[dim]thread {thread}[/]")
    try:
        while True:
            state, interrupts = asyncio.run(_run(payload, config, ctx, checkpoint_url))
            if not interrupts:
                break
            request = interrupts[0].value if hasattr(interrupts[0], "value") else interrupts[0]
            console.print(Panel(json.dumps(request, indent=2, default=str), title="approval needed"))
            if approve is None and sys.stdin.isatty():
                payload = Command(resume=typer.confirm("Run these tool calls?", default=False))
                continue
            console.print(f"Paused. Resume with: memento ask --thread {thread} --approve (or --reject)")
            raise typer.Exit(EXIT_PAUSED)
    except typer.Exit:
        raise
    except Exception as exc:
        # openai is imported only here: importing it up front delays the first output by ~1 s.
        from openai import APIConnectionError, APIStatusError, AuthenticationError

        if isinstance(exc, APIConnectionError | AuthenticationError):
            console.print(f"[red]error:[/] cannot use the model endpoint {ctx.endpoint or 'https://api.openai.com/v1'}: {exc}\n{CONFIG_HELP}")
            console.print(f"The run is saved; after fixing the setup resume it with: memento ask --thread {thread}")
            raise typer.Exit(EXIT_CONFIG) from None
        if isinstance(exc, APIStatusError):
            console.print(f"[red]error:[/] the model endpoint answered {exc.status_code}: {exc.message}")
            console.print(f"Resume with: memento ask --thread {thread}")
            raise typer.Exit(1) from None
        raise

    if state is None or not state.get("question"):
        console.print(f"[red]error:[/] no run found for thread {thread}")
        raise typer.Exit(1)
    if as_json:
        out.print_json(json.dumps(state, default=str))
    elif state.get("answer"):
        out.print(state["answer"])
    else:
        console.print(f"[red]no answer[/] ({state.get('status')}): {'; '.join(state.get('errors', []))}")
        raise typer.Exit(1)
