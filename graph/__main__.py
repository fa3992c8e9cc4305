"""``python -m graph`` runs the `memento` CLI (same as the console script)."""

from graph.cli import app

app(prog_name="memento")
