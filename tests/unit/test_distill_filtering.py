"""Outcome filtering: top-k, errors, per-scenario counts, ablation consistency, clear load errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from distill_fixtures import make_trajectory

from starrec.contract.runs_file import load_trajectories
from starrec.distill.filtering import outcome_filter, run_ablation


def runs() -> list:
    return [
        make_trajectory("a", 0, ground_truth="302", top="302", scenario="classic"),
        make_trajectory("a", 1, ground_truth="302", top="242", scenario="classic"),
        make_trajectory("b", 0, ground_truth="377", top="377", scenario="cold_user"),
        make_trajectory("c", 0, ground_truth="51", top="242", scenario="cold_user"),
    ]


def test_top1_filter_counts_per_scenario() -> None:
    kept, report = outcome_filter(runs())
    assert [(t.task_id, t.pass_) for t in kept] == [("a", 0), ("b", 0)]
    classic, cold = report.scenarios["classic"], report.scenarios["cold_user"]
    assert (classic.runs, classic.tasks, classic.kept_runs, classic.kept_tasks) == (2, 1, 1, 1)
    assert (cold.runs, cold.tasks, cold.kept_runs, cold.kept_tasks) == (2, 2, 1, 1)
    assert report.to_dict()["total"]["kept_runs"] == 2


def test_top_k_and_errored_runs() -> None:
    trajectories = runs()
    trajectories[0].error = "TimeoutError: scripted timeout"
    position = trajectories[3].ranking.index("51")
    kept, report = outcome_filter(trajectories, top_k=position + 1)
    assert ("a", 0) not in {(t.task_id, t.pass_) for t in kept}  # errored runs never train
    assert ("c", 0) in {(t.task_id, t.pass_) for t in kept}
    assert report.scenarios["classic"].errored == 1
    with pytest.raises(ValueError, match="at least 1"):
        outcome_filter(runs(), top_k=0)


def test_ablation_must_match_the_recorded_runs() -> None:
    no_tools = {"use_tools": False, "use_planner": True, "use_reflector": True}
    ablated = [make_trajectory("a", 0, settings=no_tools)]
    assert run_ablation(ablated[0]) == "no_tools"
    kept, _ = outcome_filter(ablated, ablation="no_tools")
    assert len(kept) == 1
    with pytest.raises(ValueError, match="recorded with ablation no_tools, but none"):
        outcome_filter(ablated)
    both = make_trajectory("a", 0, settings={"use_tools": False, "use_planner": False})
    with pytest.raises(ValueError, match="several ablations"):
        run_ablation(both)


def test_load_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps(runs()[0].to_line()) + "\n" + '{"task_id": 1, "steps": "nope"}\n')
    with pytest.raises(ValueError, match=r"runs.jsonl:2: not a valid trajectory"):
        load_trajectories(tmp_path)
    with pytest.raises(FileNotFoundError, match="starrec teach"):
        load_trajectories(tmp_path / "missing")
    path.write_text(json.dumps(runs()[0].to_line()) + "\n")
    (loaded,) = load_trajectories(path)
    assert loaded.ranking == runs()[0].ranking


def test_torn_last_line_of_a_killed_teach_is_skipped_but_a_torn_middle_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    whole = json.dumps(runs()[0].to_line())
    path.write_text(whole + "\n" + whole[: len(whole) // 2])  # killed mid-write: no newline, cut JSON
    (loaded,) = load_trajectories(path)
    assert loaded.task_id == runs()[0].task_id
    path.write_text(whole[: len(whole) // 2] + "\n" + whole + "\n")
    with pytest.raises(ValueError, match=r"runs.jsonl:1: not a JSON line"):
        load_trajectories(path)


def test_empty_runs_are_dropped_and_counted() -> None:
    trajectories = runs()
    trajectories[0].repairs["ranking_missing"] = len(trajectories[0].candidates)  # the ranker named no id
    for step in trajectories[2].steps:
        if step.node in {"user_profile", "historical_interest", "recent_interest", "interest_divergence"}:
            step.repairs["fallback"] = 1  # every agent fell back
    kept, report = outcome_filter(trajectories)
    assert kept == []
    assert report.scenarios["classic"].empty == 1 and report.scenarios["cold_user"].empty == 1
    assert report.to_dict()["total"]["empty"] == 2


def test_a_retried_run_supersedes_its_failure() -> None:
    failed = make_trajectory("a", 0, ground_truth="302", top="302")
    failed.error = "APIConnectionError: Connection error."
    retried = make_trajectory("a", 0, ground_truth="302", top="302")
    kept, report = outcome_filter([failed, retried])
    assert [(t.task_id, t.pass_, t.error) for t in kept] == [("a", 0, None)]
    assert report.superseded == 1 and report.scenarios["classic"].errored == 0
