"""Bring your own data: CSV/TSV, RecBole atomic files or a Hugging Face dataset, to the AgentSociety layout.

Each source is read as a :class:`~starrec.data.tables.Table`; one core maps its columns onto
:class:`~starrec.data.schema.Interaction` s and item/user records, and :func:`write_imported` writes
the result the way :func:`~starrec.data.agentsociety.write_dataset` does, into a temporary folder
renamed into place, so a failed import leaves nothing behind and replaces nothing. Every error
names the file, the line and the field, and says what would fix it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

from starrec.data.agentsociety import (
    DOMAINS,
    ITEM_FILE,
    META_FILE,
    REVIEW_FILE,
    USER_FILE,
    DataFormatError,
    DuplicateReviewsWarning,
    checked_time,
    format_time,
    infer_domain,
    parse_stars,
    parse_time,
    utc_seconds,
    write_dataset,
)
from starrec.data.schema import Dataset, Interaction
from starrec.data.tables import AtomicTable, DelimitedTable, HuggingFaceTable, Table

TIME_FORMATS = ("auto", "unix", "unix_ms", "iso")
"""Named ``--time-format`` values; anything containing ``%`` is a ``strptime`` pattern instead."""
RECBOLE_TITLE_FIELDS = ("movie_title", "title", "name", "book_title")
RECBOLE_CATEGORY_FIELDS = ("genre", "class", "categories", "category", "genres")
RECBOLE_TEXT_FIELDS = ("review", "text")
"""RecBole item/interaction fields picked up when no flag names one (first present wins)."""
LAYOUT_FILES = frozenset({ITEM_FILE, USER_FILE, REVIEW_FILE, META_FILE})
INVALID_EXAMPLES = 5
"""How many skipped-row messages ``--skip-invalid`` keeps in the summary."""


@dataclass(frozen=True, slots=True)
class ColumnMap:
    """Which column of the interactions table holds each field (names as the header spells them)."""

    user: str = "user_id"
    item: str = "item_id"
    time: str = "timestamp"
    rating: str | None = None
    """None: no ratings (``stars`` is null)."""
    text: str | None = None
    """None: no review text."""
    time_format: str = "auto"
    """auto (unix seconds/ms or the loader's date formats), unix, unix_ms, iso, or a strptime pattern."""


@dataclass(frozen=True, slots=True)
class RecordMap:
    """Columns of an item or user table; every other column is kept as metadata under its own name."""

    id: str | None = None
    """None: the interactions' item (user) column name."""
    title: str | None = None
    """Written as ``title`` (items only)."""
    categories: str | None = None
    """Written as ``categories``, a list (items only)."""
    category_sep: str | None = "|"
    """What separates categories in one cell; None: the cell is one category."""


@dataclass(slots=True)
class ImportSummary:
    """What an import read and kept; printed by the CLI, returned by ``--json``, kept in ``dataset.json``."""

    source: str
    files: dict[str, str]
    name: str
    domain: str
    users: int
    """Distinct users with at least one interaction."""
    items: int
    interactions: int
    user_records: int
    """Records written to ``user.json`` (rows of the users table)."""
    item_records: int
    first: str | None
    last: str | None
    duplicates: int
    """Interaction rows repeating an earlier one (same user, item, time, rating, text): kept once."""
    invalid: int = 0
    """Rows dropped by ``--skip-invalid``."""
    invalid_examples: list[str] = field(default_factory=list)
    items_without_record: int = 0
    """Interacted items the items table does not list (0 without an items table)."""
    users_without_record: int = 0
    read_seconds: float = 0.0
    """Time spent reading and mapping the tables (not writing)."""
    dest: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Imported:
    dataset: Dataset
    summary: ImportSummary


def check_time_format(time_format: str) -> str:
    if time_format not in TIME_FORMATS and "%" not in time_format:
        raise ValueError(f"--time-format {time_format!r}: use {', '.join(TIME_FORMATS)} or a strptime "
                         "pattern such as '%Y-%m-%d %H:%M:%S'")
    return time_format


def parse_time_as(value: Any, time_format: str, where: Path, line: int, field: str) -> float:
    """Seconds since the epoch (UTC) from a cell read with ``--time-format``; naive dates are UTC."""
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if isinstance(value, datetime):
        return utc_seconds(value, value, where, line, field)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataFormatError(where, "empty time; every interaction needs one (fill it in or drop the row)",
                              line=line, field=field)
    if time_format == "auto":
        try:
            return parse_time(value, where, line, field)
        except DataFormatError as error:
            if isinstance(value, str) and error.reason.startswith("unparsable"):
                raise DataFormatError(where, f"{error.reason}; or name the format with --time-format (e.g. "
                                      "'%d/%m/%Y %H:%M')", line=line, field=field) from error
            raise
    if time_format in ("unix", "unix_ms"):
        try:
            seconds = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError) as error:
            raise DataFormatError(where, f"time {value!r} is not a number (--time-format {time_format}); "
                                  "fix the value or choose another --time-format", line=line,
                                  field=field) from error
        except OverflowError:  # an integer with hundreds of digits
            seconds = math.inf
        seconds = seconds / 1000.0 if time_format == "unix_ms" else seconds
        return checked_time(seconds, value, where, line, field)
    if not isinstance(value, str):
        raise DataFormatError(where, f"time {value!r} is a {type(value).__name__}, but --time-format "
                              f"{time_format} reads date strings; use --time-format unix", line=line,
                              field=field)
    try:
        parsed = (datetime.fromisoformat(value.strip()) if time_format == "iso"
                  else datetime.strptime(value.strip(), time_format))
    except ValueError as error:
        expected = "an ISO 8601 date (e.g. 2020-01-02T03:04:05Z)" if time_format == "iso" else time_format
        raise DataFormatError(where, f"time {value!r} does not match {expected!r}; fix the value or "
                              "--time-format", line=line, field=field) from error
    return utc_seconds(parsed, value, where, line, field)


def _id(value: Any, table: Table, line: int, column: str, what: str) -> str:
    if isinstance(value, float):  # ids that went through a float column (pandas, parquet): 7.0, NaN
        if math.isnan(value):
            value = None
        elif value.is_integer():
            value = int(value)
    if value is not None and (isinstance(value, bool) or not isinstance(value, str | int)):
        raise table.error(f"{what} {value!r} is not text or an integer; map the right column", line=line,
                          field=column)
    text = "" if value is None else str(value).strip()
    if not text:
        raise table.error(f"empty {what}; every row needs one (fill it in or drop the row, or pass "
                          "--skip-invalid to drop such rows)", line=line, field=column)
    return text


def _require_columns(table: Table, wanted: dict[str, str | None]) -> None:
    """Each mapped column (flag -> name) is in the header, or one error listing the columns found."""
    for flag, name in wanted.items():
        if name is not None and name not in table.columns:
            raise table.error(f"no column {name!r} ({flag}); the header has: {', '.join(table.columns)}; "
                              f"pass the right name with {flag}", line=1, field=name)


def _interaction(row: dict[str, Any], table: Table, line: int, columns: ColumnMap) -> Interaction:
    user = _id(row[columns.user], table, line, columns.user, "user id")
    item = _id(row[columns.item], table, line, columns.item, "item id")
    timestamp = parse_time_as(row[columns.time], columns.time_format, table.where, line, columns.time)
    stars = None
    rating = None if columns.rating is None else row[columns.rating]
    if rating is not None and not (isinstance(rating, str) and not rating.strip()):  # empty: no rating
        try:
            stars = parse_stars(rating, table.where, line, columns.rating)
        except DataFormatError as error:
            raise table.error(f"{error.reason}; fix the value, leave the cell empty for no rating, or map "
                              "another column with --rating-col", line=line, field=columns.rating) from error
    text = row[columns.text] if columns.text is not None else ""
    text = "" if text is None else str(text)
    return Interaction(user, item, timestamp, stars, text, f"{table.label}:{line}")


class _Reader:
    """Reads tables under one progress display (off unless asked for and on a terminal)."""

    def __init__(self, show_progress: bool):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

        console = Console(stderr=True)
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                 TimeRemainingColumn(), console=console, transient=True,
                                 disable=not (show_progress and console.is_terminal))

    def rows(self, table: Table, description: str) -> Iterator[tuple[int, dict[str, Any]]]:
        task = self.progress.add_task(f"{description} {table.label}", total=table.size or None)
        for count, (line, row) in enumerate(table.rows(), start=1):
            if count % 4096 == 0:
                self.progress.update(task, completed=table.read)
            yield line, row
        self.progress.update(task, completed=table.size)


def _read_interactions(table: Table, columns: ColumnMap, reader: _Reader, skip_invalid: bool,
                       summary: dict[str, Any]) -> list[Interaction]:
    _require_columns(table, {"--user-col": columns.user, "--item-col": columns.item,
                             "--time-col": columns.time, "--rating-col": columns.rating,
                             "--text-col": columns.text})
    seen: set[tuple[Any, ...]] = set()
    kept: list[Interaction] = []
    duplicates = invalid = 0
    examples: list[str] = []
    for line, row in reader.rows(table, "interactions"):
        try:
            event = _interaction(row, table, line, columns)
        except DataFormatError as error:
            if not skip_invalid:
                raise
            invalid += 1
            if len(examples) < INVALID_EXAMPLES:
                examples.append(str(error))
            continue
        key = (event.user_id, event.item_id, event.timestamp, event.stars, event.text)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        kept.append(event)
    if not kept:
        reason = f"all {invalid} rows are invalid (first: {examples[0]})" if invalid else "no rows"
        raise table.error(f"no interactions: {reason}; an import needs at least one")
    if duplicates:
        warnings.warn(f"{table.where}: {duplicates} duplicate interaction line(s) (same user, item, time, "
                      "rating and text); kept the first of each", DuplicateReviewsWarning, stacklevel=4)
    summary.update(duplicates=duplicates, invalid=invalid, invalid_examples=examples)
    return kept


def _read_records(table: Table, fields: RecordMap, id_column: str, canonical: str, reader: _Reader,
                  id_flag: str) -> dict[str, dict[str, Any]]:
    """``{id: record}`` from an item or user table; a repeated id is an error (the two could disagree)."""
    _require_columns(table, {id_flag: id_column, "--title-col": fields.title,
                             "--category-col": fields.categories})
    mapped = {id_column, fields.title, fields.categories}
    records: dict[str, dict[str, Any]] = {}
    first_line: dict[str, int] = {}
    what = canonical.replace("_", " ")
    for line, row in reader.rows(table, canonical.split("_")[0] + "s"):
        key = _id(row[id_column], table, line, id_column, what)
        if key in records:
            raise table.error(f"duplicate {what} {key!r} (first on line {first_line[key]}); keep one row per "
                              "id", line=line, field=id_column)
        first_line[key] = line
        record: dict[str, Any] = {canonical: key}
        record.update((column, table.metadata(column, value, line)) for column, value in row.items()
                      if column not in mapped)
        if fields.title is not None and row[fields.title] not in (None, ""):
            record["title"] = str(row[fields.title]).strip()
        if fields.categories is not None:
            record["categories"] = _categories(row[fields.categories], fields.category_sep)
        record[canonical] = key  # a metadata column of the same name must not replace the id
        records[key] = record
    return records


def _categories(value: Any, separator: str | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(entry).strip() for entry in value if entry is not None and str(entry).strip()]
    text = str(value)
    parts = text.split(separator) if separator else [text]
    return [part.strip() for part in parts if part.strip()]


def assemble(
    source: str,
    interactions: Table,
    columns: ColumnMap,
    *,
    items: Table | None = None,
    item_fields: RecordMap | None = None,
    users: Table | None = None,
    user_fields: RecordMap | None = None,
    domain: str | None = None,
    name: str = "",
    skip_invalid: bool = False,
    show_progress: bool = False,
) -> Imported:
    """The shared core: tables and column maps in, a :class:`Dataset` and its summary out."""
    started = time.perf_counter()
    check_time_format(columns.time_format)
    if domain is not None and domain not in (*DOMAINS, "item"):
        raise ValueError(f"--domain {domain!r}: use one of {', '.join((*DOMAINS, 'item'))}")
    counts: dict[str, Any] = {}
    reader = _Reader(show_progress)
    with reader.progress:
        events = _read_interactions(interactions, columns, reader, skip_invalid, counts)
        item_fields = item_fields or RecordMap()
        item_records = ({} if items is None else
                        _read_records(items, item_fields, item_fields.id or columns.item, "item_id", reader,
                                      "--item-id-col"))
        user_fields = user_fields or RecordMap(category_sep=None)
        user_records = ({} if users is None else
                        _read_records(users, user_fields, user_fields.id or columns.user, "user_id", reader,
                                      "--user-id-col"))
    dataset = Dataset(user_records, item_records, events, domain=domain or infer_domain(item_records),
                      name=name)
    files = {"interactions": str(interactions.where)}
    files.update({kind: str(table.where) for kind, table in (("items", items), ("users", users)) if table})
    summary = ImportSummary(
        source=source, files=files, name=name, domain=dataset.domain,
        users=len(dataset.by_user), items=len(dataset.by_item), interactions=len(dataset.interactions),
        user_records=len(user_records), item_records=len(item_records),
        first=format_time(dataset.interactions[0].timestamp),
        last=format_time(dataset.interactions[-1].timestamp),
        items_without_record=sum(key not in item_records for key in dataset.by_item) if items else 0,
        users_without_record=sum(key not in user_records for key in dataset.by_user) if users else 0,
        **counts,
    )
    summary.read_seconds = round(time.perf_counter() - started, 3)
    return Imported(dataset, summary)


def import_csv(
    interactions: Path,
    columns: ColumnMap,
    *,
    delimiter: str = "auto",
    items: Path | None = None,
    item_fields: RecordMap | None = None,
    users: Path | None = None,
    user_fields: RecordMap | None = None,
    domain: str | None = None,
    name: str = "",
    skip_invalid: bool = False,
    show_progress: bool = False,
) -> Imported:
    """Interactions from a CSV/TSV file, items and users from optional CSV/TSV files."""
    return assemble(
        "csv", DelimitedTable(interactions, delimiter), columns,
        items=DelimitedTable(items, delimiter) if items else None, item_fields=item_fields,
        users=DelimitedTable(users, delimiter) if users else None, user_fields=user_fields,
        domain=domain, name=name, skip_invalid=skip_invalid, show_progress=show_progress,
    )


def import_huggingface(
    path: Path,
    columns: ColumnMap,
    *,
    split: str | None = None,
    items: Path | None = None,
    item_fields: RecordMap | None = None,
    users: Path | None = None,
    user_fields: RecordMap | None = None,
    domain: str | None = None,
    name: str = "",
    skip_invalid: bool = False,
    show_progress: bool = False,
) -> Imported:
    """Interactions from a ``datasets`` dataset on disk; items/users from datasets on disk or CSV files.

    ``split`` picks the split of a ``DatasetDict`` (optional when it has one); an items or users
    ``DatasetDict`` must have a single split or one with the same name.
    """
    def table(where: Path) -> Table:
        return HuggingFaceTable(where, prefer=split) if where.is_dir() else DelimitedTable(where)

    return assemble(
        "huggingface", HuggingFaceTable(path, split), columns,
        items=table(items) if items else None, item_fields=item_fields,
        users=table(users) if users else None, user_fields=user_fields,
        domain=domain, name=name, skip_invalid=skip_invalid, show_progress=show_progress,
    )


def recbole_files(path: Path) -> dict[str, Path]:
    """``{"inter": ..., "item": ..., "user": ...}`` for a ``NAME.inter`` file or the folder holding one."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*.inter"))
        if len(found) != 1:
            listing = ", ".join(p.name for p in found) or "none"
            raise DataFormatError(path, f"expected one .inter file in the folder, found {listing}; pass the "
                                  ".inter file itself")
        path = found[0]
    if path.suffix != ".inter":
        raise DataFormatError(path, "not a RecBole .inter file; pass NAME.inter or the folder holding it "
                              "(NAME.item and NAME.user beside it are read too)")
    if not path.is_file():
        raise DataFormatError(path, "file not found")
    files = {"inter": path}
    for kind in ("item", "user"):
        if path.with_suffix(f".{kind}").is_file():
            files[kind] = path.with_suffix(f".{kind}")
    return files


def import_recbole(
    path: Path,
    columns: ColumnMap | None = None,
    *,
    item_fields: RecordMap | None = None,
    user_fields: RecordMap | None = None,
    seq_separator: str = " ",
    domain: str | None = None,
    name: str = "",
    skip_invalid: bool = False,
    show_progress: bool = False,
) -> Imported:
    """RecBole atomic files: ``NAME.inter`` plus ``NAME.item``/``NAME.user`` when present.

    Fields default to RecBole's (``user_id``, ``item_id``, ``rating``, ``timestamp``); ``rating`` and a
    ``review``/``text`` field are used when the header has them and no flag names another. Titles
    come from the first of :data:`RECBOLE_TITLE_FIELDS`, categories from the first of
    :data:`RECBOLE_CATEGORY_FIELDS`, split on ``seq_separator`` when typed ``token_seq``.
    """
    files = recbole_files(path)
    inter = AtomicTable(files["inter"], seq_separator)
    columns = columns or ColumnMap()
    columns = replace(
        columns,
        rating=columns.rating or ("rating" if "rating" in inter.columns else None),
        text=columns.text or next((name for name in RECBOLE_TEXT_FIELDS if name in inter.columns), None),
    )
    items = AtomicTable(files["item"], seq_separator) if "item" in files else None
    if items is not None:
        fields = item_fields or RecordMap()
        title = fields.title or next((f for f in RECBOLE_TITLE_FIELDS if f in items.columns), None)
        categories = fields.categories or next((f for f in RECBOLE_CATEGORY_FIELDS if f in items.columns),
                                               None)
        separator = seq_separator if items.types.get(categories or "", "").endswith("_seq") else None
        item_fields = RecordMap(fields.id, title, categories, separator)
    users = AtomicTable(files["user"], seq_separator) if "user" in files else None
    return assemble(
        "recbole", inter, columns, items=items, item_fields=item_fields, users=users, user_fields=user_fields,
        domain=domain, name=name or files["inter"].stem, skip_invalid=skip_invalid,
        show_progress=show_progress,
    )


def check_destination(dest: Path, overwrite: bool = False) -> None:
    """Refuse a ``dest`` whose contents an import would lose (checked before reading and before writing)."""
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise FileExistsError(f"{dest} exists and is not a folder; choose another --dest")
    contents = sorted(entry.name for entry in dest.iterdir()) if dest.is_dir() else []
    if not contents:
        return
    if not overwrite:
        raise FileExistsError(f"{dest} exists and is not empty; choose a new folder, or pass --overwrite to "
                              "replace the dataset there")
    foreign = [entry for entry in contents if entry not in LAYOUT_FILES]
    if foreign:
        raise FileExistsError(f"{dest} holds files that are not part of a dataset ({', '.join(foreign[:5])});"
                              " --overwrite replaces only a dataset folder: choose another --dest")


def write_imported(imported: Imported, dest: Path, *, overwrite: bool = False) -> Path:
    """Write the dataset and ``dataset.json`` into a temporary sibling folder, then rename it to ``dest``."""
    dest = Path(dest)
    check_destination(dest, overwrite)
    dest.parent.mkdir(parents=True, exist_ok=True)
    imported.summary.dest = str(dest)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.importing-", dir=dest.parent))
    try:
        write_dataset(imported.dataset, staging)
        meta = {"name": imported.dataset.name, "domain": imported.dataset.domain,
                "imported": imported.summary.to_dict()}
        text = json.dumps(meta, indent=2, ensure_ascii=False) + "\n"
        (staging / META_FILE).write_text(text, encoding="utf-8")
        _swap_in(staging, dest)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return dest


def _swap_in(staging: Path, dest: Path) -> None:
    if not dest.exists():
        staging.rename(dest)
        return
    if not any(dest.iterdir()):
        dest.rmdir()
        staging.rename(dest)
        return
    replaced = dest.with_name(f".{dest.name}.replaced-{os.getpid()}")
    dest.rename(replaced)
    try:
        staging.rename(dest)
    except OSError:
        replaced.rename(dest)
        raise
    shutil.rmtree(replaced, ignore_errors=True)
