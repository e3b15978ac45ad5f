"""CLI commands of the pipeline (registered by :mod:`starrec.cli`): ``starrec pipeline run``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from starrec.pipeline.config import STAGES

pipeline_app = typer.Typer(
    name="pipeline",
    help="The whole STAR pipeline from one config file: teach, filter, planner-sft, sft, rl-data, grpo, "
    "serve, eval.",
    no_args_is_help=True,
)

STAGE_NAMES = ", ".join(STAGES)


@pipeline_app.command("run")
def run_command(
    config: Annotated[Path, typer.Argument(help="Pipeline config (YAML), e.g. configs/pipeline-tiny.yaml.")],
    from_stage: Annotated[
        str | None, typer.Option("--from", help=f"Redo this stage and every later one ({STAGE_NAMES}).")
    ] = None,
    only: Annotated[str | None, typer.Option(help="Redo this stage alone.")] = None,
    work: Annotated[Path | None, typer.Option(help="Work folder (overrides the config's `work`).")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config field: KEY.PATH=VALUE (YAML value), repeatable."),
    ] = None,
) -> None:
    """Run the pipeline; every stage whose output exists in the work folder is skipped (resume).

    Writes WORK/pipeline.json (config, per-stage status, seconds and result) and
    WORK/eval/results.json (every row: HR@1/3/5/avg with 95% intervals, time, calls, tokens, cost).
    """
    from starrec.graphs.teach import RunFolderBusyError
    from starrec.pipeline.config import load_config
    from starrec.pipeline.runner import run_pipeline
    from starrec.serving.server import VLLMServerError

    loaded = load_config(config, set_ or [], work=work)
    try:
        outcome = run_pipeline(loaded, from_stage=from_stage, only=only)
    except (RunFolderBusyError, VLLMServerError, ConnectionError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        typer.secho(f"error: {first}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    print_outcome(outcome)


def print_outcome(outcome: dict[str, Any]) -> None:
    """Stage table, then the result rows when eval ran or was read back."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    stages = Table(title=f"pipeline stages ({outcome['work']})")
    for column in ("stage", "status", "seconds"):
        stages.add_column(column, justify="right" if column == "seconds" else "left")
    for name, entry in outcome["stages"].items():
        seconds = entry.get("seconds")
        stages.add_row(name, entry["status"], f"{seconds:.1f}" if seconds is not None else "–")
    console.print(stages)
    results = outcome["stages"].get("eval", {}).get("result")
    if results:
        console.print(rows_table(results["rows"], f"results on {results['n_tasks']} test tasks"))
        console.print(
            "[dim]cells: value [95% bootstrap interval over tasks]; full rows in "
            f"{Path(outcome['work']) / 'eval' / 'results.json'}[/dim]"
        )


def rows_table(rows: list[dict[str, Any]], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for column in ("method", "HR@1", "HR@3", "HR@5", "HR_avg", "s/task", "calls/task", "tokens/task"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for entry in rows:
        cells = [
            f"{entry[k]:.3f} [{entry['ci95'][k][0]:.2f}, {entry['ci95'][k][1]:.2f}]"
            for k in ("hr@1", "hr@3", "hr@5", "hr_avg")
        ]
        seconds = entry.get("wall_s_per_task")
        table.add_row(
            entry["method"],
            *cells,
            f"{seconds:.2f}" if seconds is not None else "–",
            f"{entry['llm_calls_per_task']:.1f}",
            f"{entry['generated_tokens_per_task']:.0f}",
        )
    return table


def register(app: typer.Typer) -> None:
    """Add this area's commands to the top-level app."""
    app.add_typer(pipeline_app, name="pipeline")
