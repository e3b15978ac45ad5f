"""Tables to import from: CSV/TSV files, RecBole atomic files, Hugging Face datasets saved to disk.

Every reader gives the same :class:`Table` (column names, then rows as ``(line, {column: value})``),
so one core (:mod:`starrec.data.importers`) maps any of them onto a :class:`~starrec.data.schema.Dataset`.
Line numbers are 1-based with the header as line 1, as an editor shows them; a Hugging Face
dataset has no lines, so its "line" is the 1-based row number (``dataset[n - 1]``). Files are read
as bytes and decoded line by line, so a stray Latin-1 byte is reported with its line.
"""

from __future__ import annotations

import csv
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any, BinaryIO

from starrec.data.agentsociety import DataFormatError, decode_utf8

DELIMITER_NAMES = {"auto": "auto", "tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
"""Spellings accepted for ``--delimiter`` besides the character itself (a shell passes ``'\\t'`` as two)."""
SNIFFED_DELIMITERS = ("\t", ",", ";", "|")
"""Candidates for ``--delimiter auto``: the one the header line holds most of wins (ties: this order)."""
ATOMIC_TYPES = ("token", "float", "token_seq", "float_seq")
"""RecBole's four feature types (``recbole.utils.enum_type.FeatureType``)."""
CSV_FIELD_LIMIT = 2**31 - 1
"""Long review texts exceed the ``csv`` module's default 128 KiB field limit."""


class Table(ABC):
    """One source table: where it is (for messages), its columns, and its rows."""

    where: Path
    """What errors name: the file, or ``DIR[split]`` for a Hugging Face split."""
    label: str
    """Short name for generated review ids (``ratings.csv``, ``ml-100k.inter``, ``hf[train]``)."""
    columns: list[str]
    size: int
    """Progress total: bytes of a file, rows of a dataset."""
    read: int = 0
    """Progress so far, in the unit of :attr:`size`."""

    @abstractmethod
    def rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(line, {column: value})`` for each non-blank row, header excluded."""

    def metadata(self, column: str, value: Any, line: int) -> Any:
        """A metadata cell as a JSON value (CSV cells stay strings)."""
        return value

    def error(self, message: str, line: int | None = None, field: str | None = None) -> DataFormatError:
        return DataFormatError(self.where, message, line=line, field=field)


def resolve_delimiter(delimiter: str) -> str:
    """``--delimiter`` as one character, or ``"auto"``."""
    resolved = DELIMITER_NAMES.get(delimiter, delimiter)
    if resolved != "auto" and len(resolved) != 1:
        raise ValueError(f"--delimiter {delimiter!r} is not one character; use auto, ',', ';', '|' or '\\t'")
    return resolved


class DelimitedTable(Table):
    """A CSV/TSV file with a header line, read with the stdlib ``csv`` module (RFC 4180 quoting)."""

    def __init__(self, path: Path, delimiter: str = "auto"):
        self.where = self.path = Path(path)
        self.label = self.path.name
        header_text = self._header_line()
        delimiter = resolve_delimiter(delimiter)
        if delimiter == "auto":
            delimiter = self._sniff(header_text)
        self.delimiter = delimiter
        self.columns = self._parse_header(next(csv.reader([header_text], delimiter=delimiter)))
        self.size = self.path.stat().st_size

    def _header_line(self) -> str:
        if self.path.is_dir():
            raise self.error("is a directory; pass the file itself")
        if not self.path.is_file():
            raise self.error("file not found")
        with self.path.open("rb") as handle:
            first = handle.readline()
            header = decode_utf8(first, self.path, 1).removeprefix("\ufeff").rstrip("\r\n")
            if header.strip():
                return header
            if any(raw.strip() for raw in handle):
                raise self.error("the first line is blank; the header (column names) must be line 1", line=1)
        raise self.error("empty file; expected a header line naming the columns, then one row per line")

    def _sniff(self, header: str) -> str:
        if self.path.suffix.lower() in (".tsv", ".tab"):
            return "\t"
        counts = [header.count(candidate) for candidate in SNIFFED_DELIMITERS]
        return SNIFFED_DELIMITERS[counts.index(max(counts))] if max(counts) else ","

    def _parse_header(self, names: list[str]) -> list[str]:
        columns = [name.strip() for name in names]
        for index, name in enumerate(columns, start=1):
            if not name:
                raise self.error(f"column {index} of the header has no name; name every column", line=1)
            if columns.index(name) != index - 1:
                raise self.error(f"the header names column {name!r} twice; rename one", line=1, field=name)
        return columns

    def rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        csv.field_size_limit(CSV_FIELD_LIMIT)
        width = len(self.columns)
        with self.path.open("rb") as handle:
            reader = csv.reader(self._lines(handle), delimiter=self.delimiter)
            try:
                next(reader)  # the header, parsed in __init__
                start = reader.line_num + 1
                for fields in reader:
                    line, start = start, reader.line_num + 1  # a quoted field may span lines
                    if not any(field.strip() for field in fields):
                        continue
                    if len(fields) != width:
                        raise self.error(f"{len(fields)} fields where the header has {width}; quote values "
                                         f"that contain the delimiter {self.delimiter!r} or fix --delimiter",
                                         line=line)
                    yield line, self._row(fields, line)
            except csv.Error as error:
                raise self.error(f"malformed CSV ({error}); check the quoting",
                                 line=reader.line_num) from error

    def _lines(self, handle: BinaryIO) -> Iterator[str]:
        for number, raw in enumerate(handle, start=1):
            self.read += len(raw)
            text = decode_utf8(raw, self.path, number)
            yield text.removeprefix("\ufeff") if number == 1 else text

    def _row(self, fields: list[str], line: int) -> dict[str, Any]:
        return dict(zip(self.columns, fields, strict=True))


class AtomicTable(DelimitedTable):
    """A RecBole atomic file (``.inter``/``.item``/``.user``): tab-separated, header ``name:type``.

    Like RecBole's ``Dataset._load_feat``: ``token`` stays text, ``float`` is a number (empty:
    missing), ``token_seq``/``float_seq`` split on ``seq_separator`` (a space by default).
    """

    def __init__(self, path: Path, seq_separator: str = " ", field_separator: str = "\t"):
        self.seq_separator = seq_separator
        self.types: dict[str, str] = {}
        super().__init__(path, field_separator)

    def _parse_header(self, names: list[str]) -> list[str]:
        columns = []
        for entry in names:
            name, colon, kind = entry.strip().rpartition(":")
            if not colon or not name:
                raise self.error(f"header field {entry!r} has no ':type' suffix; RecBole headers read "
                                 f"name:type with type one of {', '.join(ATOMIC_TYPES)} (e.g. user_id:token)",
                                 line=1, field=entry)
            if kind not in ATOMIC_TYPES:
                raise self.error(f"header field {entry!r} has unknown type {kind!r}; use one of "
                                 f"{', '.join(ATOMIC_TYPES)}", line=1, field=name)
            columns.append(name)
            self.types[name] = kind
        return super()._parse_header(columns)

    def metadata(self, column: str, value: Any, line: int) -> Any:
        kind = self.types[column]
        if kind == "token":
            return value
        parts = [part for part in value.split(self.seq_separator) if part] if "seq" in kind else [value]
        if kind == "token_seq":
            return parts
        numbers = [self._float(part, column, line) for part in parts if part.strip()]
        if kind == "float_seq":
            return numbers
        return numbers[0] if numbers else None

    def _float(self, text: str, column: str, line: int) -> float | int | None:
        try:
            number = float(text)
        except ValueError as error:
            raise self.error(f"{text!r} is not a number (the header types the field {self.types[column]}); "
                             "fix the value or retype the field token", line=line, field=column) from error
        if not math.isfinite(number):
            return None  # RecBole reads NaN as a missing value
        return int(number) if number.is_integer() else number


def import_datasets_package() -> Any:
    """The ``datasets`` package, or one error naming the extra that brings it."""
    try:
        import datasets
    except ImportError as error:
        raise ValueError("importing a Hugging Face dataset needs the `datasets` package, which this install "
                         "lacks: pip install 'starrec[train]'") from error
    return datasets


class HuggingFaceTable(Table):
    """A Hugging Face ``Dataset`` saved with ``save_to_disk``, or one split of a ``DatasetDict``."""

    BATCH_ROWS = 4096

    def __init__(self, path: Path, split: str | None = None, *, prefer: str | None = None):
        """``split`` must exist in a ``DatasetDict``; ``prefer`` is used when it does (items, users)."""
        datasets = import_datasets_package()
        path = Path(path)
        self.where = path
        if not path.is_dir():
            raise self.error("not found; pass the directory that Dataset.save_to_disk wrote")
        try:
            loaded = datasets.load_from_disk(str(path))
        except FileNotFoundError as error:
            raise self.error("not a Hugging Face dataset (no dataset_info.json/state.json or "
                             "dataset_dict.json); save it with Dataset.save_to_disk or "
                             "DatasetDict.save_to_disk") from error
        if isinstance(loaded, datasets.DatasetDict):
            splits = list(loaded)
            if split is None:
                split = prefer if prefer in loaded else splits[0] if len(splits) == 1 else None
            if split not in loaded:
                problem = "holds several splits" if split is None else f"has no split {split!r}"
                raise self.error(f"the DatasetDict {problem}; choose one with --split: {', '.join(splits)}",
                                 field="split")
            loaded = loaded[split]
            self.where = Path(f"{path}[{split}]")
        elif split is not None:
            raise self.error(f"--split {split!r} given, but this is a single Dataset, not a DatasetDict; "
                             "drop --split")
        self.dataset = loaded
        self.label = self.where.name
        self.columns = list(loaded.column_names)
        self.size = len(loaded)

    def rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        for batch in self.dataset.iter(batch_size=self.BATCH_ROWS):
            names = list(batch)
            for values in zip(*(batch[name] for name in names), strict=True):
                self.read += 1
                yield self.read, dict(zip(names, values, strict=True))

    def metadata(self, column: str, value: Any, line: int) -> Any:
        return json_value(value)


def json_value(value: Any) -> Any:
    """``value`` as something ``json.dumps`` writes and ``json.loads`` reads back the same."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(key): json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(item) for item in value]
    return str(value)
