"""LangSmith plumbing: the (online or offline) client, dataset upload, and a quiet ``aevaluate``."""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
import warnings
from collections.abc import Iterator, Sequence
from unittest import mock

from evals.datasets import Example

logger = logging.getLogger("evals.runner")


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


def example_uuid(*parts: str) -> uuid.UUID:
    """A stable id for a dataset or example named by ``parts``."""
    return uuid.uuid5(uuid.NAMESPACE_URL, "memento-eval/" + "/".join(parts))


def to_langsmith_examples(examples: Sequence[Example], dataset_id: uuid.UUID) -> list:
    """Our examples as LangSmith `Example`s (ids stable per dataset and task)."""
    from langsmith import schemas

    return [
        schemas.Example(
            id=example_uuid(str(dataset_id), ex.task_id),
            dataset_id=dataset_id,
            inputs={"task_id": ex.task_id, "question": ex.question},
            outputs={"ground_truth": ex.ground_truth},
            metadata={"source": ex.source},
        )
        for ex in examples
    ]


def upload_examples(client, name: str, examples: list) -> list:
    """Upsert the examples into a LangSmith dataset (online runs only); returns them re-bound to it."""
    dataset = (
        client.read_dataset(dataset_name=name) if client.has_dataset(dataset_name=name) else client.create_dataset(name)
    )
    existing = {str(e.id) for e in client.list_examples(dataset_id=dataset.id)}
    fresh = [e for e in examples if str(example_uuid(str(dataset.id), e.inputs["task_id"])) not in existing]
    if fresh:
        client.create_examples(
            ids=[example_uuid(str(dataset.id), e.inputs["task_id"]) for e in fresh],
            inputs=[e.inputs for e in fresh],
            outputs=[e.outputs for e in fresh],
            metadata=[e.metadata for e in fresh],
            dataset_id=dataset.id,
        )
    return list(client.list_examples(dataset_id=dataset.id))


def _without_experiment_bar() -> contextlib.AbstractContextManager[object]:
    """Turn off ``aevaluate``'s own progress bar: the one patch of a private LangSmith module.

    ``aevaluate`` has no switch for its bar (checked against the SDK's docs and issues), and tqdm's
    ``TQDM_DISABLE`` is read once at import. Its bar comes from the module-level helper
    ``langsmith.evaluation._arunner._load_tqdm``, replaced only while an experiment runs and only if
    it still exists (a newer SDK without it keeps its bar, nothing breaks).
    """
    from langsmith.evaluation import _arunner

    if not hasattr(_arunner, "_load_tqdm"):
        return contextlib.nullcontext()
    return mock.patch.object(_arunner, "_load_tqdm", lambda: lambda it: it)


@contextlib.contextmanager
def quiet_langsmith() -> Iterator[None]:
    """Keep LangSmith's own per-experiment progress bar, banner and beta warnings off our output."""
    import io

    banner = io.StringIO()
    with contextlib.ExitStack() as stack:
        stack.enter_context(_without_experiment_bar())
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
