"""Import Chroma without the class-definition checks of the ``overrides`` package (a fifth of a cold start).

Chroma marks about 160 methods with ``overrides``' ``@override`` decorator. At import time the
decorator disassembles each enclosing class statement to find its base classes and compares every
signature with the base class's: a check for Chroma's own developers that changes nothing at run
time. On 2 cores it cost 0.10 s of the 0.56 s that ``import chromadb`` and opening a folder take,
and a person waits for it on every ``memento memory search``. Only Chroma uses ``overrides`` here.

`import_chromadb` therefore imports Chroma, and the client modules it would import on first use,
with ``override`` replaced by a decorator that only marks the method (the mark is what
``EnforceOverrides`` reads), then puts the real decorator back. Every module that may be the
first to import Chroma calls it first; once Chroma is imported it does nothing.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import threading
from types import ModuleType
from typing import Any

# The modules a client of each kind imports on first use (Chroma 1.x): imported in the same window.
_CLIENT_MODULES = {
    "persistent": ("chromadb.api.rust", "chromadb.telemetry.product.posthog"),
    "http": ("chromadb.api.fastapi", "chromadb.telemetry.product.posthog"),
}
_DECORATORS = ("override", "overrides")
# One import at a time: two threads swapping the decorator could leave the light one installed.
_SWAP = threading.Lock()


def _mark_only(method: Any = None, **_checks: Any) -> Any:
    """``@override`` without its checks: marks the method, as the real one does first."""
    if method is None:  # used as ``@override(check_signature=...)``
        return _mark_only
    method.__override__ = True
    return method


def import_chromadb(kind: str = "persistent") -> ModuleType:
    """The ``chromadb`` module, imported (if nobody has yet) without ``overrides``' checks.

    Args:
        kind: Which client will be opened (``persistent`` or ``http``): its modules are imported too.

    """
    modules = ("chromadb", *_CLIENT_MODULES.get(kind, ()))
    if all(name in sys.modules for name in modules):
        return sys.modules["chromadb"]
    with _SWAP:
        decorators: ModuleType | None
        try:
            decorators = importlib.import_module("overrides")
        except ImportError:  # a Chroma release without it: nothing to skip
            decorators = None
        saved = {name: getattr(decorators, name) for name in _DECORATORS if hasattr(decorators, name)}
        try:
            for name in saved:
                setattr(decorators, name, _mark_only)
            importlib.import_module("chromadb")
            for name in modules[1:]:
                # Another Chroma layout may lack one: it imports its own modules when it needs them.
                with contextlib.suppress(ModuleNotFoundError):
                    importlib.import_module(name)
        finally:
            for name, real in saved.items():
                setattr(decorators, name, real)
    return sys.modules["chromadb"]
