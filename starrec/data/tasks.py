"""AgentRecBench task folders: ``tasks/task_<i>.json`` + ``groundtruth/groundtruth_<i>.json``.

The format is the official AgentSociety one, byte-for-byte in its keys (the ground-truth key is
literally ``"ground truth"``), so folders we build and the published ones are read the same way.
A ``manifest.json`` beside them (ours) records how the tasks were built.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from starrec.data.agentsociety import DataFormatError, decode_utf8
from starrec.data.schema import Dataset, Task

TASKS_DIR = "tasks"
GROUNDTRUTH_DIR = "groundtruth"
MANIFEST_FILE = "manifest.json"
GROUND_TRUTH_KEY = "ground truth"
TASK_FILE_PATTERN = re.compile(r"^task_(\d+)\.json$")
EXPECTED_CANDIDATES = 20
"""AgentRecBench: one ground truth and 19 negatives per task."""


class DuplicateCandidatesWarning(UserWarning):
    """A task file lists the same candidate more than once (it is de-duplicated on read)."""


class UnknownIdsWarning(UserWarning):
    """Tasks name users or candidates the dataset has never seen (cold-start, or the wrong data)."""


def _read_json(path: Path) -> Any:
    text = decode_utf8(path.read_bytes(), path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DataFormatError(
            path, f"malformed JSON ({error.msg} at column {error.colno})", line=error.lineno
        ) from error


def _require(record: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    if key not in record:
        raise DataFormatError(path, "missing", field=key)
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DataFormatError(path, f"wrong type {type(value).__name__}", field=key)
    return value


def _parse_task(
    index: int, path: Path, ground_truth: str | None, scenario: str, expected_candidates: int | None
) -> Task:
    record = _read_json(path)
    if not isinstance(record, dict):
        raise DataFormatError(path, f"expected a JSON object, got {type(record).__name__}")
    user_id = _require(record, "user_id", (str, int), path)
    candidates = _require(record, "candidate_list", list, path)
    if not candidates or not all(
        isinstance(item, str | int) and not isinstance(item, bool) for item in candidates
    ):
        raise DataFormatError(path, "must be a non-empty list of item ids", field="candidate_list")
    # Counted as listed, before repeats are dropped: four official tasks list one id twice.
    if expected_candidates is not None and len(candidates) != expected_candidates:
        raise DataFormatError(
            path,
            f"lists {len(candidates)} candidates, expected exactly "
            f"{expected_candidates}; fix the file or read it with "
            "expected_candidates=None",
            field="candidate_list",
        )
    candidate_ids = tuple(dict.fromkeys(str(item) for item in candidates))
    if len(candidate_ids) != len(candidates):
        # The published Amazon/Goodreads folders have a few lists with one id twice; ranking
        # needs a set, so keep the first copy and say so.
        warnings.warn(
            f"{path}: candidate_list repeats {len(candidates) - len(candidate_ids)} id(s); "
            "kept the first occurrence",
            DuplicateCandidatesWarning,
            stacklevel=4,
        )
    if ground_truth is not None and ground_truth not in candidate_ids:
        raise DataFormatError(
            path, f"ground truth {ground_truth!r} is not among the candidates", field="candidate_list"
        )
    loc = record.get("loc", [-1, -1])
    if not (
        isinstance(loc, list)
        and len(loc) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) and _finite(v) for v in loc)
    ):
        raise DataFormatError(path, f"must be a [lat, lon] pair, got {loc!r}", field="loc")
    category = record.get("candidate_category", "")
    return Task(
        str(index),
        str(user_id),
        candidate_ids,
        ground_truth,
        str(category or ""),
        scenario,
        (float(loc[0]), float(loc[1])),
    )


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


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def read_tasks(directory: Path, expected_candidates: int | None = EXPECTED_CANDIDATES) -> list[Task]:
    """All tasks of a folder, sorted by their numeric index; a missing ground-truth file gives ``None``.

    Each ``candidate_list`` must hold exactly ``expected_candidates`` ids (``None``: any number).
    """
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
        _parse_task(
            index,
            path,
            _read_ground_truth(ground_truth_path(directory, index)),
            scenario,
            expected_candidates,
        )
        for index, path in indexed
    ]


def unknown_ids(tasks: Sequence[Task], dataset: Dataset) -> dict[str, list[str]]:
    """Task users and candidates that appear nowhere in ``dataset`` (neither records nor reviews)."""
    users = sorted(
        {
            task.user_id
            for task in tasks
            if task.user_id not in dataset.users and task.user_id not in dataset.by_user
        }
    )
    items = sorted(
        {
            item
            for task in tasks
            for item in task.candidates
            if item not in dataset.items and item not in dataset.by_item
        }
    )
    return {"users": users, "candidates": items}


def warn_unknown_ids(tasks: Sequence[Task], dataset: Dataset, source: str = "tasks") -> dict[str, int]:
    """Warn once when tasks meet a dataset that does not know some of their ids; returns the counts.

    A warning, not an error: a slice of a dataset (the shared Yelp slice) legitimately lacks
    most users of the official tasks, and an unknown candidate can still be ranked (cold start).
    """
    found = unknown_ids(tasks, dataset)
    if found["users"] or found["candidates"]:
        shown = {kind: ", ".join(ids[:5]) + (" ..." if len(ids) > 5 else "") for kind, ids in found.items()}
        warnings.warn(
            f"{source}: {len(found['users'])} user(s) [{shown['users']}] and {len(found['candidates'])} "
            f"candidate(s) [{shown['candidates']}] are not in dataset {dataset.name!r}; they are ranked "
            "without history (check that --data matches --tasks)",
            UnknownIdsWarning,
            stacklevel=2,
        )
    return {f"unknown_{kind}": len(ids) for kind, ids in found.items()}


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


def tasks_fingerprint(tasks: Iterable[Task]) -> str:
    """SHA-256 of the tasks' ids, users, candidates and ground truths, in id order."""
    ordered = sorted(tasks, key=lambda task: task.task_id)
    text = json.dumps([[t.task_id, t.user_id, list(t.candidates), t.ground_truth] for t in ordered])
    return hashlib.sha256(text.encode()).hexdigest()
