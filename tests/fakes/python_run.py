"""Run a snippet in a fresh interpreter on this checkout: what it imports is what a cold start pays."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_python(code: str, cwd: Path, *, unset: Sequence[str] = (), timeout: float = 60) -> str:
    """Run ``python -c code`` in ``cwd`` with this checkout on the path, without the ``unset``
    variables; asserts it exits 0 and returns its stdout."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for name in unset:
        env.pop(name, None)
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout
