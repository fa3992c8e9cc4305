"""`memento`: the command line. Sub-commands live beside the concern they drive."""

from __future__ import annotations

import typer
from dotenv import load_dotenv

from evals.cli import eval_command
from memory.cli import app as memory_app
from memory.policy.cli import app as policy_app

app = typer.Typer(
    help="Memento-Graph: an LLM agent that learns from its past cases without fine-tuning.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(memory_app, name="memory")
app.add_typer(policy_app, name="policy")
app.command("eval")(eval_command)


@app.callback()
def main() -> None:
    """Load `.env` from the working directory before any command reads its settings."""
    load_dotenv(override=False)
