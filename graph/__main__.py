"""``python -m graph`` runs the `memento` CLI (same as the console script)."""

from graph.entry import main

main()
