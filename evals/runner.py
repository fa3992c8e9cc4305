"""Run the Memento graph over an example stream, through LangSmith's `aevaluate`.

The run itself lives here; its settings in `evals.config`, the cost model in `evals.cost`, the
evaluators in `evals.evaluators`, LangSmith plumbing in `evals.langsmith_io` and policy promotion
between passes in `evals.promotion`.

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
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from tqdm.auto import tqdm

from evals.config import MODES, EvalConfig, check_resume, make_context, models_of, split_of
from evals.cost import cost_usd
from evals.datasets import Example
from evals.evaluators import EVALUATORS, correctness, exact_match_evaluator, f1_evaluator
from evals.langsmith_io import (
    example_uuid,
    langsmith_client,
    langsmith_unreachable,
    quiet_langsmith,
    to_langsmith_examples,
    upload_examples,
)
from evals.metrics import exact_match, is_correct, token_f1
from evals.promotion import policy_version, train_policy_before_pass
from evals.results import ResultStore, write_json_atomic
from memory.records import shown_summary

# The runner's public names, wherever they live now (callers import them from here).
__all__ = [
    "EVALUATORS",
    "MODES",
    "EvalConfig",
    "EvalRunner",
    "PassHook",
    "build_record",
    "check_resume",
    "correctness",
    "cost_usd",
    "exact_match_evaluator",
    "f1_evaluator",
    "langsmith_client",
    "langsmith_unreachable",
    "make_context",
    "models_of",
    "policy_version",
    "split_of",
    "to_langsmith_examples",
    "train_policy_before_pass",
]

logger = logging.getLogger(__name__)

PassHook = Callable[[str, int, Any, Any], Awaitable[None] | None]


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
        order: list[tuple[str, int, str, Example]] = []
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

        dataset_id = example_uuid(self.config.dataset_name)
        ls_examples = to_langsmith_examples(exs, dataset_id)
        if self.upload:
            try:
                ls_examples = [
                    e
                    for e in upload_examples(self.client, self.config.dataset_name, ls_examples)
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
        with quiet_langsmith():
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


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"
