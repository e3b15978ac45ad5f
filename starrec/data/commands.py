"""CLI commands of this area (registered by :mod:`starrec.cli`): ``data fetch|info``, ``tasks build``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

FETCHABLE = ("movielens-100k",)
SCENARIO_NAMES = ("classic", "cold_user", "cold_item", "evolving_long", "evolving_short")

data_app = typer.Typer(help="Datasets in the AgentSociety JSON-lines layout.", no_args_is_help=True)
tasks_app = typer.Typer(help="AgentRecBench task folders.", no_args_is_help=True)


@data_app.command("fetch")
def fetch(
    name: Annotated[str, typer.Argument(help=f"Dataset to fetch: {', '.join(FETCHABLE)}.")],
    dest: Annotated[Path, typer.Option(help="Directory to write item.json, user.json, review.json into.")],
) -> None:
    """Download a public dataset and write it in the AgentSociety layout (skipped if already there)."""
    from rich.console import Console

    from starrec.data.agentsociety import load_dataset
    from starrec.data.movielens import fetch_movielens_100k

    if name not in FETCHABLE:
        raise typer.BadParameter(f"unknown dataset {name!r}; choose one of {', '.join(FETCHABLE)}")
    console = Console()
    with console.status(f"fetching {name} into {dest}"):
        path = fetch_movielens_100k(dest)
    console.print(f"{name} in {path}: {load_dataset(path).stats()}")


@data_app.command("info")
def info(
    path: Annotated[Path, typer.Argument(help="Dataset directory (AgentSociety layout).")],
    domain: Annotated[str | None, typer.Option(help="Override the inferred domain.")] = None,
) -> None:
    """Load a dataset and print its size, domain and time span."""
    from rich.console import Console
    from rich.table import Table

    from starrec.data.agentsociety import format_time, load_dataset

    dataset = load_dataset(path, domain=domain)
    table = Table(title=f"{path}")
    table.add_column("field")
    table.add_column("value", justify="right")
    events = dataset.interactions
    rows = {
        "domain": dataset.domain,
        **{key: str(value) for key, value in dataset.stats().items()},
        "users with interactions": str(len(dataset.by_user)),
        "items with interactions": str(len(dataset.by_item)),
        "first": format_time(events[0].timestamp) if events else "-",
        "last": format_time(events[-1].timestamp) if events else "-",
    }
    for key, value in rows.items():
        table.add_row(key, value)
    Console().print(table)


@tasks_app.command("build")
def build(
    data: Annotated[Path, typer.Option(help="Dataset directory (AgentSociety layout).")],
    out: Annotated[Path, typer.Option(help="Task folder to write (tasks/, groundtruth/, manifest.json).")],
    scenario: Annotated[str, typer.Option(help=f"One of: {', '.join(SCENARIO_NAMES)}.")],
    n: Annotated[int, typer.Option(help="Number of tasks (one per user).")] = 100,
    seed: Annotated[int, typer.Option(help="Seed for user selection, negatives and candidate order.")] = 0,
    negatives: Annotated[str, typer.Option(help="Negative sampling: uniform | popularity.")] = "uniform",
) -> None:
    """Build AgentRecBench tasks for one scenario; the manifest records every rule and threshold."""
    from rich.console import Console

    from starrec.data.agentsociety import load_dataset
    from starrec.data.scenarios import build_tasks, data_files_fingerprint
    from starrec.data.tasks import write_tasks

    console = Console()
    if out.exists() and any(out.iterdir()):
        raise typer.BadParameter(f"{out} exists and is not empty; choose a new folder", param_hint="--out")
    try:
        built = build_tasks(load_dataset(data), scenario, n, seed, negatives,
                            fingerprint=data_files_fingerprint(data))
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    built.manifest["dataset"]["path"] = str(data)
    write_tasks(built.tasks, out, built.manifest)
    manifest = built.manifest
    console.print(f"wrote {manifest['n_tasks']} {scenario} tasks to {out} "
                  f"({manifest['n_eligible_users']} eligible users; {manifest['definition']})")
    if manifest["n_tasks"] < n:
        console.print(f"[yellow]only {manifest['n_tasks']} of {n} requested tasks: "
                      "not enough eligible users[/yellow]")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the top-level app."""
    app.add_typer(data_app, name="data")
    app.add_typer(tasks_app, name="tasks")
