"""One BLAS thread for tiny matrix products.

OpenBLAS worker threads only add wake-ups to small products, and on a busy core they spin-wait:
a MiniLM query measured 350 ms with two BLAS threads beside other work and 60 ms with one, and the
bandit scoring 32 candidates 28-34 ms against under 1 ms.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with BLAS limited to one thread (a no-op without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - installed with Chroma's dependencies
        yield
        return
    with threadpool_limits(1, user_api="blas"):
        yield
