"""``starrec teach`` end to end with a scripted model: runs.jsonl, resume, failure isolation, loader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mars_fixtures import FakeEvidence, build_movie_dataset, default_script, make_task

from starrec.contract.runs_file import RunsFile, load_runs_dataset, load_trajectories, trajectory_from_row
from starrec.data.agentsociety import write_dataset
from starrec.data.tasks import read_tasks, write_tasks
from starrec.eval.harness import build_requests
from starrec.graphs.context import Context
from starrec.graphs.teach import teach
from starrec.llm.scripted import ScriptedChatModel

USERS = ("u1", "u2", "u4", "u5")


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Any]:
    dataset = build_movie_dataset()
    data = write_dataset(dataset, tmp_path / "data")
    tasks = [make_task(dataset, user, index) for index, user in enumerate(USERS)]
    tasks_dir = tmp_path / "tasks"
    write_tasks(tasks, tasks_dir)
    return {"dataset": dataset, "data": data, "tasks": tasks_dir, "out": tmp_path / "runs"}


def scripted(fail_at: tuple[int, ...] = (), ranker: Any = None) -> ScriptedChatModel:
    script = default_script([])
    script["ranker"] = [ranker] if ranker is not None else ['{"ranking": []}']
    return ScriptedChatModel(responses=script, cycle=True, fail_at=fail_at)


def do_teach(folders: dict[str, Any], model: ScriptedChatModel, **kwargs: Any) -> Any:
    context = Context(chunk_size=3, **kwargs.pop("context", {}))
    return teach(
        folders["data"],
        folders["tasks"],
        folders["out"],
        context,
        chat_model=model,
        evidence=FakeEvidence(folders["dataset"]),
        **kwargs,
    )


def test_runs_jsonl_has_the_contract_fields_and_loads_as_dataset(folders: dict[str, Any]) -> None:
    summary = do_teach(folders, scripted(), passes=2)
    records = RunsFile(folders["out"]).records()
    assert len(records) == 2 * len(USERS)
    assert {(r["task_id"], r["pass"]) for r in records} == {
        (str(i), p) for i in range(len(USERS)) for p in (0, 1)
    }
    tasks = {t.task_id: t for t in read_tasks(folders["tasks"])}
    for record in records:
        assert record["ground_truth"] == tasks[record["task_id"]].ground_truth
        assert sorted(record["ranking"]) == sorted(tasks[record["task_id"]].candidates)
        assert record["hit@1"] == (record["ranking"][0] == record["ground_truth"])
        assert record["nodes"][0] == "abstractor" and record["nodes"][-1] == "ranker"
        assert record["error"] is None
        assert record["repairs"]["ranking_missing"] == 20  # the scripted ranker returned nothing
        assert record["steps"] and record["settings"]["chunk_size"] == 3
    # Candidates are shown in the harness's shuffled order.
    dataset = folders["dataset"]
    requests = build_requests(list(tasks.values()), dataset.hide_from(list(tasks.values())), seed=0)
    shown = {r.task_id: list(r.candidates) for r in requests}
    assert all(record["candidates"] == shown[record["task_id"]] for record in records)
    assert summary.runs == 8 and summary.errors == 0 and summary.repaired_runs == 8
    table = load_runs_dataset(folders["out"])
    assert table.num_rows == 8
    assert {"task_id", "pass", "ranking", "hit@1", "steps"} <= set(table.column_names)
    assert trajectory_from_row(table[0]).steps[0].node == "abstractor"
    assert len(load_trajectories(folders["out"])) == 8  # distillation's reader accepts every line


def test_resume_after_a_kill_skips_finished_runs_and_never_duplicates(folders: dict[str, Any]) -> None:
    do_teach(folders, scripted(), limit=2)
    runs = RunsFile(folders["out"])
    with runs.path.open("a", encoding="utf-8") as handle:
        handle.write('{"task_id": "2", "pass": 0, "ranking": ["m')  # killed mid-write
    model = scripted()
    summary = do_teach(folders, model)
    records = runs.records()
    keys = [(r["task_id"], r["pass"]) for r in records]
    assert sorted(keys) == [(str(i), 0) for i in range(len(USERS))]
    assert len(set(keys)) == len(keys)
    assert summary.runs == len(USERS)
    # Only the two unfinished tasks were run again: one planner call each.
    assert sum(call.key == "planner" for call in model.calls) == 2
    assert all(json.loads(line) for line in runs.path.read_text().splitlines())


def test_llm_timeout_mid_batch_is_isolated_and_counted(folders: dict[str, Any]) -> None:
    # Calls 13, 14 and 15 time out: both retries of the node fail too, so that run errors; others go on.
    summary = do_teach(folders, scripted(fail_at=(13, 14, 15)), concurrency=1)
    records = RunsFile(folders["out"]).records()
    failed = [r for r in records if r["error"]]
    assert len(failed) == 1 and "TimeoutError" in failed[0]["error"]
    assert sorted(failed[0]["ranking"]) == sorted(failed[0]["candidates"])
    assert summary.errors == 1 and summary.runs == len(USERS)
    errored_step = [s for s in failed[0]["steps"] if s["error"]]
    assert errored_step and "TimeoutError" in errored_step[0]["error"]


def test_single_timeout_is_retried_by_the_node_policy(folders: dict[str, Any]) -> None:
    summary = do_teach(folders, scripted(fail_at=(5,)), concurrency=1)
    assert summary.errors == 0
    records = RunsFile(folders["out"]).records()
    assert sum(r["repairs"].get("llm_error", 0) for r in records) == 1


def test_malformed_answer_mid_batch_is_repaired_not_failed(folders: dict[str, Any]) -> None:
    def ranker(messages: list[Any]) -> str:
        prompt = "\n".join(str(m.content) for m in messages)
        return "I cannot decide ]]" if "User: u2" in prompt else '{"ranking": ["m999"]}'

    summary = do_teach(folders, scripted(ranker=ranker), context={"structured_output": "json"})
    records = {r["task_id"]: r for r in RunsFile(folders["out"]).records()}
    assert summary.errors == 0
    malformed = records["1"]  # task 1 is user u2
    assert malformed["repairs"]["json_retry"] == 1 and malformed["repairs"]["fallback"] == 1
    assert len(malformed["ranking"]) == 20
    assert records["0"]["repairs"]["ranking_hallucinated"] == 1


def test_teach_cli_validates_ablation(folders: dict[str, Any]) -> None:
    from typer.testing import CliRunner

    from starrec.cli import app

    result = CliRunner().invoke(
        app,
        [
            "teach",
            "--data",
            str(folders["data"]),
            "--tasks",
            str(folders["tasks"]),
            "--out",
            str(folders["out"]),
            "--ablation",
            "no_memory",
        ],
    )
    assert result.exit_code != 0
    assert "unknown ablation 'no_memory'" in result.output


def test_errored_runs_are_not_finished_and_a_rerun_retries_only_them(folders: dict[str, Any]) -> None:
    first = do_teach(folders, scripted(fail_at=(13, 14, 15)), concurrency=1)
    assert first.errors == 1 and first.metrics and first.runs == len(USERS)
    model = scripted()
    second = do_teach(folders, model, concurrency=1)
    assert sum(call.key == "planner" for call in model.calls) == 1  # only the errored run again
    assert second.errors == 0 and second.runs == len(USERS)
    records = RunsFile(folders["out"]).records()
    assert len(records) == len(USERS) + 1  # the failure stays on disk, superseded by its retry
    from starrec.graphs.teach import finished_runs

    assert len(finished_runs(records)) == len(USERS)


def test_errored_runs_are_counted_not_scored(folders: dict[str, Any]) -> None:
    summary = do_teach(folders, scripted(fail_at=(13, 14, 15)), concurrency=1)
    ok = [r for r in RunsFile(folders["out"]).records() if not r["error"]]
    hits = sum(r["hit@1"] for r in ok) / len(ok)
    assert summary.errors == 1 and summary.metrics["hr@1"] == hits


def test_a_second_teach_on_the_same_folder_stops_and_names_the_holder(folders: dict[str, Any]) -> None:
    from starrec.graphs.teach import RunFolderBusyError, run_folder_lock

    with run_folder_lock(folders["out"]), pytest.raises(RunFolderBusyError, match=r"pid \d+"):
        do_teach(folders, scripted())
    assert not RunsFile(folders["out"]).records()
    do_teach(folders, scripted())  # the lock is released with its holder
    assert len(RunsFile(folders["out"]).records()) == len(USERS)


def test_teach_exit_codes(folders: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from starrec.cli import app
    from starrec.graphs import teach as teach_module
    from starrec.graphs.runner import BatchSummary

    args = ["teach", "--data", str(folders["data"]), "--tasks", str(folders["tasks"]),
            "--out", str(folders["out"]), "--llm", "scripted"]  # fmt: skip
    for errors, code in ((0, 0), (2, 1)):
        monkeypatch.setattr(teach_module, "teach", lambda *a, e=errors, **k: BatchSummary(runs=4, errors=e))
        result = CliRunner().invoke(app, args)
        assert result.exit_code == code, result.output
    assert "2 of 4 run(s) errored" in result.output
    assert CliRunner().invoke(app, [*args, "--passes", "0"]).exit_code == 2


def test_passes_are_samples_with_their_own_seed_and_temperature(folders: dict[str, Any]) -> None:
    do_teach(folders, scripted(), passes=3, sample_temperature=0.9, limit=1)
    settings = {r["pass"]: r["settings"] for r in RunsFile(folders["out"]).records()}
    sampled = {p: (s["temperature"], s["seed"]) for p, s in settings.items()}
    assert sampled == {0: (0.9, 0), 1: (0.9, 1), 2: (0.9, 2)}


def test_one_pass_keeps_the_context_and_greedy_multi_pass_is_refused(folders: dict[str, Any]) -> None:
    from starrec.graphs.teach import pass_contexts

    context = Context(temperature=0.0, seed=5)
    assert pass_contexts(context, 1, 0.7) == [context]
    with pytest.raises(ValueError, match="must sample"):
        pass_contexts(context, 2, 0.0)
    assert [c.seed for c in pass_contexts(context, 2, 0.7)] == [5, 6]
