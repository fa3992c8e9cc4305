"""Where the bundled servers config lives: a constant with no imports, so `graph.context` can name it."""

from __future__ import annotations

from pathlib import Path

DEFAULT_SERVERS_CONFIG = str(Path(__file__).with_name("servers.json"))
