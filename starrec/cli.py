"""The ``starrec`` command line.

Each area of the package owns its commands in a ``commands.py`` module exposing
``register(app)``; this file only assembles them, so heavy imports (torch, transformers,
vLLM) happen inside the command that needs them, never at start-up.
"""

from __future__ import annotations

import typer

from starrec.data import commands as data_commands
from starrec.distill import commands as distill_commands
from starrec.eval import commands as eval_commands
from starrec.graphs import commands as graph_commands
from starrec.serving import commands as serving_commands
from starrec.tools import commands as tool_commands

app = typer.Typer(
    name="starrec",
    help="MARS multi-agent LLM recommender, STAR distillation and AgentRecBench evaluation.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)

AREAS = (data_commands, eval_commands, tool_commands, graph_commands, distill_commands, serving_commands)
for area in AREAS:
    area.register(app)


if __name__ == "__main__":
    app()
