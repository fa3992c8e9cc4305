"""Chroma imported without ``overrides``' checks: the real decorator comes back, the bank works."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from memory.chroma_import import _mark_only

ROOT = Path(__file__).resolve().parents[2]

# A fresh interpreter: this test process may have imported Chroma already.
_PROBE = """
import json, sys
import overrides
checks = sys.modules["overrides.overrides"]
real = overrides.override
# The real decorator's checking step: counted, so a swap that no longer happens shows.
checked = []
inner = checks._overrides
checks._overrides = lambda *a, **k: (checked.append(1), inner(*a, **k))[1]
from memory.chroma_import import import_chromadb
from memory.bank import CaseBank
from memory.embeddings import HashEmbedder
chromadb = import_chromadb()
missing = [m for m in ("chromadb", "chromadb.api.rust") if m not in sys.modules]
bank = CaseBank(sys.argv[1], embedder=HashEmbedder(16), create=True)
from memory.cases import Case
bank.upsert(Case(task_id="t1", question="Which shelf holds item K-101?", answer="S3", reward=1.0))
hits = bank.search("Which shelf holds item K-101?", 1)
print(json.dumps({
    "restored": overrides.override is real and overrides.overrides.__name__ != "_mark_only",
    "missing": missing,
    "hit": hits[0].case.task_id if hits else None,
    "marked": getattr(chromadb.api.rust.RustBindingsAPI._count, "__override__", False),
    "checked": len(checked),
}))
"""


def test_chroma_imports_light_then_the_real_decorator_is_back(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(tmp_path / "bank")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "ANONYMIZED_TELEMETRY": "False"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"restored": True, "missing": [], "hit": "t1", "marked": True, "checked": 0}


def test_the_light_decorator_marks_in_both_forms():
    def method():
        return 1

    assert _mark_only(method) is method and method.__override__ is True
    assert _mark_only(check_signature=False)(method) is method


def test_a_client_module_missing_from_another_chroma_layout_is_skipped(monkeypatch):
    import overrides

    from memory import chroma_import

    real = overrides.override
    monkeypatch.setitem(chroma_import._CLIENT_MODULES, "future", ("chromadb.no_such_client_module",))
    assert chroma_import.import_chromadb("future").__name__ == "chromadb"
    assert overrides.override is real
