"""Learning-curve plot: accuracy per pass over the stream, one line per memory mode."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in CI

import matplotlib.pyplot as plt

_STYLE = {
    "none": {"color": "#7f7f7f", "marker": "o", "linestyle": "--"},
    "similarity": {"color": "#1f77b4", "marker": "s", "linestyle": "-"},
    "learned": {"color": "#d62728", "marker": "^", "linestyle": ":"},
}
# Equal curves (learned falling back to similarity, say) lie on top of each other: each curve is
# drawn thinner, with smaller markers, than the one before it, so the ones beneath show around it.
_WIDTHS = (5.0, 3.2, 1.6, 1.0)
_MARKER_SIZES = (11.0, 7.5, 4.5, 3.0)


def plot_learning_curves(
    curves: dict[str, dict[str, list[tuple[int, float]]]],
    path: str | Path,
    *,
    title: str = "Accuracy across passes",
    labels: dict[str, str] | None = None,
) -> Path:
    """Draw accuracy against pass number for each memory mode (one panel per split).

    Args:
        curves: ``{split: {mode: [(pass, accuracy), ...]}}`` (see `evals.summary.learning_curves`).
        path: The PNG to write (replaced atomically).
        title: Figure title.
        labels: Legend text per mode (e.g. to say that learned fell back to similarity).

    Returns:
        The path written.

    Raises:
        ValueError: There is nothing to plot.

    """
    splits = [s for s in ("train", "test", "all") if curves.get(s)] + sorted(
        s for s in curves if s not in ("train", "test", "all") and curves[s]
    )
    if not splits:
        raise ValueError("no results to plot")
    labels = labels or {}
    fig, axes = plt.subplots(1, len(splits), figsize=(5.5 * len(splits), 4), squeeze=False)
    for ax, split in zip(axes[0], splits, strict=True):
        passes: set[int] = set()
        ordered = sorted(curves[split].items(), key=lambda kv: list(_STYLE).index(kv[0]) if kv[0] in _STYLE else 99)
        for layer, (mode, points) in enumerate(ordered):
            xs = [p for p, _ in points]
            ys = [a for _, a in points]
            passes.update(xs)
            ax.plot(
                xs,
                ys,
                label=labels.get(mode, mode),
                linewidth=_WIDTHS[min(layer, len(_WIDTHS) - 1)],
                markersize=_MARKER_SIZES[min(layer, len(_MARKER_SIZES) - 1)],
                zorder=2 + layer,
                **_STYLE.get(mode, {}),
            )
        ax.set_xticks(sorted(passes))
        ax.set_xlabel("pass over the stream")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.set_title({"train": "stream (memory written)", "test": "held-out (leakage guard on)"}.get(split, split))
        ax.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return path
