import json

import pytest

from evals.plots import plot_learning_curves
from evals.summary import learning_curves, summarize, to_markdown, write_summary


def records():
    rows = []
    for mode, accs in {"none": [0.2, 0.2], "similarity": [0.3, 0.6]}.items():
        for it, acc in enumerate(accs, start=1):
            for i in range(10):
                rows.append(
                    {
                        "mode": mode,
                        "iteration": it,
                        "split": "train",
                        "source": "abc"[i % 3],
                        "correct": i < acc * 10,
                        "exact_match": float(i < acc * 10),
                        "f1": 0.5,
                        "tokens": 50,
                        "latency_s": 0.1,
                        "cost_usd": 0.001,
                    }
                )
    return rows


def test_summary_curves_markdown_and_png(tmp_path):
    summary = summarize(records(), meta={"k": 4, "notes": ["learned fell back"]})
    curves = learning_curves(summary)
    assert curves["train"]["similarity"] == [(1, pytest.approx(0.3)), (2, pytest.approx(0.6))]
    assert curves["train"]["none"][1][1] == pytest.approx(0.2)
    md = to_markdown(summary)
    assert "| similarity | 2 | train | 10 | 0.600 |" in md
    assert "## Per source" in md and "learned fell back" in md

    json_path, _ = write_summary(summary, tmp_path)
    assert json.loads(json_path.read_text())["overall"][0]["mode"] == "none"
    png = plot_learning_curves(curves, tmp_path / "curve.png", labels={"none": "no memory"})
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert not list(tmp_path.glob(".*tmp*")) and not list(tmp_path.glob(".curve*"))


def test_plot_refuses_empty_input(tmp_path):
    with pytest.raises(ValueError, match="no results"):
        plot_learning_curves({}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def _pixels(path, color: str) -> int:
    """How many pixels of the PNG show this exact line color (antialiased edges excluded)."""
    import matplotlib.image as mpimg
    import numpy as np

    img = mpimg.imread(path)[..., :3]
    target = np.array([int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(img - target).sum(axis=-1) < 0.08).sum())


def test_equal_curves_stay_visible(tmp_path):
    """Learned falling back to similarity gives equal curves: neither may hide the other."""
    from evals.plots import _STYLE, plot_learning_curves

    points = [(1, 0.5), (2, 0.75), (3, 0.75)]
    blue, red = _STYLE["similarity"]["color"], _STYLE["learned"]["color"]
    alone = plot_learning_curves({"train": {"similarity": points}}, tmp_path / "alone.png")
    both = plot_learning_curves({"train": {"similarity": points, "learned": points}}, tmp_path / "both.png")
    # The curve beneath keeps a good share of what it shows alone; the one on top shows too.
    assert _pixels(both, blue) >= 0.4 * _pixels(alone, blue)
    assert _pixels(both, red) >= 0.15 * _pixels(alone, blue)
