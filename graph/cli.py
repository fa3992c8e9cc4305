"""`memento`: the command line. Sub-commands live beside the concern they drive."""

from __future__ import annotations

import getpass
import json
import os
import sys
import uuid
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel

from evals.cli import eval_command
from memory.cli import app as memory_app
from memory.policy.cli import app as policy_app

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig

    from graph.context import Context


class _App(typer.Typer):
    """The console-script entry point: widens output first when it goes to a pipe or a file."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from graph.terminal import widen_when_piped

        widen_when_piped()
        return super().__call__(*args, **kwargs)


app = _App(
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
    from graph.context import load_env_file

    load_env_file()


def _block(text: str, indent: str) -> str:
    """Multi-line text with its continuation lines indented under the first (own indentation kept)."""
    first, *rest = str(text).rstrip("\n").split("\n")
    return escape("\n".join([first, *(indent + line for line in rest)]))


def _show_update(node: str, update: dict[str, Any], progress: dict[str, int] | None = None) -> None:
    """One line or panel per node so a user can follow the loop as it runs.

    Args:
        node: The node that produced ``update``.
        update: The node's state update.
        progress: Counters carried across updates (``subtasks`` finished so far), so the planner's
            last reply reads as a final answer after subtasks, not as a direct answer.

    """
    if not isinstance(update, dict):
        return
    progress = progress if progress is not None else {}
    if node == "retrieve_cases":
        cases = update.get("cases", [])
        note = (update.get("retrieval") or {}).get("note")
        selector = (update.get("retrieval") or {}).get("selector", "none")
        console.print(
            f"[bold]cases[/] {len(cases)} shown ({escape(str(selector))})" + (f" — {escape(note)}" if note else "")
        )
        for c in cases:
            source = (c.get("reward_source") or "none").replace("_", " ")
            console.print(
                f"  [{'green' if c['label'] == 'positive' else 'red'}]{c['label']:8}[/] {c['similarity']:.2f}  [dim]{source:18}[/] {escape(c['question'][:80])}"
            )
    elif node == "plan":
        if update.get("plan"):
            console.print(f"[bold]plan[/] (cycle {update.get('cycle')})")
            for step in update["plan"]:
                console.print(f"  {step['id']}. {escape(step['description'])}")
        elif update.get("answer"):
            done = progress.get("subtasks", 0)
            if done:
                console.print(f"[bold]plan[/] planner gave the final answer after {done} subtask(s)")
            else:
                console.print("[bold]plan[/] planner answered directly")
        for err in update.get("errors", [])[-1:]:
            console.print(f"[yellow]planner: {escape(err)}[/]")
    elif node == "execute":
        results = update.get("subtask_results")
        if results:
            progress["subtasks"] = len(results)
            r = results[-1]
            console.print(f"[bold]subtask {r['id']}[/] {r['status']}: {_block(str(r['result'])[:200], '    ')}")
    elif node == "tools":
        for d in update.get("approvals", [])[-5:]:
            verb = "[green]approved[/]" if d["approved"] else "[red]rejected[/]"
            console.print(f"  {verb} {d['tool']} by {d['by']}" + (f": {d['reason']}" if d.get("reason") else ""))
        for call in update.get("tool_calls", [])[-5:]:
            style = "red" if call["status"] == "error" else "cyan"
            args = escape(json.dumps(call["args"], ensure_ascii=False)[:120])
            console.print(
                f"  [{style}]tool {escape(call['name'])}[/] {args} -> {_block(call['result'][:120], '      ')}"
            )
    elif node == "judge" and update.get("reward") is not None:
        console.print(
            f"[bold]judge[/] reward {update['reward']} ({update.get('reward_source')}) {escape(update.get('judge_rationale') or '')}"
        )
    elif node == "write_back" and update.get("case_written"):
        console.print(f"[bold]memory[/] case {update['case_id']} written")


class _Spinner:
    """A transient status line between updates, only on a terminal (piped output stays clean)."""

    def __init__(self) -> None:
        self._status: Any = None

    def start(self, text: str) -> None:
        self.stop()
        if console.is_terminal:
            self._status = console.status(f"[dim]{text}[/]", spinner="dots")
            self._status.start()

    def stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


async def _run(
    payload: Any,
    config: RunnableConfig,
    ctx,
    checkpoint_url: str | None,
    progress: dict[str, int] | None = None,
    resources: Any = None,
) -> tuple[dict | None, list]:
    """Stream one run (or its resumption); ``(None, [])`` when a resume finds no stored run.

    ``resources`` (a `nodes.resources.Resources`, built from ``ctx`` when None) is closed at the end.
    """
    spinner = _Spinner()
    spinner.start("loading the agent and the case bank…")
    from graph.builder import compile_graph
    from graph.persistence import open_checkpointer
    from nodes.resources import Resources

    resources = resources if resources is not None else Resources(ctx)

    interrupts: list = []
    progress = progress if progress is not None else {}
    try:
        async with open_checkpointer(checkpoint_url or ctx.checkpoint_url) as saver:
            graph = compile_graph(saver, resources=resources)
            if not isinstance(payload, dict):
                # A resume: without a stored run LangGraph raises EmptyInputError deep in its loop.
                before = await graph.aget_state(config)
                if not before.values:
                    return None, []
                progress.setdefault("subtasks", len(before.values.get("subtask_results") or []))
            async for chunk in graph.astream(payload, config, context=ctx, stream_mode="updates"):
                spinner.stop()
                for node, update in chunk.items():
                    if node == "__interrupt__":
                        interrupts.extend(update)
                    else:
                        _show_update(node, update, progress)
                spinner.start("working…")
            spinner.stop()
            snapshot = await graph.aget_state(config)
            return dict(snapshot.values), interrupts
    finally:
        spinner.stop()
        await resources.aclose()


def _decision(approved: bool) -> dict[str, Any]:
    """A person's answer to an approval request, signed with who gave it (recorded in the thread)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name in a bare container
        user = str(os.getuid())
    return {"approved": approved, "by": f"cli:{user}"}


@app.command()
def ask(
    cli: typer.Context,
    question: Annotated[
        str | None, typer.Argument(help="The task. Omit it with --thread to resume a paused run.")
    ] = None,
    thread: Annotated[
        str | None, typer.Option("--thread", "-t", help="Thread id: resume an interrupted or approval-paused run.")
    ] = None,
    approve: Annotated[
        bool | None, typer.Option("--approve/--reject", help="Answer a pending tool-approval request.")
    ] = None,
    ground_truth: Annotated[
        str | None, typer.Option(help="Reference answer(s) ('<|answer_split|>'-separated) to judge against.")
    ] = None,
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
    checkpoint_url: Annotated[
        str | None, typer.Option(help="postgresql://... or a SQLite path (default .memento/checkpoints.sqlite).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final state as JSON on stdout.")] = False,
    self_judge: Annotated[
        bool | None,
        typer.Option(
            "--self-judge/--no-self-judge", help="Without a ground truth, let the judge grade the run (default on)."
        ),
    ] = None,
) -> None:
    """Ask the agent one question, showing cases, plan, subtasks and tool calls as they happen."""
    from graph.context import Context
    from memory.bank_worker import BankWorker, has_spare_core

    overrides: dict[str, Any] = {
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
        "self_judge": self_judge,
    }
    try:
        ctx = Context(**{key: v for key, v in overrides.items() if v is not None})
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(EXIT_CONFIG) from None
    # Chroma is imported and the bank opened in a child process, on an idle core, while this one
    # imports LangGraph and builds the graph; so it starts before any other heavy import.
    # The console script may have started one already, from the environment's settings
    # (`graph.entry`): it is kept only if it opened the bank these settings name.
    worker: BankWorker | None = (cli.obj or {}).get("bank_worker")
    wanted = bool(ctx.bank_worker and ctx.memory_mode != "none" and ctx.k > 0 and question and question.strip())
    key = (ctx.bank_path or None, ctx.chroma_url or None, ctx.namespace)
    if worker is not None and not (wanted and worker.serves(*key)):
        worker.close()
        worker = None
    if worker is None and wanted and has_spare_core():
        worker = BankWorker.start(*key)
    try:
        from graph.persistence import CheckpointerError
        from memory.bank import BankError
        from memory.experience import ExperienceLogError
        from nodes.models import CONFIG_HELP, ModelConfigError, ModelEndpointError, check_endpoint

        try:
            check_endpoint(ctx)
        except ModelConfigError as exc:
            console.print(f"[red]error:[/] {exc}")
            raise typer.Exit(EXIT_CONFIG) from None

        if question is not None and not question.strip():
            console.print("[red]error:[/] the question is empty")
            raise typer.Exit(EXIT_CONFIG)
        if question is None and thread is None:
            console.print("[red]error:[/] give a question, or --thread to resume a run")
            raise typer.Exit(EXIT_CONFIG)

        thread = thread or uuid.uuid4().hex[:12]
        config: RunnableConfig = {"configurable": {"thread_id": thread}}
        if question is not None:
            payload: Any = {"question": question, "ground_truth": ground_truth, "task_id": task_id}
        elif approve is not None:
            from langgraph.types import Command

            payload = Command(resume=_decision(approve))
        else:
            payload = None  # continue an interrupted run from its last checkpoint
        from nodes.resources import Resources

        # The command's composition root: every run (and resumption) below uses and closes it
        # (the bank worker included).
        resources = Resources(ctx, bank_worker=worker)
    except BaseException:
        if worker is not None:
            worker.close()
        raise
    if question is not None:
        # The embedder loads on a thread while the graph, the checkpointer and the model client
        # are imported (and the bank too, when no worker opens it); the question's vector is
        # cached for retrieve_cases.
        resources.warm(question)
    console.print(f"[dim]thread {thread}[/]")
    progress: dict[str, int] = {}
    # Imported here, not with the module: `memento --help` and the bank worker's start need none of it.
    import asyncio

    try:
        while True:
            state, interrupts = asyncio.run(_run(payload, config, ctx, checkpoint_url, progress, resources))
            if not interrupts:
                break
            request = interrupts[0].value if hasattr(interrupts[0], "value") else interrupts[0]
            console.print(
                Panel(escape(json.dumps(request, indent=2, default=str)), title="approval needed", expand=False)
            )
            if approve is None and sys.stdin.isatty():
                from langgraph.types import Command

                payload = Command(resume=_decision(typer.confirm("Run these tool calls?", default=False)))
                continue
            console.print(
                f"Paused. Resume with: memento ask --thread {thread} --approve (or --reject)",
                soft_wrap=True,
                highlight=False,
            )
            raise typer.Exit(EXIT_PAUSED)
    except ModelEndpointError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        console.print(
            f"The run is saved; after fixing the setup resume it with: memento ask --thread {thread}",
            soft_wrap=True,
            highlight=False,
        )
        raise typer.Exit(EXIT_CONFIG) from None
    except CheckpointerError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(EXIT_CONFIG) from None
    except (BankError, ExperienceLogError, OSError) as exc:
        # A store the run writes to (case bank, experience log) is unusable: name it, no traceback.
        console.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        console.print(
            f"After fixing it, resume the run with: memento ask --thread {thread}", soft_wrap=True, highlight=False
        )
        raise typer.Exit(EXIT_CONFIG) from None
    except typer.Exit:
        raise
    except Exception as exc:
        # openai is imported only here: importing it up front delays the first output by ~1 s.
        from openai import APIConnectionError, APIStatusError, APITimeoutError, AuthenticationError

        if isinstance(exc, APITimeoutError):  # reached, but no answer in time: not a setup problem
            console.print(
                f"[red]error:[/] the model endpoint {ctx.endpoint or 'https://api.openai.com/v1'} did not answer within "
                f"{ctx.request_timeout:g} s ({ctx.max_retries} retries); raise MEMENTO_REQUEST_TIMEOUT for slow models"
            )
            console.print(f"Resume with: memento ask --thread {thread}", soft_wrap=True, highlight=False)
            raise typer.Exit(1) from None
        if isinstance(exc, APIConnectionError | AuthenticationError):
            console.print(
                f"[red]error:[/] cannot use the model endpoint {ctx.endpoint or 'https://api.openai.com/v1'}: {exc}\n{CONFIG_HELP}"
            )
            console.print(
                f"The run is saved; after fixing the setup resume it with: memento ask --thread {thread}",
                soft_wrap=True,
                highlight=False,
            )
            raise typer.Exit(EXIT_CONFIG) from None
        if isinstance(exc, APIStatusError):
            console.print(f"[red]error:[/] the model endpoint answered {exc.status_code}: {escape(str(exc.message))}")
            console.print(f"Resume with: memento ask --thread {thread}", soft_wrap=True, highlight=False)
            raise typer.Exit(1) from None
        raise

    if state is None or not state.get("question"):
        console.print(f"[red]error:[/] no run found for thread {thread}")
        raise typer.Exit(1)
    if as_json:
        # The thread id lets a script resume or inspect the run; a failed run exits 1 as without --json.
        out.print_json(json.dumps({"thread_id": thread, **state}, default=str))
        if not state.get("answer"):
            raise typer.Exit(1)
    elif state.get("answer"):
        out.print(state["answer"], markup=False, highlight=False)  # the answer verbatim, brackets too
    else:
        console.print(f"[red]no answer[/] ({state.get('status')}): {escape('; '.join(state.get('errors', [])))}")
        raise typer.Exit(1)


@app.command()
def feedback(
    target: Annotated[
        str, typer.Argument(help="The thread id of a run (printed by `memento ask`) or a case id (case-…).")
    ],
    good: Annotated[bool | None, typer.Option("--good/--bad", help="Your verdict on the run's answer.")] = None,
    note: Annotated[str | None, typer.Option(help="Why (stored with the label).")] = None,
    namespace: Annotated[
        str | None, typer.Option(help="Case-bank namespace (default MEMENTO_NAMESPACE or 'default').")
    ] = None,
    bank: Annotated[str | None, typer.Option(help="Embedded case-bank folder.")] = None,
    chroma_url: Annotated[str | None, typer.Option(help="Chroma server URL instead of the embedded bank.")] = None,
    checkpoint_url: Annotated[str | None, typer.Option(help="Where the thread's run is saved (as for `ask`).")] = None,
) -> None:
    """Label a run good or bad: a person's label outranks the judges and is logged as the outcome."""
    from graph.context import Context
    from memory.bank import BankError

    if good is None:
        console.print("[red]error:[/] say --good or --bad")
        raise typer.Exit(EXIT_CONFIG)
    overrides: dict[str, Any] = {"namespace": namespace, "bank_path": bank, "chroma_url": chroma_url}
    try:
        ctx = Context(**{key: v for key, v in overrides.items() if v is not None})
        if target.startswith("case-"):
            case = _feedback_on_case(ctx, target, good, note)
        else:
            import asyncio

            case = asyncio.run(_feedback_on_thread(ctx, target, good, note, checkpoint_url))
    except (ValueError, KeyError, BankError, RuntimeError) as exc:
        console.print(f"[red]error:[/] {exc.args[0] if isinstance(exc, KeyError) else exc}")
        raise typer.Exit(1) from None
    out.print(f"{case['case_id']}: {case['label']} (human){' — ' + note if note else ''}")


def _feedback_on_case(ctx, case_id: str, good: bool, note: str | None) -> dict:
    from memory.outcomes import apply_feedback
    from nodes.resources import Resources

    resources = Resources(ctx)
    try:
        case = apply_feedback(
            resources.bank(ctx), resources.experience(ctx), case_id, good=good, note=note, namespace=ctx.namespace
        )
    finally:
        resources.close()
    return {"case_id": case.id, "label": case.label}


async def _feedback_on_thread(
    ctx: Context, thread: str, good: bool, note: str | None, checkpoint_url: str | None
) -> dict:
    """Send ``{"feedback": ...}`` on the thread: the same path a served graph takes."""
    from graph.builder import compile_graph
    from graph.persistence import open_checkpointer
    from nodes.resources import Resources

    config: RunnableConfig = {"configurable": {"thread_id": thread}}
    resources = Resources(ctx)
    async with open_checkpointer(checkpoint_url or ctx.checkpoint_url) as saver:
        graph = compile_graph(saver, resources=resources)
        snapshot = await graph.aget_state(config)
        if not snapshot.values or not snapshot.values.get("question"):
            raise ValueError(f"no run found for thread {thread} (or pass a case id)")
        # A paused run must finish first; a feedback run that failed (say, a wrong namespace) may be retried.
        if snapshot.next and tuple(snapshot.next) != ("feedback",):
            raise ValueError(
                f"the run on thread {thread} has not finished; finish it with `memento ask --thread {thread}` first"
            )
        try:
            payload: Any = {"feedback": {"good": good, "note": note}}
            state = await graph.ainvoke(payload, config, context=ctx)
        finally:
            await resources.aclose()
    return {"case_id": state.get("case_id"), "label": state.get("label")}
