"""`Resources`: the one owner of everything the nodes share that is costly to build.

Each entry point (the CLI, the LangGraph server's graph factory, the eval runner) builds one from
its `Context` and hands it to `graph.builder.build_graph`, which binds it into the nodes. It holds
the chat models per role, the case bank, the experience log, the MCP toolbox, the selector cache
and the online trainer, each built on first use and kept for the next run, and `aclose` releases
them. Nothing is cached per process: two graphs (two tests) never share a client by accident.

A run may carry settings of its own (LangGraph Studio's form, an HTTP caller's context), so each
getter takes the run's `Context` and keeps one object per distinct setting, as the process-wide
caches it replaces did.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graph.context import Context
from memory.bank import CaseBank
from memory.bank_store import Store
from memory.config import MemoryConfig
from memory.embeddings import Embedder, LazyEmbedder
from memory.experience import ExperienceLog
from nodes.models import build_chat_model, model_key

if TYPE_CHECKING:
    from collections.abc import Mapping

    from langchain_core.language_models import BaseChatModel

    from mcp_servers.toolbox import Toolbox
    from memory.bank_worker import BankWorker
    from memory.policy.online import OnlineTrainer
    from memory.policy.selection import SelectorCache
    from memory.retrieval import CaseSearch

logger = logging.getLogger(__name__)


class Resources:
    """Clients and caches of one graph (one server, one CLI command, one eval run, one test)."""

    def __init__(
        self,
        context: Context | None = None,
        *,
        embedder: Embedder | None = None,
        chat_models: Mapping[str, BaseChatModel] | None = None,
        bank_worker: BankWorker | None = None,
    ):
        """Own nothing yet: every resource is built on first use.

        Args:
            context: The entry point's settings (what `warm` opens); None reads the environment
                when first needed (a bad setting is then reported by the run that needs it).
            embedder: An embedder already loaded (tests share one per session); default: the one
                ``Context.embedder`` names, loaded on first use.
            chat_models: Chat models per role (``planner``, ``executor``, ``judge``) built by the
                caller, e.g. a model of another provider or a test's fake; they serve every run
                whatever its model settings. Other roles get ``ChatOpenAI`` clients.
            bank_worker: A process the caller started on the bank ``context`` names
                (`memory.bank_worker`): the first retrieval's search goes to it.

        """
        self._context = context
        self._lock = threading.RLock()
        self._embedders: dict[str, LazyEmbedder] = {}
        self._given_embedder = embedder
        self._models: dict[tuple[Any, ...], BaseChatModel] = {}
        self._given_models = dict(chat_models or {})
        self._banks: dict[tuple[str, str, str], CaseBank] = {}
        # One store (Chroma client and in-memory index) per bank location, shared by the banks of
        # its namespaces and closed by `close`.
        self._stores: dict[str, Store] = {}
        self._logs: dict[str, ExperienceLog] = {}
        # MCP sessions belong to the event loop that opened them: one toolbox per loop and config.
        self._toolboxes: dict[tuple[int, str], Toolbox] = {}
        self._trainers: dict[tuple[str, str, str], OnlineTrainer] = {}
        self._selectors: SelectorCache | None = None
        self._bank_worker = bank_worker
        # Retrieval fallback warnings already logged (one per graph, not one per task).
        self.warned: set[str] = set()

    @property
    def context(self) -> Context:
        """The entry point's settings (read from the environment on first use when none were given)."""
        if self._context is None:
            self._context = Context()
        return self._context

    # -- memory ---------------------------------------------------------------------------------

    def embedder(self, ctx: Context | None = None) -> LazyEmbedder:
        """The embedder the context names, loaded on first use."""
        spec = (ctx or self.context).embedder
        with self._lock:
            lazy = self._embedders.get(spec)
            if lazy is None:
                given = self._given_embedder
                lazy = self._embedders[spec] = LazyEmbedder(spec, given)
            return lazy

    def bank(self, ctx: Context | None = None) -> CaseBank:
        """The case bank the context points at (one client per location).

        Raises:
            BankError: The bank is corrupt or its server unreachable.

        """
        ctx = ctx or self.context
        key = (ctx.bank_path, ctx.chroma_url, ctx.namespace)
        location = ctx.chroma_url or str(Path(ctx.bank_path or MemoryConfig.from_env().bank_path).resolve())
        with self._lock:
            bank = self._banks.get(key)
            if bank is None:
                bank = self._banks[key] = CaseBank(
                    ctx.bank_path or None,
                    url=ctx.chroma_url or None,
                    namespace=ctx.namespace,
                    embedder=self.embedder(ctx),
                    store=self._stores.get(location),
                )
                self._stores.setdefault(location, bank.store)
            return bank

    def retrieval_bank(self, ctx: Context | None = None) -> CaseSearch:
        """What a retrieval searches: `bank`, or the bank worker given at construction.

        The worker answers one search, of the context's bank, once it has opened it; otherwise
        this is `bank`, opened here, so its errors are raised here as they always were.

        Raises:
            BankError: The bank is corrupt or its server unreachable.

        """
        ctx = ctx or self.context
        worker = self._bank_worker
        if (
            worker is not None
            and worker.serves(ctx.bank_path or None, ctx.chroma_url or None, ctx.namespace)
            and worker.wait_ready()
        ):
            from memory.bank_worker import WorkerSearch

            return WorkerSearch(worker, self.embedder(ctx), lambda: self.bank(ctx))
        return self.bank(ctx)

    def experience(self, ctx: Context | None = None) -> ExperienceLog:
        """The experience log the context points at."""
        path = (ctx or self.context).experience_path
        with self._lock:
            log = self._logs.get(path)
            if log is None:
                log = self._logs[path] = ExperienceLog(path)
            return log

    @property
    def selectors(self) -> SelectorCache:
        """Loaded policy checkpoints (reloaded when their files change)."""
        with self._lock:
            if self._selectors is None:
                # Imported on first use: the selector module imports torch.
                from memory.policy.selection import SelectorCache

                self._selectors = SelectorCache()
            return self._selectors

    def trainer(self, ctx: Context, bank: CaseBank) -> OnlineTrainer:
        """The online trainer of the context's policy, log and namespace (one per combination)."""
        from memory.policy.online import OnlineTrainer

        key = (str(Path(ctx.policy_path).resolve()), str(Path(ctx.experience_path).resolve()), ctx.namespace)
        with self._lock:
            trainer = self._trainers.get(key)
            if trainer is None:
                trainer = self._trainers[key] = OnlineTrainer(
                    ctx.policy_path, ctx.experience_path, bank=bank, namespace=ctx.namespace, k=ctx.k
                )
            else:
                trainer.k = ctx.k
            return trainer

    # -- models and tools -----------------------------------------------------------------------

    def chat_model(self, ctx: Context, role: str) -> BaseChatModel:
        """The model for a role (``planner``, ``executor`` or ``judge``), one client per setting.

        Raises:
            ModelConfigError: No API key and no endpoint are configured.

        """
        given = self._given_models.get(role)
        if given is not None:
            return given
        key = (role, *model_key(ctx, role))
        with self._lock:
            model = self._models.get(key)
            if model is None:
                model = self._models[key] = build_chat_model(ctx, role)
            return model

    def toolbox(self, ctx: Context) -> Toolbox | None:
        """The MCP toolbox of the context's servers config in the running event loop (None: no tools).

        Raises:
            ToolConfigError: The servers config is missing or malformed.

        """
        if not ctx.mcp_config:
            return None
        from mcp_servers.toolbox import Toolbox

        loop = asyncio.get_running_loop()
        key = (id(loop), ctx.mcp_config)
        with self._lock:
            box = self._toolboxes.get(key)
            if box is None:
                # Forget idle toolboxes of loops that have ended so their entries do not pile up.
                for stale in [k for k, b in self._toolboxes.items() if k[0] != id(loop) and not b._servers]:
                    self._toolboxes.pop(stale, None)
                box = self._toolboxes[key] = Toolbox(ctx.mcp_config)
            return box

    # -- life cycle -----------------------------------------------------------------------------

    def warm(self, question: str | None = None) -> threading.Thread:
        """Open the case bank and load the embedder on a daemon thread (CLI start-up, server start).

        The first retrieval then finds both ready, and with ``question`` its embedding is already
        cached. The bank is left to the bank worker when one was given. Failures are left for the
        node itself to raise with its own message.
        """
        ctx = self.context
        # A bank worker opens the bank in its own process: opening it here too would only compete
        # with the caller's imports for the GIL.
        open_bank = self._bank_worker is None

        def run() -> None:
            if ctx.memory_mode == "none" or ctx.k == 0:
                return
            try:
                self.embedder(ctx).warm(query=question or "warm-up", cached=True).join()
                if open_bank:
                    self.bank(ctx).count()
            except Exception:
                logger.debug("warm-up failed", exc_info=True)

        thread = threading.Thread(target=run, name="memento-warmup", daemon=True)
        thread.start()
        return thread

    async def aclose(self) -> None:
        """Close what this owner opened: MCP sessions of the running loop, then the rest (`close`)."""
        loop_id = id(asyncio.get_running_loop())
        with self._lock:
            boxes = [self._toolboxes.pop(k) for k in [k for k in self._toolboxes if k[0] == loop_id]]
        for box in boxes:
            await box.aclose()
        self.close()

    def close(self, retrain_timeout: float = 120.0) -> None:
        """Forget every client (a later call builds new ones), after a running retrain has finished.

        A refit still running when the process exits is killed inside torch, which aborts the
        interpreter ("terminate called without an active exception", exit status 134) after the
        work was done, and loses the refit; so closing waits for it, at most ``retrain_timeout``
        seconds. MCP sessions need their event loop: `aclose` closes them; a toolbox of a loop that
        has ended is dropped here (its server processes ended with the loop's transports). The
        banks' stores are closed (their Chroma systems stopped) unless a retrain still reads them.
        """
        with self._lock:
            trainers = list(self._trainers.values())
            worker, self._bank_worker = self._bank_worker, None
        if worker is not None:
            worker.close()  # reaped even when it was never asked
        for trainer in trainers:
            trainer.wait(timeout=retrain_timeout)
        busy = any(trainer.running for trainer in trainers)
        with self._lock:
            stores = list(self._stores.values())
            self._stores.clear()
            self._trainers.clear()
            self._models.clear()
            self._banks.clear()
            self._logs.clear()
            self._toolboxes.clear()
            self._selectors = None
        if not busy:  # else the stores go with their last user
            for store in stores:
                store.close()
