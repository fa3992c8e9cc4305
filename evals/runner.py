"""Run the Memento graph over an example stream, through LangSmith's `aevaluate`.

One LangSmith experiment per (memory mode, pass, split). The target runs the real graph for one
example; evaluators are plain ``(inputs, outputs, reference_outputs)`` functions. Offline (no
``LANGSMITH_API_KEY``) the examples stay local, nothing is uploaded and tracing is sampled at 0
through a client pointed at an unused loopback port; with a key, the examples are upserted into a
LangSmith dataset named after the eval and the experiments are uploaded and traced.

Stream semantics:

* Each memory mode gets its own bank namespace (``<prefix>-<mode>``), experience log and policy
  file under the output folder, so modes never share memory.
* ``iterations`` passes run over the same stream; the bank persists between passes, so pass 2
  sees what pass 1 wrote (each task's case is upserted, not duplicated).
* With ``test_fraction > 0`` a seeded hash of each task id puts it in ``test``; the rest is
  ``train``. In every pass the train tasks run first, write cases and train nothing else; then
  the test tasks run with the leakage guard on (``eval_mode``: no case of the same task or a
  near-identical question is shown) and with write-back off, so test questions never enter memory
  and test accuracy measures transfer from the train cases alone.
* Every finished (mode, pass, task) is one durable line in ``results.jsonl``; a rerun with the
  same output folder skips finished ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

from tqdm.auto import tqdm

from evals.datasets import Example
from evals.metrics import exact_match, is_correct, token_f1
from evals.results import ResultStore, write_json_atomic
from memory.records import shown_summary

logger = logging.getLogger(__name__)

MODES: tuple[str, ...] = ("none", "similarity", "learned")
# Passed to Context verbatim when set; everything else stays at Context's (env-aware) defaults.
_CONTEXT_KEYS = (
    "planner_model",
    "executor_model",
    "judge_model",
    "base_url",
    "api_key_env",
    "mcp_config",
    "chroma_url",
    "max_cycles",
    "n_candidates",
    "exploration",
    "temperature",
    "leakage_threshold",
)

PassHook = Callable[[str, int, Any, Any], Awaitable[None] | None]


@dataclass
class EvalConfig:
    """Settings of one eval run (a folder of results)."""

    out_dir: Path
    modes: list[str] = field(default_factory=lambda: ["similarity"])
    iterations: int = 1
    k: int = 4
    concurrency: int = 1
    seed: int = 0
    test_fraction: float = 0.0
    namespace_prefix: str = "eval"
    bank_path: str | None = None
    prices: dict[str, float] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    dataset_name: str = "dataset"
    progress: bool = True
    langsmith_upload: bool | None = None
    # The graph gets no ground truth (it self-judges, as in everyday use); accuracy is still
    # scored against the references, by exact match.
    hide_ground_truth: bool = False

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ValueError(f"memory modes must be among {', '.join(MODES)}; got {self.modes}")
        self.modes = list(dict.fromkeys(self.modes))
        if self.iterations < 1:
            raise ValueError("iterations must be >= 1")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError("test_fraction must be in [0, 1)")
        if self.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        unknown = set(self.context) - set(_CONTEXT_KEYS)
        if unknown:
            raise ValueError(f"unknown context settings {sorted(unknown)}; allowed: {', '.join(_CONTEXT_KEYS)}")


def split_of(task_id: str, test_fraction: float, seed: int) -> str:
    """``test`` for a seeded, stable fraction of task ids, else ``train``."""
    if test_fraction <= 0:
        return "train"
    h = int(hashlib.sha256(f"{seed}|{task_id}".encode()).hexdigest()[:12], 16) / 16**12
    return "test" if h < test_fraction else "train"


def make_context(config: EvalConfig, mode: str, split: str):
    """The graph Context for one mode and split: its own namespace, log and policy file."""
    from graph.context import Context

    out = config.out_dir.resolve()
    settings = {k: v for k, v in config.context.items() if v is not None}
    return Context(
        **settings,
        k=config.k,
        memory_mode=mode,
        namespace=f"{config.namespace_prefix}-{mode}",
        bank_path=str(config.bank_path or out / "bank"),
        experience_path=str(out / "experience" / f"{mode}.sqlite"),
        policy_path=str(out / "policy" / f"{mode}.pt"),
        eval_mode=split == "test",
        write_back=split != "test",
    )


def models_of(ctx: Any) -> dict[str, str]:
    """The models a Context names, per role."""
    return {"planner": ctx.planner_model, "executor": ctx.executor_model, "judge": ctx.judge_model}


def cost_usd(usage: dict[str, Any], models: dict[str, str], prices: dict[str, float]) -> float:
    """Dollar cost of one task from its token usage and $/1k-token prices per model.

    Usage broken down per model (``usage["by_model"]``) is priced model by model; the graph's
    total-only usage is priced at the planner's rate (an upper bound when the executor is cheaper).
    """
    if not prices:
        return 0.0
    by_model = usage.get("by_model")
    if isinstance(by_model, dict):
        return sum(
            (int(u.get("prompt_tokens", 0)) + int(u.get("completion_tokens", 0))) / 1000 * prices.get(m, 0.0)
            for m, u in by_model.items()
        )
    tokens = int(usage.get("prompt_tokens", 0)) + int(usage.get("completion_tokens", 0))
    return tokens / 1000 * prices.get(models.get("planner", ""), 0.0)


# -- evaluators: plain functions LangSmith calls with (inputs, outputs, reference_outputs) ------


def correctness(inputs: dict, outputs: dict, reference_outputs: dict) -> dict:
    """The graph judge's verdict (or exact match when it had none), with its rationale."""
    reward = outputs.get("reward")
    ok = is_correct(reward, exact_match(outputs.get("answer"), reference_outputs.get("ground_truth")))
    judge = outputs.get("judge_model") or outputs.get("reward_source") or "none"
    return {
        "key": "correctness",
        "score": None if ok is None else float(ok),
        "comment": f"[{judge}] {outputs.get('judge_rationale') or ''}".strip(),
    }


def exact_match_evaluator(inputs: dict, outputs: dict, reference_outputs: dict) -> dict:
    """Normalised exact match against any reference alternative."""
    return {"key": "exact_match", "score": exact_match(outputs.get("answer"), reference_outputs.get("ground_truth"))}


def f1_evaluator(inputs: dict, outputs: dict, reference_outputs: dict) -> dict:
    """Best token F1 against the reference alternatives."""
    return {"key": "f1", "score": token_f1(outputs.get("answer"), reference_outputs.get("ground_truth"))}


EVALUATORS = (correctness, exact_match_evaluator, f1_evaluator)


# -- LangSmith plumbing -------------------------------------------------------------------------


def langsmith_client(upload: bool | None = None):
    """A client and whether results upload: online with ``LANGSMITH_API_KEY``, else offline.

    Offline the client points at an unused loopback port with tracing sampled at 0, so nothing
    leaves the machine and no call waits on a network timeout.
    """
    from langsmith import Client

    online = bool(os.environ.get("LANGSMITH_API_KEY")) if upload is None else upload
    if online:
        return Client(), True
    return Client(
        api_key="offline", api_url="http://127.0.0.1:9", auto_batch_tracing=False, tracing_sampling_rate=0.0
    ), False


def langsmith_unreachable(dataset_name: str) -> str | None:
    """Why an online client cannot be used right now, or None when LangSmith answers.

    One quick request without retries: an unreachable endpoint or a rejected key costs seconds,
    not the SDK's retry schedule, and never a traceback.
    """
    from langsmith import Client
    from urllib3.util.retry import Retry

    # The SDK logs each failed request as a multi-line warning; the caller reports one line instead.
    sdk_log = logging.getLogger("langsmith.client")
    level = sdk_log.level
    sdk_log.setLevel(logging.CRITICAL)
    url = "the LangSmith endpoint"
    try:
        # Endpoint and key from the environment, as the real client; no background tracing thread.
        probe = Client(timeout_ms=(3000, 10000), retry_config=Retry(total=0), auto_batch_tracing=False)
        url = probe.api_url
        probe.has_dataset(dataset_name=dataset_name)
    except Exception as exc:  # the SDK raises its own errors, requests' and urllib3's
        return f"{type(exc).__name__} from {url}"
    finally:
        sdk_log.setLevel(level)
    return None


def _example_uuid(*parts: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, "memento-eval/" + "/".join(parts))


def to_langsmith_examples(examples: Sequence[Example], dataset_id: uuid.UUID) -> list:
    """Our examples as LangSmith `Example`s (ids stable per dataset and task)."""
    from langsmith import schemas

    return [
        schemas.Example(
            id=_example_uuid(str(dataset_id), ex.task_id),
            dataset_id=dataset_id,
            inputs={"task_id": ex.task_id, "question": ex.question},
            outputs={"ground_truth": ex.ground_truth},
            metadata={"source": ex.source},
        )
        for ex in examples
    ]


def _upload_examples(client, name: str, examples: list) -> list:
    """Upsert the examples into a LangSmith dataset (online runs only); returns them re-bound to it."""
    dataset = (
        client.read_dataset(dataset_name=name) if client.has_dataset(dataset_name=name) else client.create_dataset(name)
    )
    existing = {str(e.id) for e in client.list_examples(dataset_id=dataset.id)}
    fresh = [e for e in examples if str(_example_uuid(str(dataset.id), e.inputs["task_id"])) not in existing]
    if fresh:
        client.create_examples(
            ids=[_example_uuid(str(dataset.id), e.inputs["task_id"]) for e in fresh],
            inputs=[e.inputs for e in fresh],
            outputs=[e.outputs for e in fresh],
            metadata=[e.metadata for e in fresh],
            dataset_id=dataset.id,
        )
    return list(client.list_examples(dataset_id=dataset.id))


# -- the run ------------------------------------------------------------------------------------


def build_record(
    example: Example,
    *,
    mode: str,
    iteration: int,
    split: str,
    outputs: dict[str, Any] | None,
    error: str | None,
    models: dict[str, str],
    prices: dict[str, float],
    k: int,
    hidden_truth: bool = False,
) -> dict[str, Any]:
    """One line of ``results.jsonl`` (``hidden_truth``: the graph judged itself; score by exact match)."""
    out = outputs or {}
    answer = out.get("answer")
    em = exact_match(answer, example.ground_truth) if example.ground_truth else out.get("exact_match")
    f1 = token_f1(answer, example.ground_truth) if example.ground_truth else out.get("f1")
    usage = out.get("usage") or {}
    retrieval = out.get("retrieval") or {}
    shown = out.get("cases") or []
    return {
        "mode": mode,
        "iteration": iteration,
        "split": split,
        "task_id": example.task_id,
        "source": example.source,
        "question": example.question,
        "ground_truth": example.ground_truth,
        "answer": answer,
        "status": out.get("status") or ("error" if error else None),
        "correct": False if error else is_correct(None if hidden_truth else out.get("reward"), em),
        "reward": out.get("reward"),
        "reward_source": out.get("reward_source"),
        "judge_model": out.get("judge_model"),
        "judge_rationale": out.get("judge_rationale"),
        "exact_match": em,
        "f1": f1,
        "usage": usage,
        "tokens": int(usage.get("prompt_tokens", 0)) + int(usage.get("completion_tokens", 0)),
        "cost_usd": cost_usd(usage, models, prices),
        "latency_s": out.get("latency_s"),
        "k": k,
        "cases_shown": shown_summary(shown),
        "selector": retrieval.get("selector"),
        "policy_version": retrieval.get("policy_version"),
        "retrieval_note": retrieval.get("note"),
        "models": models,
        "errors": out.get("errors") or [],
        "error": error,
        "finished_at": time.time(),
    }


class EvalRunner:
    """Runs the modes × passes × splits of one eval and keeps ``results.jsonl`` up to date."""

    def __init__(self, config: EvalConfig, examples: Sequence[Example], *, before_pass: PassHook | None = None):
        """Prepare the output folder and read finished results.

        Args:
            config: Run settings.
            examples: The stream, in order.
            before_pass: Called as ``before_pass(mode, iteration, context, resources)`` before
                each pass (learned mode uses it to retrain the policy from the experience so far).

        """
        if not examples:
            raise ValueError("no examples to evaluate")
        ids = [e.task_id for e in examples]
        if len(set(ids)) != len(ids):
            raise ValueError("task ids must be unique within an eval stream")
        self.config = config
        self.examples = list(examples)
        self.before_pass = before_pass
        from nodes.resources import Resources

        # The run's composition root: the graph's models, banks, logs, toolbox and trainers.
        self.resources = Resources(make_context(config, config.modes[0], "train"))
        config.out_dir.mkdir(parents=True, exist_ok=True)
        self.store = ResultStore(config.out_dir / "results.jsonl")
        self.splits = {e.task_id: split_of(e.task_id, config.test_fraction, config.seed) for e in self.examples}
        # Set when an online run had to keep its results local; the CLI shows it as one warning.
        self.upload_note: str | None = None
        upload = config.langsmith_upload
        if upload is None and os.environ.get("LANGSMITH_API_KEY"):
            # Checked before the real client exists: its background thread would log each failure.
            reason = langsmith_unreachable(config.dataset_name)
            if reason:
                self.upload_note = f"LangSmith unreachable ({reason}); results are kept locally only"
                upload = False
        self.client, self.upload = langsmith_client(upload)

    def _go_offline(self, reason: str) -> None:
        """Keep results local from now on (an unreachable LangSmith must not lose the eval)."""
        self.client, self.upload = langsmith_client(False)
        self.upload_note = f"LangSmith unreachable ({reason}); results are kept locally only"
        logger.debug(self.upload_note)

    def todo(self) -> list[tuple[str, int, str, Example]]:
        """Remaining (mode, pass, split, example) in run order."""
        done = self.store.finished()
        order = []
        for mode in self.config.modes:
            for it in range(1, self.config.iterations + 1):
                for split in ("train", "test"):
                    for ex in self.examples:
                        if self.splits[ex.task_id] == split and (mode, it, ex.task_id) not in done:
                            order.append((mode, it, split, ex))
        return order

    async def run(self) -> list[dict[str, Any]]:
        """Run everything not yet finished; returns the deduplicated records of this folder."""
        from graph.builder import compile_graph

        graph = compile_graph(resources=self.resources)
        remaining = self.todo()
        bar = tqdm(total=len(remaining), desc="eval", unit="task", disable=not self.config.progress, dynamic_ncols=True)
        try:
            for mode in self.config.modes:
                for it in range(1, self.config.iterations + 1):
                    batch = [(s, ex) for m, i, s, ex in remaining if m == mode and i == it]
                    if not batch:
                        continue
                    if self.before_pass is not None:
                        maybe = self.before_pass(mode, it, make_context(self.config, mode, "train"), self.resources)
                        if asyncio.iscoroutine(maybe):
                            await maybe
                    for split in ("train", "test"):
                        exs = [ex for s, ex in batch if s == split]
                        if exs:
                            bar.set_description(f"{mode} pass {it}/{self.config.iterations} {split}")
                            await self._run_batch(graph, mode, it, split, exs, bar)
        finally:
            bar.close()
            await self.resources.aclose()
        return self.store.latest()

    async def _run_batch(self, graph, mode: str, iteration: int, split: str, exs: list[Example], bar) -> None:
        from langsmith import aevaluate

        ctx = make_context(self.config, mode, split)
        models = models_of(ctx)
        by_id = {e.task_id: e for e in exs}

        async def target(inputs: dict) -> dict:
            ex = by_id[inputs["task_id"]]
            started = time.perf_counter()
            try:
                payload = ex.graph_input()
                if self.config.hide_ground_truth:
                    payload["ground_truth"] = None
                state = await graph.ainvoke(
                    payload,
                    config={"configurable": {"thread_id": f"eval-{mode}-{iteration}-{ex.task_id}"}},
                    context=ctx,
                )
                latency = time.perf_counter() - started
                outputs = {
                    k: state.get(k)
                    for k in (
                        "answer",
                        "status",
                        "reward",
                        "reward_source",
                        "judge_model",
                        "judge_rationale",
                        "exact_match",
                        "f1",
                        "usage",
                        "retrieval",
                        "errors",
                        "case_id",
                    )
                }
                outputs["cases"] = shown_summary(state.get("cases") or [])
                outputs["latency_s"] = latency
                record = build_record(
                    ex,
                    mode=mode,
                    iteration=iteration,
                    split=split,
                    outputs=outputs,
                    error=None,
                    models=models,
                    prices=self.config.prices,
                    k=self.config.k,
                    hidden_truth=self.config.hide_ground_truth,
                )
            except Exception as exc:
                # First line only: an endpoint error carries the configuration help after it.
                logger.warning(
                    "task %s failed in %s pass %d: %s", ex.task_id, mode, iteration, str(exc).split("\n", 1)[0]
                )
                record = build_record(
                    ex,
                    mode=mode,
                    iteration=iteration,
                    split=split,
                    outputs=None,
                    error=f"{type(exc).__name__}: {exc}",
                    models=models,
                    prices=self.config.prices,
                    k=self.config.k,
                )
                outputs = {"answer": None, "error": record["error"]}
            # Written here, as each task finishes, not after the whole experiment: a crash
            # mid-pass keeps every finished task.
            self.store.append(record)
            bar.update(1)
            return outputs

        dataset_id = _example_uuid(self.config.dataset_name)
        ls_examples = to_langsmith_examples(exs, dataset_id)
        if self.upload:
            try:
                ls_examples = [
                    e
                    for e in _upload_examples(self.client, self.config.dataset_name, ls_examples)
                    if e.inputs.get("task_id") in by_id
                ]
            except Exception as exc:  # the endpoint went away after the start-up check
                self._go_offline(f"{type(exc).__name__} from {self.client.api_url}")
        metadata = {
            "memory_mode": mode,
            "iteration": iteration,
            "split": split,
            "k": self.config.k,
            "models": models,
            "namespace": ctx.namespace,
            "policy_path": ctx.policy_path if mode == "learned" else None,
            "policy_version": policy_version(ctx.policy_path) if mode == "learned" else None,
            "dataset": self.config.dataset_name,
        }
        with _quiet_langsmith():
            results = await aevaluate(
                target,
                data=ls_examples,
                evaluators=list(EVALUATORS),
                metadata=metadata,
                experiment_prefix=f"memento-{mode}-pass{iteration}-{split}",
                max_concurrency=self.config.concurrency,
                client=self.client,
                upload_results=self.upload,
            )
            async for _ in results:
                pass

    def write_config(self, extra: dict[str, Any] | None = None) -> None:
        """Record the run's settings next to its results (atomically)."""
        cfg = self.config
        write_json_atomic(
            cfg.out_dir / "config.json",
            {
                "modes": cfg.modes,
                "iterations": cfg.iterations,
                "k": cfg.k,
                "concurrency": cfg.concurrency,
                "seed": cfg.seed,
                "test_fraction": cfg.test_fraction,
                "dataset": cfg.dataset_name,
                "context": cfg.context,
                "prices": cfg.prices,
                "langsmith_upload": self.upload,
                **(extra or {}),
            },
        )


@contextlib.contextmanager
def _quiet_langsmith() -> Iterator[None]:
    """Keep LangSmith's own per-experiment progress bar and banner off our progress bar.

    ``aevaluate`` has no switch for either; its bar comes from a module-level helper, replaced
    here only while an experiment runs (and only if that helper still exists).
    """
    import io

    from langsmith.evaluation import _arunner

    banner = io.StringIO()
    with contextlib.ExitStack() as stack:
        if hasattr(_arunner, "_load_tqdm"):
            stack.enter_context(mock.patch.object(_arunner, "_load_tqdm", lambda: lambda it: it))
        stack.enter_context(contextlib.redirect_stdout(banner))
        stack.enter_context(warnings.catch_warnings())
        # aevaluate flags its `upload_results`/`upload_runs` switches as beta on every call.
        warnings.filterwarnings("ignore", message=r".*\bis in beta\b")
        try:
            from langsmith._internal._beta_decorator import LangSmithBetaWarning
        except ImportError:  # private module moved: the message filter above still applies
            pass
        else:
            warnings.filterwarnings("ignore", category=LangSmithBetaWarning)
        yield
    for line in banner.getvalue().splitlines():
        logger.debug("langsmith: %s", line)


def policy_version(path: str) -> str | None:
    """A short content hash of a policy checkpoint, None when there is none."""
    p = Path(path)
    if not p.is_file():
        return None
    return "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()[:12]


def check_resume(config: EvalConfig, examples: Sequence[Example]) -> None:
    """Refuse to mix results of different settings in one output folder.

    Raises:
        ValueError: ``config.json`` in the folder records different stream-defining settings.

    """
    import json

    path = config.out_dir / "config.json"
    if not path.exists():
        return
    old = json.loads(path.read_text(encoding="utf-8"))
    now = {
        "k": config.k,
        "seed": config.seed,
        "test_fraction": config.test_fraction,
        "dataset": config.dataset_name,
        "context": config.context,
        "modes": sorted(config.modes),
    }
    if isinstance(old.get("modes"), list):
        # The summary covers the folder's modes: another set would rewrite it without the others.
        old["modes"] = sorted(old["modes"])
    diff = {key: (old.get(key), val) for key, val in now.items() if key in old and old.get(key) != val}
    if diff:
        lines = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
        raise ValueError(
            f"{config.out_dir} holds results of a run with other settings ({lines}); "
            "resume with the same settings or choose another --out folder"
        )


def train_policy_before_pass(
    mode: str, iteration: int, ctx: Any, resources: Any = None, *, seed: int = 0, notes: list[str] | None = None
) -> None:
    """Learned mode, before passes 2, 3, ...: refit the bandit on this mode's experience log.

    The candidate is promoted only when off-policy evaluation on the log prefers it to the
    incumbent at the stated confidence; otherwise it serves a canary share of the next pass
    (`memory.policy.online.OnlineTrainer.retrain`). The graph's online trainer also refits every
    few dozen outcomes within a pass; this makes each pass start from everything before it.
    ``resources`` is the runner's (`nodes.resources.Resources`): its trainer is the graph's, so a
    refit still running from the last pass finishes first. None builds one for this call.
    """
    if mode != "learned" or iteration < 2:
        return
    try:
        import memory.policy.online  # noqa: F401 - the policy extra may be missing
        from nodes.resources import Resources
    except ImportError as exc:
        _note(notes, f"learned pass {iteration}: policy package unavailable ({exc}); graph uses similarity")
        return
    try:
        owner = resources if resources is not None else Resources(ctx)
        trainer = owner.trainer(ctx, owner.bank(ctx))
        trainer.wait()  # a background refit of the last pass finishes first
        result = trainer.retrain()
    except (ValueError, RuntimeError, OSError) as exc:
        _note(notes, f"learned pass {iteration}: policy not trained ({exc}); the current policy keeps serving")
        return
    if result.promoted:
        _note(
            notes,
            f"learned pass {iteration}: policy {result.version} promoted on {result.rows} retrievals ({result.reason})",
        )
    else:
        _note(notes, f"learned pass {iteration}: candidate not promoted ({result.reason})")


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _note(notes: list[str] | None, text: str) -> None:
    logger.info(text)
    if notes is not None:
        notes.append(text)
