"""AgentRecBench task folders: ``tasks/task_<i>.json`` + ``groundtruth/groundtruth_<i>.json``.

The format is the official AgentSociety one, byte-for-byte in its keys (the ground-truth key is
literally ``"ground truth"``), so folders we build and the published ones are read the same way.
A ``manifest.json`` beside them (ours) records how the tasks were built.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from starrec.data.agentsociety import DataFormatError
from starrec.data.schema import Task

TASKS_DIR = "tasks"
GROUNDTRUTH_DIR = "groundtruth"
MANIFEST_FILE = "manifest.json"
GROUND_TRUTH_KEY = "ground truth"
TASK_FILE_PATTERN = re.compile(r"^task_(\d+)\.json$")


class DuplicateCandidatesWarning(UserWarning):
    """A task file lists the same candidate more than once (it is de-duplicated on read)."""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataFormatError(path, f"malformed JSON ({error.msg} at column {error.colno})",
                              line=error.lineno) from error


def _require(record: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    if key not in record:
        raise DataFormatError(path, "missing", field=key)
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DataFormatError(path, f"wrong type {type(value).__name__}", field=key)
    return value


def _parse_task(index: int, path: Path, ground_truth: str | None, scenario: str) -> Task:
    record = _read_json(path)
    if not isinstance(record, dict):
        raise DataFormatError(path, f"expected a JSON object, got {type(record).__name__}")
    user_id = _require(record, "user_id", (str, int), path)
    candidates = _require(record, "candidate_list", list, path)
    if not candidates or not all(isinstance(item, str | int) and not isinstance(item, bool)
                                 for item in candidates):
        raise DataFormatError(path, "must be a non-empty list of item ids", field="candidate_list")
    candidate_ids = tuple(dict.fromkeys(str(item) for item in candidates))
    if len(candidate_ids) != len(candidates):
        # The published Amazon/Goodreads folders have a few lists with one id twice; ranking
        # needs a set, so keep the first copy and say so.
        warnings.warn(f"{path}: candidate_list repeats {len(candidates) - len(candidate_ids)} id(s); "
                      "kept the first occurrence", DuplicateCandidatesWarning, stacklevel=4)
    if ground_truth is not None and ground_truth not in candidate_ids:
        raise DataFormatError(path, f"ground truth {ground_truth!r} is not among the candidates",
                              field="candidate_list")
    loc = record.get("loc", [-1, -1])
    if not (isinstance(loc, list) and len(loc) == 2 and all(isinstance(v, int | float) for v in loc)):
        raise DataFormatError(path, f"must be a [lat, lon] pair, got {loc!r}", field="loc")
    category = record.get("candidate_category", "")
    return Task(str(index), str(user_id), candidate_ids, ground_truth, str(category or ""), scenario,
                (float(loc[0]), float(loc[1])))


def _read_ground_truth(path: Path) -> str | None:
    if not path.is_file():
        return None
    record = _read_json(path)
    if not isinstance(record, dict):
        raise DataFormatError(path, f"expected a JSON object, got {type(record).__name__}")
    value = _require(record, GROUND_TRUTH_KEY, (str, int), path)
    return str(value)


def ground_truth_path(directory: Path, index: int) -> Path:
    return Path(directory) / GROUNDTRUTH_DIR / f"groundtruth_{index}.json"


def read_manifest(directory: Path) -> dict[str, Any]:
    """The build manifest, or ``{}`` for folders we did not build (the official ones)."""
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        return {}
    manifest = _read_json(path)
    if not isinstance(manifest, dict):
        raise DataFormatError(path, "expected a JSON object")
    return manifest


def read_tasks(directory: Path) -> list[Task]:
    """All tasks of a folder, sorted by their numeric index; a missing ground-truth file gives ``None``."""
    directory = Path(directory)
    task_dir = directory / TASKS_DIR
    if not task_dir.is_dir():
        raise DataFormatError(task_dir, "task directory not found (expected TASKS/tasks/task_<i>.json)")
    indexed = sorted(
        (int(match.group(1)), path)
        for path in task_dir.iterdir()
        if (match := TASK_FILE_PATTERN.match(path.name))
    )
    if not indexed:
        raise DataFormatError(task_dir, "no task_<i>.json files")
    scenario = str(read_manifest(directory).get("scenario", ""))
    return [
        _parse_task(index, path, _read_ground_truth(ground_truth_path(directory, index)), scenario)
        for index, path in indexed
    ]


def task_record(task: Task) -> dict[str, Any]:
    """The official ``task_<i>.json`` object."""
    return {
        "type": "recommendation",
        "user_id": task.user_id,
        "candidate_category": task.category,
        "candidate_list": list(task.candidates),
        "loc": [_plain_number(value) for value in task.loc],
    }


def _plain_number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def write_tasks(tasks: Iterable[Task], directory: Path, manifest: Mapping[str, Any] | None = None) -> Path:
    """Write tasks as ``task_<i>.json``/``groundtruth_<i>.json`` (``i`` = position) plus the manifest."""
    directory = Path(directory)
    (directory / TASKS_DIR).mkdir(parents=True, exist_ok=True)
    (directory / GROUNDTRUTH_DIR).mkdir(parents=True, exist_ok=True)
    for index, task in enumerate(tasks):
        (directory / TASKS_DIR / f"task_{index}.json").write_text(json.dumps(task_record(task), indent=2))
        if task.ground_truth is not None:
            ground_truth_path(directory, index).write_text(
                json.dumps({GROUND_TRUTH_KEY: task.ground_truth}, indent=2)
            )
    if manifest is not None:
        (directory / MANIFEST_FILE).write_text(json.dumps(dict(manifest), indent=2, sort_keys=False))
    return directory
