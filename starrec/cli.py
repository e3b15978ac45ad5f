"""The ``starrec`` command line.

Each area of the package owns its commands in a ``commands.py`` module exposing
``register(app)``; this file only assembles them, so heavy imports (torch, transformers,
vLLM) happen inside the command that needs them, never at start-up.
"""

from __future__ import annotations

from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from starrec.data import commands as data_commands
from starrec.distill import commands as distill_commands
from starrec.eval import commands as eval_commands
from starrec.graphs import commands as graph_commands
from starrec.llm.redact import redact
from starrec.pipeline import commands as pipeline_commands
from starrec.serving import commands as serving_commands
from starrec.tools import commands as tool_commands
from starrec.tools.store import GraphStoreError

EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,  # DataFormatError, AdHocQueryError, StructuredOutputError, UnicodeDecodeError, bad JSON ...
    KeyError,  # UnknownQueryError, unknown names in our registries
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,  # includes the read-only refusals of `starrec cypher run`
    GraphStoreError,
)
"""What a user can fix from the message alone: one line, exit 1. Anything else is a bug: traceback."""


def error_line(error: BaseException) -> str:
    """``error: <message>`` on one line, secrets redacted (a KeyError's message loses its quotes)."""
    message = error.args[0] if isinstance(error, KeyError) and len(error.args) == 1 else error
    text = " | ".join(part.strip() for part in str(message).splitlines() if part.strip())
    return f"error: {redact(text or type(error).__name__)}"


class StarrecGroup(TyperGroup):
    """The top-level group: expected errors become one line on stderr and exit 1 unless ``--debug``."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.ClickException:
            raise  # usage errors keep click's message and exit 2
        except EXPECTED_ERRORS as error:
            if ctx.params.get("debug"):
                raise
            typer.secho(error_line(error), fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from error


app = typer.Typer(
    name="starrec",
    help="MARS multi-agent LLM recommender, STAR distillation and AgentRecBench evaluation.",
    cls=StarrecGroup,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


@app.callback()
def main(
    debug: Annotated[
        bool,
        typer.Option("--debug", envvar="STARREC_DEBUG", help="Show tracebacks (also STARREC_DEBUG=1)."),
    ] = False,
) -> None:
    """MARS multi-agent LLM recommender, STAR distillation and AgentRecBench evaluation."""


AREAS = (
    data_commands,
    eval_commands,
    tool_commands,
    graph_commands,
    distill_commands,
    serving_commands,
    pipeline_commands,
)
for area in AREAS:
    area.register(app)


if __name__ == "__main__":
    app()
