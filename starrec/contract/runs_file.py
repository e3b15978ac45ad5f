"""``RUNS/runs.jsonl``: one JSON line per recorded MARS run, its writer and its readers.

:class:`RunsFile` appends one line per finished run and flushes it, so a killed batch loses at
most the runs in flight, and tells a resumed batch which (task, pass) pairs are done. The
readers skip a torn last line (a killed run, redone on resume) and name the file and line of
anything else that does not parse.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from starrec.contract.trajectory import HIT_KS, Trajectory
from starrec.llm.redact import redact_value

RUNS_FILE = "runs.jsonl"

NESTED_COLUMNS: tuple[str, ...] = ("steps", "prompt", "repairs", "settings", "hits")
"""Trajectory fields stored as JSON strings in a ``datasets.Dataset`` (their keys differ per run)."""


def runs_file_path(runs: str | Path) -> Path:
    """The ``runs.jsonl`` a run folder (or the file itself) names."""
    path = Path(runs)
    return path if path.suffix == ".jsonl" or path.is_file() else path / RUNS_FILE


class RunsFile:
    """``RUNS/runs.jsonl``: append-and-flush writer, resume index, tolerant reader."""

    def __init__(self, path: str | Path) -> None:
        self.path = runs_file_path(path)
        self.torn_lines = 0
        """Torn last lines skipped by the latest read (0 or 1): a killed run, redone on resume."""
        self._lock = threading.Lock()

    def records(self) -> list[dict[str, Any]]:
        """Every complete line; a torn last line (the process was killed mid-write) is skipped."""
        return [record for _, record in self.numbered_records()]

    def numbered_records(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(line number, object)`` per complete line, so readers can name the line at fault.

        The file is split as bytes on ``\\n`` only: a kill can cut a multi-byte character, and
        ``str.splitlines`` would also split inside JSON strings holding U+2028 or U+0085.
        """
        self.torn_lines = 0
        if not self.path.exists():
            return
        lines = self.path.read_bytes().split(b"\n")
        if lines and not lines[-1].strip():
            lines.pop()
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                if number == len(lines):
                    self.torn_lines += 1  # torn write of a killed run: that run is simply redone
                    continue
                what = "not UTF-8" if isinstance(error, UnicodeDecodeError) else "not a JSON line"
                message = f"{self.path}:{number}: {what} ({error}); fix or delete that line"
                raise ValueError(message) from error
            yield number, record

    def trajectories(self) -> Iterator[Trajectory]:
        """Every line as a :class:`Trajectory`, with file:line in every error."""
        for number, record in self.numbered_records():
            try:
                yield Trajectory.model_validate(record)
            except ValidationError as error:
                raise ValueError(f"{self.path}:{number}: not a valid trajectory line: {error}") from error

    def finished(self) -> set[tuple[str, int]]:
        """(task_id, pass) pairs already recorded (errored runs included: they are not retried)."""
        return {(str(r["task_id"]), int(r.get("pass", 0))) for r in self.records()}

    def repair_torn_tail(self) -> bool:
        """Cut a torn last line so appended lines stay parseable; True when something was cut."""
        if not self.path.exists():
            return False
        data = self.path.read_bytes()
        if not data or data.endswith(b"\n"):
            return False
        cut = data.rfind(b"\n") + 1
        with self.path.open("r+b") as handle:
            handle.truncate(cut)
        return True

    def append(self, line: Mapping[str, Any]) -> None:
        """Write one run, every string redacted first (a key in a URL or an echoed error never lands)."""
        text = json.dumps(redact_value(line), ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())


def load_trajectories(runs: str | Path) -> list[Trajectory]:
    """The trajectories of a run folder or ``runs.jsonl``; read like ``teach --resume`` reads it.

    A torn last line left by a killed ``starrec teach`` is skipped here exactly as a resumed
    ``teach`` skips (and redoes) it.
    """
    runs_file = RunsFile(runs)
    if not runs_file.path.is_file():
        raise FileNotFoundError(
            f"no recorded runs at {runs_file.path}; record them with `starrec teach --out {runs}`"
        )
    return list(runs_file.trajectories())


def load_runs_dataset(runs: str | Path, columns: Iterable[str] | None = None):  # -> datasets.Dataset
    """Recorded runs as a Hugging Face ``datasets.Dataset``.

    Flat columns (task_id, pass, ground_truth, ranking, nodes, hit@k, error, seconds, tokens...)
    stay typed; nested ones (steps, prompt, repairs, settings, hits) are JSON strings because
    their keys differ per node and Arrow needs one schema. ``Trajectory.model_validate_json``
    style round trips work with :func:`trajectory_from_row`.
    """
    from datasets import Dataset

    rows = []
    for record in RunsFile(runs).records():
        row = {
            key: (json.dumps(value, ensure_ascii=False) if key in NESTED_COLUMNS else value)
            for key, value in record.items()
        }
        for k in HIT_KS:
            row.setdefault(f"hit@{k}", None)
        rows.append(row)
    if not rows:
        raise ValueError(f"no recorded runs in {RunsFile(runs).path}")
    dataset = Dataset.from_list(rows)
    return dataset.select_columns(list(columns)) if columns is not None else dataset


def trajectory_from_row(row: Mapping[str, Any]) -> Trajectory:
    """Inverse of :func:`load_runs_dataset` for one row."""
    data = {
        key: (json.loads(value) if key in NESTED_COLUMNS and isinstance(value, str) else value)
        for key, value in row.items()
    }
    return Trajectory.model_validate(data)
