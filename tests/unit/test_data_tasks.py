"""Task folders (official and built), the five scenarios, negatives and the manifest."""

from __future__ import annotations

import json
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from starrec.data import DataFormatError
from starrec.data.scenarios import (
    SCENARIOS,
    ScenarioConfig,
    build_tasks,
    data_files_fingerprint,
    majority_category,
)
from starrec.data.schema import Dataset, Task
from starrec.data.tasks import DuplicateCandidatesWarning, read_tasks, write_tasks

OFFICIAL_COUNTS = {"amazon": 388, "goodreads": 400, "yelp": 384}
OFFICIAL_CATEGORY = {"amazon": "product", "goodreads": "book", "yelp": "business"}


@pytest.mark.parametrize("domain", sorted(OFFICIAL_COUNTS))
def test_official_task_folders(official_tasks_dir: Callable[[str], Path], domain: str) -> None:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        tasks = read_tasks(official_tasks_dir(domain))
    duplicates = [warning for warning in record if warning.category is DuplicateCandidatesWarning]
    assert len(duplicates) == {"amazon": 3, "goodreads": 1, "yelp": 0}[domain]
    assert len(tasks) == OFFICIAL_COUNTS[domain]
    indices = [int(task.task_id) for task in tasks]
    assert indices == sorted(indices) and indices[0] == 0
    assert sum(len(task.candidates) == 19 for task in tasks) == len(duplicates)  # each file lists 20
    for task in tasks:
        assert task.ground_truth in task.candidates
        assert len(set(task.candidates)) == len(task.candidates) >= 19
        assert task.category.startswith(OFFICIAL_CATEGORY[domain])
    first = tasks[0]
    raw = json.loads((official_tasks_dir(domain) / "tasks" / "task_0.json").read_text())
    assert first.user_id == raw["user_id"] and list(first.candidates) == raw["candidate_list"]


def _sample_tasks() -> list[Task]:
    return [
        Task("0", "u1", tuple(f"i{j}" for j in range(20)), "i7", "movie", "classic", (1.5, -2.0)),
        Task("1", "u2", tuple(f"i{j}" for j in range(20, 40)), None, "movie", "classic"),
    ]


def test_round_trip_keeps_everything(tmp_path: Path) -> None:
    write_tasks(_sample_tasks(), tmp_path, {"scenario": "classic", "seed": 3})
    assert json.loads((tmp_path / "groundtruth" / "groundtruth_0.json").read_text()) == {"ground truth": "i7"}
    assert not (tmp_path / "groundtruth" / "groundtruth_1.json").exists()
    record = json.loads((tmp_path / "tasks" / "task_0.json").read_text())
    assert list(record) == ["type", "user_id", "candidate_category", "candidate_list", "loc"]
    assert record["type"] == "recommendation" and record["loc"] == [1.5, -2]
    assert read_tasks(tmp_path) == _sample_tasks()


def test_tasks_sorted_numerically(tmp_path: Path) -> None:
    tasks = [Task(str(i), f"u{i}", ("a", "b"), "a") for i in range(12)]
    write_tasks(tasks, tmp_path)
    read = read_tasks(tmp_path, expected_candidates=2)
    assert [task.task_id for task in read] == [str(i) for i in range(12)]


@pytest.mark.parametrize("count", [1, 19, 21])
def test_candidate_count_is_exact(tmp_path: Path, count: int) -> None:
    candidates = tuple(f"i{j}" for j in range(count))
    write_tasks([*_sample_tasks(), Task("2", "u3", candidates, "i0")], tmp_path)
    with pytest.raises(
        DataFormatError,
        match=rf"task_2\.json: field 'candidate_list': lists {count} "
        r"candidates, expected exactly 20",
    ):
        read_tasks(tmp_path)
    assert len(read_tasks(tmp_path, expected_candidates=None)[2].candidates) == count


def test_candidate_count_is_checked_before_repeats_are_dropped(tmp_path: Path) -> None:
    write_tasks(_sample_tasks(), tmp_path)
    repeated = [f"i{j}" for j in range(19)] + ["i3"]
    (tmp_path / "tasks" / "task_1.json").write_text(json.dumps({"user_id": "u2", "candidate_list": repeated}))
    with pytest.warns(DuplicateCandidatesWarning, match="repeats 1 id"):
        tasks = read_tasks(tmp_path)
    assert len(tasks[1].candidates) == 19


def test_task_file_with_bad_bytes_or_loc_names_file_and_line(tmp_path: Path) -> None:
    write_tasks(_sample_tasks(), tmp_path)
    task_file = tmp_path / "tasks" / "task_1.json"
    text = task_file.read_text().replace('"u2"', '"caf\u00e9"')
    task_file.write_bytes(text.encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"task_1\.json:3: not UTF-8 \(byte 0xe9 at column 18\)"):
        read_tasks(tmp_path)
    for loc in ("[NaN, 1]", "[1e999, 0]", "[" + "9" * 400 + ", 0]", "[true, 0]"):
        task_file.write_text(text.replace('"loc": [\n    -1,\n    -1\n  ]', f'"loc": {loc}'))
        assert loc in task_file.read_text()
        with pytest.raises(DataFormatError, match=r"task_1\.json: field 'loc': must be a \[lat, lon\] pair"):
            read_tasks(tmp_path)


def test_unknown_users_and_candidates_are_warned_and_counted(tiny_dataset: Dataset) -> None:
    from starrec.data.tasks import UnknownIdsWarning, warn_unknown_ids

    known_user = next(iter(tiny_dataset.users))
    known_items = sorted(tiny_dataset.items)[:2]
    tasks = [
        Task("0", known_user, (*known_items, "ghost-item"), known_items[0]),
        Task("1", "ghost-user", tuple(known_items), known_items[0]),
    ]
    with pytest.warns(
        UnknownIdsWarning,
        match=r"T: 1 user\(s\) \[ghost-user\] and 1 candidate\(s\) "
        r"\[ghost-item\] are not in dataset 'tiny'",
    ):
        counts = warn_unknown_ids(tasks, tiny_dataset, "T")
    assert counts == {"unknown_users": 1, "unknown_candidates": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        known = [Task("2", known_user, tuple(known_items), known_items[0])]
        assert warn_unknown_ids(known, tiny_dataset) == {"unknown_users": 0, "unknown_candidates": 0}


def test_bad_task_files_name_file_line_field(tmp_path: Path) -> None:
    write_tasks(_sample_tasks(), tmp_path)
    task_file = tmp_path / "tasks" / "task_1.json"
    task_file.write_text('{\n  "user_id": "u2",\n  "candidate_list": [1, 2,\n')
    with pytest.raises(DataFormatError, match=r"task_1\.json:4: malformed JSON"):
        read_tasks(tmp_path)
    task_file.write_text(json.dumps({"user_id": "u2", "candidate_list": "i1,i2"}))
    with pytest.raises(DataFormatError, match=r"task_1\.json: field 'candidate_list': wrong type str"):
        read_tasks(tmp_path)
    task_file.write_text(json.dumps({"user_id": "u2", "candidate_list": [f"i{j}" for j in range(20)]}))
    (tmp_path / "groundtruth" / "groundtruth_1.json").write_text(json.dumps({"ground truth": "zz"}))
    with pytest.raises(DataFormatError, match="ground truth 'zz' is not among the candidates"):
        read_tasks(tmp_path)
    (tmp_path / "groundtruth" / "groundtruth_1.json").write_text(json.dumps({"groundtruth": "i1"}))
    with pytest.raises(DataFormatError, match=r"groundtruth_1\.json: field 'ground truth': missing"):
        read_tasks(tmp_path)
    with pytest.raises(DataFormatError, match="task directory not found"):
        read_tasks(tmp_path / "nowhere")


def _visible(dataset: Dataset, task: Task) -> list:
    truth_time = next(e.timestamp for e in dataset.history(task.user_id) if e.item_id == task.ground_truth)
    return [e for e in dataset.history(task.user_id) if e.timestamp < truth_time]


def _check_common(dataset: Dataset, tasks: list[Task]) -> None:
    assert len({task.user_id for task in tasks}) == len(tasks), "one task per user"
    for task in tasks:
        touched = {event.item_id for event in dataset.history(task.user_id)}
        negatives = [item for item in task.candidates if item != task.ground_truth]
        assert len(task.candidates) == 20 and len(set(task.candidates)) == 20
        assert task.ground_truth in touched and not touched & set(negatives)
        assert task.ground_truth not in {e.item_id for e in _visible(dataset, task)}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenarios_follow_their_definitions(ml100k: Dataset, scenario: str) -> None:
    config = ScenarioConfig()
    built = build_tasks(ml100k, scenario, 40, seed=7)
    tasks = built.tasks
    assert len(tasks) == 40 and built.manifest["n_tasks"] == 40
    _check_common(ml100k, tasks)
    for task in tasks:
        history = _visible(ml100k, task)
        labels = set(ml100k.item_categories(task.ground_truth or ""))
        if scenario == "classic":
            assert ml100k.history(task.user_id)[-1].item_id == task.ground_truth
            assert len(history) >= config.min_history
        elif scenario == "cold_user":
            assert config.cold_user_min_history <= len(history) <= config.cold_user_max_history
        elif scenario == "cold_item":
            others = [e for e in ml100k.by_item[task.ground_truth or ""] if e.user_id != task.user_id]
            assert len(others) <= config.cold_item_max_interactions
        elif scenario == "evolving_long":
            assert majority_category(ml100k, history) in labels
        else:
            long_term = majority_category(ml100k, history)
            recent = majority_category(ml100k, history[-config.recent_window :])
            assert recent != long_term and recent in labels and long_term not in labels


def test_build_is_deterministic_and_seed_sensitive(tiny_dataset: Dataset) -> None:
    config = ScenarioConfig(negatives=2, min_history=2)
    first = build_tasks(tiny_dataset, "classic", 3, seed=1, config=config)
    again = build_tasks(tiny_dataset, "classic", 3, seed=1, config=config)
    assert first.tasks == again.tasks and first.manifest == again.manifest
    others = [build_tasks(tiny_dataset, "classic", 3, seed=s, config=config).tasks for s in range(2, 8)]
    assert any(tasks != first.tasks for tasks in others)


def test_tiny_classic_by_hand(tiny_dataset: Dataset) -> None:
    config = ScenarioConfig(negatives=2, min_history=3)
    built = build_tasks(tiny_dataset, "classic", 10, seed=0, config=config)
    # u1 (i4 after 3), u3 (i7 after 3), u4 (i6 after 4) qualify; u2 has 2 before i3, u5 has none.
    assert {(t.user_id, t.ground_truth) for t in built.tasks} == {("u1", "i4"), ("u3", "i7"), ("u4", "i6")}
    assert built.manifest["n_eligible_users"] == 3 and built.manifest["n_requested"] == 10


def test_evolving_short_tiny(tiny_dataset: Dataset) -> None:
    config = ScenarioConfig(negatives=2, evolving_min_history=4, recent_window=1)
    built = build_tasks(tiny_dataset, "evolving_short", 5, seed=0, config=config)
    # u4: long-term Action (i1..i3), then Drama i5 -> the recent window [i5] is Drama, GT i6 Drama.
    assert [(t.user_id, t.ground_truth) for t in built.tasks] == [("u4", "i6")]


def test_popularity_negatives_favour_popular_items(ml100k: Dataset) -> None:
    def mean_negative_popularity(sampling: str) -> float:
        tasks = build_tasks(ml100k, "classic", 60, seed=3, negatives=sampling).tasks
        counts = [
            len(ml100k.by_item[item])
            for task in tasks
            for item in task.candidates
            if item != task.ground_truth
        ]
        return sum(counts) / len(counts)

    uniform, popular = mean_negative_popularity("uniform"), mean_negative_popularity("popularity")
    assert popular > 2 * uniform


def test_ground_truth_position_is_shuffled_in_files(ml100k: Dataset) -> None:
    tasks = build_tasks(ml100k, "classic", 400, seed=0).tasks
    positions = Counter(task.candidates.index(task.ground_truth or "") for task in tasks)
    assert max(positions.values()) < 50 and len(positions) == 20


def test_manifest_and_fingerprint(ml100k_dir: Path, ml100k: Dataset) -> None:
    fingerprint = data_files_fingerprint(ml100k_dir)
    assert len(fingerprint) == 64 and fingerprint == data_files_fingerprint(ml100k_dir)
    manifest = build_tasks(
        ml100k, "cold_item", 5, seed=2, negatives="popularity", fingerprint=fingerprint
    ).manifest
    assert manifest["scenario"] == "cold_item" and manifest["seed"] == 2
    assert manifest["negatives"]["sampling"] == "popularity" and manifest["negatives"]["count"] == 19
    assert "at most 5 interactions" in manifest["definition"]
    assert manifest["thresholds"]["cold_item_max_interactions"] == 5
    assert manifest["dataset"]["fingerprint_sha256"] == fingerprint


def test_bad_arguments(tiny_dataset: Dataset) -> None:
    with pytest.raises(ValueError, match="unknown scenario 'warm'"):
        build_tasks(tiny_dataset, "warm", 1, 0)
    with pytest.raises(ValueError, match="unknown negative sampling"):
        build_tasks(tiny_dataset, "classic", 1, 0, negatives="hard")
    with pytest.raises(ValueError, match=r"no user of tiny is eligible for 'classic' .*visible history >= 5"):
        build_tasks(tiny_dataset, "classic", 1, 0)
    # Every user has seen more than 7 - 6 items of the 7-item catalogue: excluded, and said so.
    with pytest.raises(ValueError, match="4 excluded for having fewer than 6 unseen items"):
        build_tasks(tiny_dataset, "classic", 1, 0, config=ScenarioConfig(min_history=1, negatives=6))


def test_cli_build_refuses_non_empty_folder(tiny_dataset: Dataset, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from starrec.cli import app
    from starrec.data import write_dataset

    data = write_dataset(tiny_dataset, tmp_path / "tiny")
    out = tmp_path / "tasks"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    result = CliRunner().invoke(
        app, ["tasks", "build", "--data", str(data), "--out", str(out), "--scenario", "classic"]
    )
    assert result.exit_code != 0 and "not empty" in result.output


def test_majority_ignores_goodreads_status_shelves() -> None:
    from starrec.data.schema import Interaction

    shelves = {
        "b1": ["to-read", "fantasy"],
        "b2": ["to-read", "currently-reading", "fantasy"],
        "b3": ["to-read", "sci-fi"],
    }
    items = {
        book: {"book_id": book, "popular_shelves": [{"count": "9", "name": n} for n in names]}
        for book, names in shelves.items()
    }
    dataset = Dataset({}, items, [Interaction("u", book, float(t)) for t, book in enumerate(shelves)])
    assert majority_category(dataset, dataset.interactions) == "fantasy"


def test_tasks_fingerprint_ignores_order_and_sees_any_change() -> None:
    import dataclasses

    from starrec.data.schema import Task
    from starrec.data.tasks import tasks_fingerprint

    tasks = [Task("t1", "u1", ("a", "b"), "a"), Task("t2", "u2", ("c", "d"), "d")]
    assert tasks_fingerprint(tasks) == tasks_fingerprint(list(reversed(tasks)))
    assert tasks_fingerprint(tasks) != tasks_fingerprint(
        [tasks[0], dataclasses.replace(tasks[1], ground_truth="c")]
    )
