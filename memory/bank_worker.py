"""`BankWorker`: a child process that opens the case bank and answers one search, for a fast start.

`memento ask` can show its cases only after two imports of about a second each: LangGraph (the
graph) and Chroma (the bank). Both are pure-Python imports that hold the GIL, so a thread cannot
overlap them; a second process can, on another core. The command therefore starts this worker
before its own heavy imports: the worker imports Chroma and opens the bank while the command
imports LangGraph and builds its graph, and the first retrieval hands the worker its search (the
exact `CaseBank.search` arguments, query vector included, so the hits are the ones the command's
own client would return) and gets the hits back. The command opens its own client later, for its
first write; `WorkerSearch` imports Chroma for it on a thread meanwhile.

The worker is only a shortcut. When it cannot start, cannot open the bank (missing, damaged,
locked, unreachable), dies, or fails the search, the caller opens the bank itself, so every error
is raised by the usual code with its usual message. It never creates a bank, writes nothing but
what every reader of a folder writes (the lock-holder record), answers at most one search and
exits; it also exits when its parent goes away (end of its input), and `BankWorker.close` ends it.

This module imports only the standard library until the worker itself runs: the command imports
it first thing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memory.bank import CaseBank, ScoredCase
    from memory.embeddings import Embedder

logger = logging.getLogger(__name__)

_HEADER = struct.Struct("!Q")
# The project root: the worker imports this checkout's `memory`, whatever the caller's sys.path.
_ROOT = Path(__file__).resolve().parents[1]


def _frame(obj: Any) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            raise EOFError("the parent closed the pipe")
        data += chunk
    return data


def has_spare_core() -> bool:
    """Whether a worker can run beside its caller: it pays off only on a core of its own.

    With one usable core, or with the machine already saturated (a 1-minute load average at or
    above its core count), the worker's own start-up and Chroma import take CPU from its caller:
    measured on 2 cores at load 3, ``ask`` showed its cases 0.4 s later and ended 1.5 s later.
    """
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity API on this platform
        usable = os.cpu_count() or 1
    if usable < 2:
        return False
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not reported here: assume the machine is not saturated
        return True
    # The load average is machine-wide: compare it with the machine's cores.
    return load < (os.cpu_count() or usable)


class BankWorker:
    """The parent's handle on the worker process (see the module docstring)."""

    def __init__(
        self,
        path: str | None,
        url: str | None,
        namespace: str,
        *,
        lock_timeout: float = 60.0,
        timeout: float | None = None,
    ):
        """Start the worker; it begins importing Chroma at once.

        Args:
            path: The bank folder as `CaseBank` takes it (None: ``MEMENTO_BANK_PATH``, resolved by
                the worker from the same environment and working directory).
            url: A Chroma server URL instead (wins over ``path``, as in `CaseBank`).
            namespace: The bank's default namespace.
            lock_timeout: Seconds the worker waits for another process's write lock while opening.
            timeout: Seconds to wait for any answer before giving up on the worker (default: the
                lock timeout plus a minute, for a slow start on a busy machine).

        Raises:
            OSError: The process could not be started.

        """
        self.key = (path, url, namespace)
        self.timeout = timeout if timeout is not None else lock_timeout + 60.0
        self._state = "starting"  # -> ready | failed | used | closed
        # Why the worker gave no answer (for the debug log and for tests).
        self.failure: str | None = None
        self._lock = threading.Lock()
        self._buffer = b""
        # -P, and no empty PYTHONPATH entry (which means "."): the caller's working directory must
        # not shadow the project's modules.
        paths = [str(_ROOT), *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-P", "-m", "memory.bank_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            self._send({"path": path, "url": url, "namespace": namespace, "lock_timeout": lock_timeout})
        except OSError:
            self.close()
            raise

    @classmethod
    def start(cls, path: str | None, url: str | None, namespace: str, **kwargs: Any) -> BankWorker | None:
        """A started worker, or None when none can be started (the caller opens the bank)."""
        if not hasattr(select, "poll"):  # the parent waits on its pipe with poll(), POSIX-only
            return None
        try:
            return cls(path, url, namespace, **kwargs)
        except (OSError, ValueError):  # no fork/exec here (a sandbox, a process limit)
            logger.debug("bank worker not started", exc_info=True)
            return None

    def serves(self, path: str | None, url: str | None, namespace: str) -> bool:
        """Whether the worker opened the bank these `CaseBank` arguments name."""
        return self.key == (path, url, namespace)

    # -- the parent's side of the pipe -----------------------------------------------------------

    def _send(self, obj: Any) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(_frame(obj))
        self._proc.stdin.flush()

    def _receive(self, deadline: float) -> Any:
        """The next message, reading as it arrives until ``deadline``.

        Raises:
            TimeoutError: Nothing complete arrived in time.
            EOFError: The worker exited.

        """
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while True:
            if len(self._buffer) >= _HEADER.size:
                (size,) = _HEADER.unpack_from(self._buffer)
                end = _HEADER.size + size
                if len(self._buffer) >= end:
                    data, self._buffer = self._buffer[_HEADER.size : end], self._buffer[end:]
                    return pickle.loads(data)  # from this process's own child, running this code
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer from the bank worker within {self.timeout:g} s")
            # poll, not select: select() fails on descriptors above 1023 (a long-running process).
            if poller.poll(left * 1000):
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise EOFError(f"the bank worker closed its output (exit status {self._proc.poll()})")
                self._buffer += chunk

    def wait_ready(self) -> bool:
        """Wait until the worker has opened the bank: True, or False if it cannot (it is then closed)."""
        with self._lock:
            if self._state == "starting":
                try:
                    kind, detail = self._receive(time.monotonic() + self.timeout)
                except Exception as exc:  # a broken pipe, a dead worker, a timeout: no worker then
                    kind, detail = "failed", f"{type(exc).__name__}: {exc}"
                if kind == "ready":
                    self._state = "ready"
                else:
                    self.failure = f"could not open the bank: {detail}"
                    logger.debug("bank worker %s", self.failure)
                    self._state = "failed"
            ready = self._state == "ready"
        if not ready:
            self.close()
        return ready

    def search(self, **kwargs: Any) -> list[ScoredCase] | None:
        """The hits of ``CaseBank.search(**kwargs)`` from the worker's bank; None if it gave none.

        One search per worker: it exits after answering, and later calls return None at once.
        """
        if not self.wait_ready():
            return None
        with self._lock:
            if self._state != "ready":
                return None
            self._state = "used"
            try:
                self._send(("search", kwargs))
                kind, detail = self._receive(time.monotonic() + self.timeout)
            except Exception as exc:  # as in wait_ready: the caller's bank answers instead
                kind, detail = "error", f"{type(exc).__name__}: {exc}"
        self.close()
        if kind != "hits":
            self.failure = f"search failed: {detail}"
            logger.debug("bank worker %s", self.failure)
            return None
        return detail

    def close(self) -> None:
        """End the worker (at once if it is still working) and reap it; safe to call again."""
        with self._lock:
            proc, self._proc = self._proc, None
            busy = self._state == "starting"
            if self._state in ("starting", "ready"):
                self._state = "closed"
        if proc is None:
            return
        if busy:  # still importing Chroma or opening the bank: nothing of it is needed any more
            proc.kill()
        if proc.stdin is not None:
            # An idle worker exits on end of input; a broken pipe means it has exited already.
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


class WorkerSearch:
    """A bank for one retrieval: the worker answers its search, the caller's own bank the rest.

    It offers what `memory.retrieval.retrieve_cases` uses of a bank (``embedder`` and ``search``).
    Only a search with a ``query_embedding`` goes to the worker (it loads no model, so it could not
    embed a query text the way the caller's embedder would).
    """

    def __init__(self, worker: BankWorker, embedder: Embedder, bank: Callable[[], CaseBank]):
        """Bind the worker, the caller's embedder and how to open the caller's own bank."""
        self._worker = worker
        self._embedder = embedder
        self._bank = bank

    @property
    def embedder(self) -> Embedder:
        """The caller's embedder (the one its own bank would use)."""
        return self._embedder

    def search(self, *args: Any, **kwargs: Any) -> list[ScoredCase]:
        """``CaseBank.search``, answered by the worker when it can."""
        if not args and kwargs.get("query_embedding") is not None:
            hits = self._worker.search(**kwargs)
            if hits is not None:
                # The caller's own client (its first write) needs Chroma: import it meanwhile.
                threading.Thread(target=_import_chroma, name="memento-chroma-import", daemon=True).start()
                return hits
        return self._bank().search(*args, **kwargs)


def _import_chroma() -> None:
    try:
        from memory.chroma_import import import_chromadb

        import_chromadb()
    except Exception:  # the caller's own open reports it
        logger.debug("importing chromadb failed", exc_info=True)


# -- the worker's side ---------------------------------------------------------------------------


def _serve(inp: IO[bytes], out: IO[bytes]) -> None:
    """Open the bank named by the first message, answer one search, return."""

    def read() -> Any:
        (size,) = _HEADER.unpack(_read_exactly(inp, _HEADER.size))
        return pickle.loads(_read_exactly(inp, size))

    def write(obj: Any) -> None:
        out.write(_frame(obj))
        out.flush()

    request = read()
    try:
        from memory.bank import CaseBank

        bank = CaseBank(
            request["path"],
            url=request["url"],
            namespace=request["namespace"],
            create=False,  # a missing bank is the caller's to create
            lock_timeout=request["lock_timeout"],
        )
        bank.count()  # opens the namespace's collection before the search arrives
    except Exception as exc:
        write(("failed", f"{type(exc).__name__}: {exc}"))
        return
    write(("ready", None))
    kind, kwargs = read()
    if kind != "search":
        return
    try:
        hits = bank.search(**kwargs)
    except Exception as exc:
        write(("error", f"{type(exc).__name__}: {exc}"))
        return
    write(("hits", hits))


def main() -> None:
    """The worker process: serve on stdin/stdout, then exit without interpreter teardown."""
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    # The pipe carries only frames: anything a library prints goes to stderr (discarded).
    sys.stdout = sys.stderr
    code = 0
    try:
        _serve(inp, out)
    except BaseException:  # end of input (the parent went away), an interrupt: nothing to report
        code = 1
    # Nothing was written to the bank; Chroma's teardown would only cost time.
    os._exit(code)


if __name__ == "__main__":
    main()
