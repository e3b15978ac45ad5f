"""This area's CLI (registered by :mod:`starrec.cli`): ``data fetch|info|import``, ``tasks build``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from starrec.data.importers import Imported

FETCHABLE = ("movielens-100k",)
SCENARIO_NAMES = ("classic", "cold_user", "cold_item", "evolving_long", "evolving_short")

data_app = typer.Typer(help="Datasets in the AgentSociety JSON-lines layout.", no_args_is_help=True)
tasks_app = typer.Typer(help="AgentRecBench task folders.", no_args_is_help=True)
import_app = typer.Typer(
    help="Import your own data (CSV/TSV, RecBole atomic files, a Hugging Face dataset on disk) into the "
    "AgentSociety layout every other command reads.",
    no_args_is_help=True,
)
data_app.add_typer(import_app, name="import")


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


# Options shared by the three import commands (typer needs each declared per command).
Dest = Annotated[Path, typer.Option(help="Folder to write item.json, user.json, review.json, dataset.json "
                                    "into; must be new or empty (see --overwrite).")]
UserCol = Annotated[str, typer.Option(help="Interactions column holding the user id.")]
ItemCol = Annotated[str, typer.Option(help="Interactions column holding the item id.")]
TimeCol = Annotated[str, typer.Option(help="Interactions column holding the time.")]
RatingCol = Annotated[str | None, typer.Option(help="Interactions column holding the rating (none: no "
                                                "ratings).")]
TextCol = Annotated[str | None, typer.Option(help="Interactions column holding the review text.")]
TimeFormat = Annotated[str, typer.Option(
    help="auto (unix seconds/ms, YYYY-MM-DD[ HH:MM:SS], ISO 8601), unix, unix_ms, iso, or a strptime pattern "
    "such as '%d/%m/%Y %H:%M'; naive times are UTC.")]
Delimiter = Annotated[str, typer.Option(help="Field delimiter of the CSV files: auto (from the header line), "
                                        "',', ';', '|' or '\\t'.")]
ItemsFile = Annotated[Path | None, typer.Option("--items", help="Items table (one row per item).")]
ItemIdCol = Annotated[str | None, typer.Option(help="Items column holding the item id (default: "
                                                "--item-col).")]
TitleCol = Annotated[str | None, typer.Option(help="Items column holding the title.")]
CategoryCol = Annotated[str | None, typer.Option(help="Items column holding the categories/genres.")]
CategorySep = Annotated[str, typer.Option(help="What separates categories within one cell.")]
UsersFile = Annotated[Path | None, typer.Option("--users", help="Users table (one row per user).")]
UserIdCol = Annotated[str | None, typer.Option(help="Users column holding the user id (default: "
                                                "--user-col).")]
Domain = Annotated[str | None, typer.Option(
    help="What the items are: movie, book, product, business or item (default: inferred from item fields).")]
Name = Annotated[str | None, typer.Option(help="Dataset name (default: the --dest folder's name).")]
SkipInvalid = Annotated[bool, typer.Option(
    help="Drop interaction rows with an empty id or a bad time/rating (counted, first 5 shown) instead of "
    "stopping at the first.")]
Overwrite = Annotated[bool, typer.Option(help="Replace the dataset in --dest (a dataset folder only).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object, not a table.")]


@import_app.command("csv")
def import_csv_command(
    interactions: Annotated[Path, typer.Argument(help="Interactions CSV/TSV (one row per interaction).")],
    dest: Dest,
    user_col: UserCol = "user_id",
    item_col: ItemCol = "item_id",
    time_col: TimeCol = "timestamp",
    rating_col: RatingCol = None,
    text_col: TextCol = None,
    time_format: TimeFormat = "auto",
    delimiter: Delimiter = "auto",
    items: ItemsFile = None,
    item_id_col: ItemIdCol = None,
    title_col: TitleCol = None,
    category_col: CategoryCol = None,
    category_sep: CategorySep = "|",
    users: UsersFile = None,
    user_id_col: UserIdCol = None,
    domain: Domain = None,
    name: Name = None,
    skip_invalid: SkipInvalid = False,
    overwrite: Overwrite = False,
    as_json: AsJson = False,
) -> None:
    """Import a CSV/TSV of interactions (plus optional items and users tables)."""
    from starrec.data.importers import ColumnMap, RecordMap, import_csv

    columns = ColumnMap(user_col, item_col, time_col, rating_col, text_col, time_format)

    def load(show_progress: bool) -> Imported:
        return import_csv(
            interactions, columns, delimiter=delimiter,
            items=items, item_fields=RecordMap(item_id_col, title_col, category_col, category_sep or None),
            users=users, user_fields=RecordMap(user_id_col, category_sep=None),
            domain=domain, name=name or dest.name, skip_invalid=skip_invalid, show_progress=show_progress,
        )

    _run_import(load, dest, overwrite, as_json)


@import_app.command("recbole")
def import_recbole_command(
    path: Annotated[Path, typer.Argument(help="NAME.inter, or the folder holding it; NAME.item and NAME.user "
                                         "beside it are read when present.")],
    dest: Dest,
    user_col: Annotated[str, typer.Option(help="Field holding the user id.")] = "user_id",
    item_col: Annotated[str, typer.Option(help="Field holding the item id (.inter and .item).")] = "item_id",
    time_col: Annotated[str, typer.Option(help="Field holding the time.")] = "timestamp",
    rating_col: Annotated[str | None, typer.Option(help="Field holding the rating (default: rating, when "
                                                   "present).")] = None,
    text_col: Annotated[str | None, typer.Option(help="Field holding review text (default: review or text, "
                                                 "when present).")] = None,
    time_format: TimeFormat = "auto",
    item_id_col: ItemIdCol = None,
    title_col: Annotated[str | None, typer.Option(help="Item field holding the title (default: the first of "
                                                  "movie_title, title, name, book_title).")] = None,
    category_col: Annotated[str | None, typer.Option(
        help="Item field holding categories (default: the first of genre, class, categories, category, "
        "genres).")] = None,
    seq_separator: Annotated[str, typer.Option(help="Separator inside token_seq/float_seq fields (RecBole's "
                                               "seq_separator).")] = " ",
    user_id_col: UserIdCol = None,
    domain: Domain = None,
    name: Annotated[str | None, typer.Option(help="Dataset name (default: NAME of NAME.inter).")] = None,
    skip_invalid: SkipInvalid = False,
    overwrite: Overwrite = False,
    as_json: AsJson = False,
) -> None:
    """Import RecBole atomic files (.inter, .item, .user: tab-separated, typed name:type headers)."""
    from starrec.data.importers import ColumnMap, RecordMap, import_recbole

    columns = ColumnMap(user_col, item_col, time_col, rating_col, text_col, time_format)

    def load(show_progress: bool) -> Imported:
        return import_recbole(
            path, columns, item_fields=RecordMap(item_id_col, title_col, category_col),
            user_fields=RecordMap(user_id_col, category_sep=None), seq_separator=seq_separator,
            domain=domain, name=name or "", skip_invalid=skip_invalid, show_progress=show_progress,
        )

    _run_import(load, dest, overwrite, as_json)


@import_app.command("hf")
def import_hf_command(
    path: Annotated[Path, typer.Argument(help="Folder written by Dataset.save_to_disk or "
                                         "DatasetDict.save_to_disk (needs the train extra).")],
    dest: Dest,
    split: Annotated[str | None, typer.Option(help="Split of a DatasetDict (default: its only one).")] = None,
    user_col: UserCol = "user_id",
    item_col: ItemCol = "item_id",
    time_col: TimeCol = "timestamp",
    rating_col: RatingCol = None,
    text_col: TextCol = None,
    time_format: TimeFormat = "auto",
    items: Annotated[Path | None, typer.Option("--items", help="Items: a dataset folder on disk or a CSV/TSV "
                                               "file.")] = None,
    item_id_col: ItemIdCol = None,
    title_col: TitleCol = None,
    category_col: CategoryCol = None,
    category_sep: Annotated[str, typer.Option(help="What separates categories in a text cell (list cells "
                                              "are used as they are).")] = "|",
    users: Annotated[Path | None, typer.Option("--users", help="Users: a dataset folder on disk or a CSV/TSV "
                                               "file.")] = None,
    user_id_col: UserIdCol = None,
    domain: Domain = None,
    name: Name = None,
    skip_invalid: SkipInvalid = False,
    overwrite: Overwrite = False,
    as_json: AsJson = False,
) -> None:
    """Import a Hugging Face `datasets` dataset saved to disk, with the same column flags as csv."""
    from starrec.data.importers import ColumnMap, RecordMap, import_huggingface

    columns = ColumnMap(user_col, item_col, time_col, rating_col, text_col, time_format)

    def load(show_progress: bool) -> Imported:
        return import_huggingface(
            path, columns, split=split,
            items=items, item_fields=RecordMap(item_id_col, title_col, category_col, category_sep or None),
            users=users, user_fields=RecordMap(user_id_col, category_sep=None),
            domain=domain, name=name or dest.name, skip_invalid=skip_invalid, show_progress=show_progress,
        )

    _run_import(load, dest, overwrite, as_json)


def _run_import(load: Callable[[bool], Imported], dest: Path, overwrite: bool, as_json: bool) -> None:
    """Check --dest, read, write atomically, then print the summary (warnings on stderr, once each)."""
    import json
    import warnings

    from rich.console import Console

    from starrec.data.agentsociety import DuplicateReviewsWarning
    from starrec.data.importers import check_destination, write_imported

    check_destination(dest, overwrite)  # before reading, so a long read is not wasted
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DuplicateReviewsWarning)
        imported = load(not as_json)
    for warning in caught:
        typer.secho(f"warning: {warning.message}", fg=typer.colors.YELLOW, err=True)
    write_imported(imported, dest, overwrite=overwrite)
    summary = imported.summary
    if as_json:
        typer.echo(json.dumps(summary.to_dict(), indent=2, ensure_ascii=False))
        return
    console = Console()
    console.print(_summary_table(summary.to_dict()))
    if summary.invalid_examples:
        console.print(f"[yellow]{summary.invalid} invalid row(s) dropped; first:[/yellow]")
        for example in summary.invalid_examples:
            console.print(f"  {example}", markup=False, highlight=False)
    for kind, missing in (("items", summary.items_without_record), ("users", summary.users_without_record)):
        if missing:
            console.print(f"[yellow]{missing} interacted {kind} have no row in the {kind} table (check "
                          f"--{kind[:-1]}-id-col)[/yellow]")


def _summary_table(summary: dict[str, object]) -> object:
    from rich.table import Table

    table = Table(title=f"imported {summary['name']} ({summary['domain']}) into {summary['dest']}")
    table.add_column("")
    table.add_column("value", justify="right")
    rows = {
        "users": summary["users"], "items": summary["items"], "interactions": summary["interactions"],
        "user / item records": f"{summary['user_records']} / {summary['item_records']}",
        "first / last": f"{summary['first']} / {summary['last']}",
        "duplicate rows (kept once)": summary["duplicates"], "invalid rows dropped": summary["invalid"],
        "seconds to read": summary["read_seconds"],
    }
    for key, value in rows.items():
        table.add_row(key, str(value))
    return table


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
