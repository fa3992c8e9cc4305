"""Policy checkpoints: versioned, self-describing, loaded with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of JSON-like values and tensors, so the safe unpickler accepts it and
nothing in it can execute code. It carries a digest of its weights: a file whose weights were
edited (or damaged) after training is refused instead of silently scoring with them.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from memory.policy.features import FEATURE_NAMES
from memory.policy.model import CaseScorer, FinetuneScorer, load_backbone

FORMAT = "memento-case-policy"
FORMAT_VERSION = 1
VARIANTS = ("head", "finetune")


class PolicyCheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message says why and what to do."""


@dataclass
class LoadedPolicy:
    """A model ready to score, with its checkpoint's description."""

    model: CaseScorer | FinetuneScorer
    variant: str
    version: str
    metadata: dict[str, Any]
    config: dict[str, Any]
    tokenizer: Any = None
    path: str = ""


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of every tensor, in name order."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _jsonable(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be JSON-plain (no NaN, numpy or custom objects): {exc}") from exc


def save_checkpoint(
    model: CaseScorer | FinetuneScorer,
    path: str | os.PathLike[str],
    *,
    metadata: dict[str, Any],
    backbone: str = "all-MiniLM-L6-v2",
) -> str:
    """Write a checkpoint atomically (temp file + ``os.replace``); returns its version string.

    A reader (a running graph's selector) sees either the old or the new file, never half of one.
    """
    variant = "finetune" if isinstance(model, FinetuneScorer) else "head"
    head = model.head if isinstance(model, FinetuneScorer) else model
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    digest = weights_digest(state)
    version = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + digest[:8]
    config: dict[str, Any] = {
        "variant": variant,
        "head": head.config(),
        "feature_names": list(FEATURE_NAMES),
        "backbone": backbone,
    }
    if isinstance(model, FinetuneScorer):
        config["max_length"] = model.max_length
    meta = dict(metadata)
    meta.update({"weights_sha256": digest, "torch_version": torch.__version__, "saved_at": time.time()})
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "version": version,
        "config": _jsonable(config, "checkpoint config"),
        "metadata": _jsonable(meta, "checkpoint metadata"),
        "state_dict": state,
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return version


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw checkpoint dict after format, compatibility and integrity checks (no model built).

    Raises:
        PolicyCheckpointError: Missing, unsafe, foreign, too new, incompatible or tampered.

    """
    p = Path(path)
    if not p.is_file():
        raise PolicyCheckpointError(f"no policy checkpoint at {p}: train one with `memento policy train`")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PolicyCheckpointError(
            f"{p} is not a loadable policy checkpoint (torch.load(weights_only=True) refused it: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). Only checkpoints "
            "written by `memento policy train` are accepted; retrain to replace it."
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise PolicyCheckpointError(
            f"{p} is not a Memento policy checkpoint (format {payload.get('format') if isinstance(payload, dict) else type(payload).__name__!r})"
        )
    fv = payload.get("format_version")
    if not isinstance(fv, int) or fv > FORMAT_VERSION:
        raise PolicyCheckpointError(
            f"{p} has checkpoint format version {fv!r}; this version of memento reads up to "
            f"{FORMAT_VERSION}. Upgrade memento or retrain the policy."
        )
    config = payload.get("config") or {}
    if config.get("variant") not in VARIANTS:
        raise PolicyCheckpointError(f"{p}: unknown policy variant {config.get('variant')!r}")
    if list(config.get("feature_names") or []) != list(FEATURE_NAMES):
        raise PolicyCheckpointError(
            f"{p} was trained on features {config.get('feature_names')} but this version computes "
            f"{list(FEATURE_NAMES)}; retrain with `memento policy train`."
        )
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PolicyCheckpointError(f"{p}: the checkpoint holds no weights")
    meta = payload.get("metadata") or {}
    if weights_digest(state) != meta.get("weights_sha256"):
        raise PolicyCheckpointError(
            f"{p}: the weights do not match the digest recorded at training time (the file was "
            "modified or damaged). Refusing to score with it; retrain or restore the original."
        )
    return payload


def load_checkpoint(path: str | os.PathLike[str]) -> LoadedPolicy:
    """Load a checkpoint into a model in eval mode.

    Raises:
        PolicyCheckpointError: As `read_checkpoint`, or the weights do not fit the architecture.

    """
    payload = read_checkpoint(path)
    config = payload["config"]
    try:
        head = CaseScorer(**config["head"])
        tokenizer = None
        if config["variant"] == "finetune":
            tokenizer, encoder = load_backbone(weights=False)
            model: CaseScorer | FinetuneScorer = FinetuneScorer(
                encoder, head, max_length=int(config.get("max_length", 64))
            )
        else:
            model = head
        model.load_state_dict(payload["state_dict"], strict=True)
    except (RuntimeError, TypeError, KeyError) as exc:
        raise PolicyCheckpointError(
            f"{path}: the weights do not fit the {config.get('variant')} policy architecture "
            f"({type(exc).__name__}: {str(exc).splitlines()[0]}); retrain with `memento policy train`."
        ) from exc
    model.eval()
    return LoadedPolicy(
        model=model,
        variant=config["variant"],
        version=str(payload["version"]),
        metadata=payload["metadata"],
        config=config,
        tokenizer=tokenizer,
        path=str(path),
    )
