"""Read and write the AgentSociety JSON-lines layout (``item.json``, ``user.json``, ``review.json``).

The AgentSociety Challenge ships Amazon, Goodreads and Yelp in this layout, each keeping its
source's field names (``parent_asin``, ``book_id``, ``business_id``, ``rating``, ``date_added``...).
:func:`load_dataset` maps those aliases onto one canonical :class:`Dataset`; :func:`write_dataset`
writes any dataset back in the same layout (this is how MovieLens is stored). Every error names
the file, the line and the field at fault.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starrec.data.schema import Dataset, Interaction

ITEM_FILE = "item.json"
USER_FILE = "user.json"
REVIEW_FILE = "review.json"
META_FILE = "dataset.json"
"""Optional: the dataset's ``name`` and ``domain`` (written by ``starrec data import``), a JSON object."""

ITEM_ID_FIELDS = ("item_id", "parent_asin", "asin", "book_id", "business_id")
"""Item id aliases, most specific first (Amazon reviews carry both ``parent_asin`` and ``asin``)."""
USER_ID_FIELDS = ("user_id",)
STARS_FIELDS = ("stars", "rating")
TEXT_FIELDS = ("text", "review_text")
TIME_FIELDS = ("timestamp", "date", "date_added", "date_updated", "time")
"""Review time aliases; numeric ``timestamp`` first (Amazon, ms), then the date strings."""

DATE_FORMATS = (
    "%Y-%m-%d %H:%M:%S",  # Yelp
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d",
    "%a %b %d %H:%M:%S %z %Y",  # Goodreads: "Fri Aug 25 13:55:02 -0700 2017"
)
MILLISECONDS_THRESHOLD = 1e11
"""Numeric times above this are milliseconds (1e11 s is the year 5138; Amazon uses ms)."""
MIN_TIMESTAMP = -62135596800.0
"""0001-01-01T00:00:00Z, the first instant ``datetime`` can hold."""
MAX_TIMESTAMP = 253402300799.0
"""9999-12-31T23:59:59Z, the last whole second ``datetime`` can hold."""

DOMAINS = ("movie", "book", "product", "business")


class DataFormatError(ValueError):
    """A data file is missing or a record cannot be read; the message says where and why."""

    def __init__(self, path: Path, message: str, line: int | None = None, field: str | None = None):
        where = f"{path}:{line}" if line is not None else str(path)
        what = f" field {field!r}:" if field else ""
        super().__init__(f"{where}:{what} {message}")
        self.reason = message
        """The message without the location, so a caller can add a hint and re-raise."""
        self.path = path
        self.line = line
        self.field = field


def decode_utf8(data: bytes, path: Path, line: int | None = None) -> str:
    """``data`` as text, or one error naming the file, line and column of the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        before = data[: error.start]
        at_line = (line or 1) + before.count(b"\n")
        column = error.start - (before.rfind(b"\n") + 1) + 1
        raise DataFormatError(
            path,
            f"not UTF-8 (byte 0x{data[error.start]:02x} at column {column}); re-save the file as UTF-8 "
            f"(e.g. `iconv -f latin1 -t utf-8`)",
            line=at_line,
        ) from error


class DuplicateReviewsWarning(UserWarning):
    """``review.json`` repeats a review (it is kept once)."""


def read_json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line; malformed lines raise with their number."""
    if not path.is_file():
        raise DataFormatError(path, "file not found (the AgentSociety layout needs item.json, "
                              "user.json and review.json in one directory)")
    with path.open("rb") as handle:  # bytes, so a bad byte is reported with its line
        for number, raw in enumerate(handle, start=1):
            line = decode_utf8(raw, path, number)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataFormatError(path, f"malformed JSON ({error.msg} at column {error.colno})",
                                      line=number) from error
            if not isinstance(record, dict):
                raise DataFormatError(path, f"expected a JSON object, got {type(record).__name__}",
                                      line=number)
            yield number, record


def _first_present(record: Mapping[str, Any], names: Sequence[str]) -> tuple[str, Any] | None:
    for name in names:
        value = record.get(name)
        if value is not None and value != "":
            return name, value
    return None


def _require_id(record: Mapping[str, Any], names: Sequence[str], path: Path, line: int) -> str:
    found = _first_present(record, names)
    if found is None:
        raise DataFormatError(path, f"missing id; expected one of {', '.join(names)}", line=line,
                              field=names[0])
    name, value = found
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise DataFormatError(path, f"id must be a string or integer, got {type(value).__name__}",
                              line=line, field=name)
    return str(value)


def parse_stars(value: Any, path: Path, line: int, field: str) -> float:
    """A rating as float; numeric strings are accepted, anything else is an error."""
    if isinstance(value, bool):
        raise DataFormatError(path, "rating must be a number, got a boolean", line=line, field=field)
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError as error:
            raise DataFormatError(path, f"rating {value!r} is not a number", line=line,
                                  field=field) from error
    else:
        raise DataFormatError(path, f"rating must be a number, got {type(value).__name__}", line=line,
                              field=field)
    if not math.isfinite(number):
        raise DataFormatError(path, f"rating {value!r} is not finite", line=line, field=field)
    return number


def parse_time(value: Any, path: Path, line: int, field: str) -> float:
    """Seconds since the epoch (UTC) from unix seconds/ms or one of :data:`DATE_FORMATS`.

    The result always lies in years 1-9999, so every later ``datetime`` conversion works.
    """
    if isinstance(value, bool):
        raise DataFormatError(path, "time must be a number or a date string, got a boolean", line=line,
                              field=field)
    if isinstance(value, str) and value.strip().lstrip("-").replace(".", "", 1).isdigit():
        value = float(value)
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an integer with hundreds of digits
            seconds = math.inf
        seconds = seconds / 1000.0 if seconds > MILLISECONDS_THRESHOLD else seconds
        return checked_time(seconds, value, path, line, field)
    if not isinstance(value, str):
        raise DataFormatError(path, f"time must be a number or a date string, got {type(value).__name__}",
                              line=line, field=field)
    text = value.strip()
    for pattern in DATE_FORMATS:
        try:
            parsed = datetime.strptime(text, pattern)
        except ValueError:
            continue
        break
    else:
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError as error:
            raise DataFormatError(path, f"unparsable date {value!r}; expected unix seconds/ms or one of "
                                  f"{', '.join(DATE_FORMATS)}", line=line, field=field) from error
    return utc_seconds(parsed, value, path, line, field)


def utc_seconds(moment: datetime, value: Any, path: Path, line: int, field: str) -> float:
    """Seconds since the epoch of ``moment`` (naive = UTC), checked like every other time."""
    try:
        seconds = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    except (OverflowError, ValueError):  # a time zone pushing year 1 or 9999 out of range
        seconds = math.inf
    return checked_time(seconds, value, path, line, field)


def checked_time(seconds: float, value: Any, path: Path, line: int, field: str) -> float:
    """``seconds`` if it is finite and within years 1-9999, else an error quoting ``value``."""
    if not math.isfinite(seconds):
        raise DataFormatError(path, f"time {value!r} is not a finite date; fix or drop the record",
                              line=line, field=field)
    if not MIN_TIMESTAMP <= seconds <= MAX_TIMESTAMP:
        raise DataFormatError(path, f"time {value!r} is outside years 1-9999 (read as unix seconds, or ms "
                              f"above {MILLISECONDS_THRESHOLD:.0e}); fix or drop the record",
                              line=line, field=field)
    return seconds


def format_time(timestamp: float) -> str:
    """The Yelp-style date string (UTC) written next to ``timestamp`` in ``review.json``."""
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _read_entities(path: Path, id_fields: Sequence[str], canonical: str) -> dict[str, dict[str, Any]]:
    entities: dict[str, dict[str, Any]] = {}
    for line, record in read_json_lines(path):
        entity_id = _require_id(record, id_fields, path, line)
        if entity_id in entities:
            raise DataFormatError(path, f"duplicate id {entity_id!r}", line=line, field=canonical)
        entities[entity_id] = {**record, canonical: entity_id}
    return entities


def _read_review(record: Mapping[str, Any], path: Path, line: int) -> Interaction:
    user_id = _require_id(record, USER_ID_FIELDS, path, line)
    item_id = _require_id(record, ITEM_ID_FIELDS, path, line)
    stars_found = _first_present(record, STARS_FIELDS)
    stars = parse_stars(stars_found[1], path, line, stars_found[0]) if stars_found else None
    time_found = _first_present(record, TIME_FIELDS)
    if time_found is None:
        raise DataFormatError(path, f"missing time; expected one of {', '.join(TIME_FIELDS)}", line=line,
                              field="date")
    timestamp = parse_time(time_found[1], path, line, time_found[0])
    text_found = _first_present(record, TEXT_FIELDS)
    text = text_found[1] if text_found else ""
    if not isinstance(text, str):
        raise DataFormatError(path, f"review text must be a string, got {type(text).__name__}", line=line,
                              field=text_found[0] if text_found else "text")
    review_id = record.get("review_id")
    return Interaction(user_id, item_id, timestamp, stars, text,
                       str(review_id) if review_id not in (None, "") else f"{path.name}:{line}")


def _unique_reviews(path: Path) -> list[Interaction]:
    """The reviews of ``path``, each once (same ``review_id``, or same user/item/time/text without one)."""
    seen: set[tuple[Any, ...]] = set()
    kept: list[Interaction] = []
    lines = 0
    for line, record in read_json_lines(path):
        lines += 1
        event = _read_review(record, path, line)
        if record.get("review_id") not in (None, ""):
            key: tuple[Any, ...] = ("id", event.review_id)
        else:
            key = (event.user_id, event.item_id, event.timestamp, event.text)
        if key not in seen:
            seen.add(key)
            kept.append(event)
    if len(kept) != lines:
        warnings.warn(f"{path}: {lines - len(kept)} duplicate review line(s) (same review_id, or same user, "
                      "item, date and text); kept the first of each", DuplicateReviewsWarning, stacklevel=3)
    return kept


def infer_domain(items: Mapping[str, Mapping[str, Any]], tasks_category: str | None = None) -> str:
    """Guess what items are from their fields: movie, book, product or business (else "item")."""
    if tasks_category:
        for domain in DOMAINS:
            if tasks_category.startswith(domain):
                return domain
    sample = next(iter(items.values()), {})
    keys = set(sample)
    if keys & {"book_id", "popular_shelves", "isbn", "num_pages"}:
        return "book"
    if keys & {"parent_asin", "asin", "main_category"}:
        return "product"
    if keys & {"business_id", "city", "latitude", "hours"}:
        return "business"
    if keys & {"genres", "release_year"} or ("year" in keys and "title" in keys):
        return "movie"
    source = str(sample.get("source", "")).lower()
    for domain, marker in (("product", "amazon"), ("book", "goodreads"), ("business", "yelp")):
        if marker in source:
            return domain
    return "item"


def load_dataset(path: Path, domain: str | None = None) -> Dataset:
    """Load an AgentSociety-layout directory into a :class:`Dataset`.

    ``users``/``items`` hold exactly the records of ``user.json``/``item.json``; reviews may
    reference users or items without a metadata record (the Yelp slice has all reviews of its
    432 items but metadata for only 38 users) and are kept: every interaction survives.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataFormatError(path, "dataset directory not found")
    items = _read_entities(path / ITEM_FILE, ITEM_ID_FIELDS, "item_id")
    users = _read_entities(path / USER_FILE, USER_ID_FIELDS, "user_id")
    review_path = path / REVIEW_FILE
    interactions = _unique_reviews(review_path)
    if domain is not None and domain not in (*DOMAINS, "item"):
        raise ValueError(f"unknown domain {domain!r}; choose one of {', '.join(DOMAINS)}")
    declared = read_dataset_meta(path)
    return Dataset(users, items, interactions, domain=domain or declared.get("domain") or infer_domain(items),
                   name=declared.get("name") or path.name)


def read_dataset_meta(path: Path) -> dict[str, Any]:
    """The ``name`` and ``domain`` declared in ``dataset.json`` ({} without the file)."""
    meta_path = Path(path) / META_FILE
    if not meta_path.is_file():
        return {}
    try:
        meta = json.loads(decode_utf8(meta_path.read_bytes(), meta_path))
    except json.JSONDecodeError as error:
        raise DataFormatError(meta_path, f"malformed JSON ({error.msg} at column {error.colno})",
                              line=error.lineno) from error
    if not isinstance(meta, dict):
        raise DataFormatError(meta_path, f"expected a JSON object, got {type(meta).__name__}")
    if meta.get("domain") is not None and meta["domain"] not in (*DOMAINS, "item"):
        raise DataFormatError(meta_path, f"unknown domain {meta['domain']!r}; use one of "
                              f"{', '.join((*DOMAINS, 'item'))}", field="domain")
    if meta.get("name") is not None and not isinstance(meta["name"], str):
        raise DataFormatError(meta_path, "name must be a string", field="name")
    return {key: meta[key] for key in ("name", "domain") if meta.get(key)}


def _json_number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def review_record(event: Interaction) -> dict[str, Any]:
    """The ``review.json`` line for one interaction (date string plus exact unix ``timestamp``)."""
    return {
        "review_id": event.review_id,
        "user_id": event.user_id,
        "item_id": event.item_id,
        "stars": None if event.stars is None else _json_number(event.stars),
        "text": event.text,
        "date": format_time(event.timestamp),
        "timestamp": _json_number(event.timestamp),
    }


def _write_lines(path: Path, records: Iterator[Mapping[str, Any]]) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    temporary.replace(path)


def write_dataset(dataset: Dataset, dest: Path) -> Path:
    """Write ``dataset`` as ``item.json``, ``user.json``, ``review.json`` under ``dest``.

    Files are written to a temporary name and renamed, so a half-written directory never
    looks complete; ``review.json`` is written last and marks completion.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    _write_lines(dest / ITEM_FILE, ({**meta, "item_id": key} for key, meta in dataset.items.items()))
    _write_lines(dest / USER_FILE, ({**meta, "user_id": key} for key, meta in dataset.users.items()))
    _write_lines(dest / REVIEW_FILE, (review_record(event) for event in dataset.interactions))
    return dest
