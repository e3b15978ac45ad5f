"""The real pipeline stages on the tiny config, without the training stages: tasks on a 12-user dataset,
``teach`` with a scripted MARS teacher, the outcome filter, the ``serve`` check, and every eval row
with the students behind a scripted OpenAI-compatible endpoint (``student.base_urls``: no server is
started). Training runs end to end in tests/integration/test_pipeline.py (slow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from benchmark_scripts import load_benchmark
from distill_fixtures import scripted_teacher
from mars_fixtures import build_movie_dataset, default_script
from test_serving_loop import ScriptedServer
from typer.testing import CliRunner

from starrec.cli import app
from starrec.contract.runs_file import load_trajectories
from starrec.data.agentsociety import write_dataset
from starrec.data.tasks import read_tasks
from starrec.eval.metrics import summarize
from starrec.graphs.teach import RunFolderBusyError, run_folder_lock
from starrec.llm.scripted import ScriptedChatModel
from starrec.pipeline import WorkLayout, load_config, run_pipeline
from starrec.pipeline.evaluation import error_examples, eval_stage, finished_rows
from starrec.pipeline.runner import stale_before
from starrec.pipeline.stages import PipelineRun

TINY = Path(__file__).resolve().parents[2] / "configs" / "pipeline-tiny.yaml"
ROW_KEYS = [
    "random",
    "itemknn",
    "best_classical",
    "cf_prior",
    "mars_fused",
    "mars_raw",
    "mars_planner",
    "star_base",
    "star_sft",
    "star_grpo",
    "best_of_1",
    "best_of_2",
]


class OracleStudent:
    """A student endpoint that writes a well-formed chain with the user's ground truth first."""

    def __init__(self, truths: dict[str, str]) -> None:
        self.truths = truths

    def __call__(self, request: dict[str, Any]) -> str:
        prompt = request["messages"][1]["content"] if len(request["messages"]) > 1 else ""
        if "## candidate ids\n" not in prompt:
            return "The viewer watches one genre, film after film."  # an abstractor summary
        listed = json.loads(prompt.split("## candidate ids\n", 1)[1].splitlines()[0])
        truth = self.truths[prompt.split("for user ", 1)[1].split(".", 1)[0]]
        ranking = json.dumps([truth, *(item for item in listed if item != truth)])
        return (
            '<plan>\nshort {"agents": ["user_profile"]}\n</plan>\n'
            '<user_profile>\n{"traits": []}\n</user_profile>\n'
            f'<reflection>\nok {{"passed": true}}\n</reflection>\n<recommend>\n{ranking}\n</recommend>'
        )


@pytest.fixture()
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("STARREC_CACHE_DIR", str(tmp_path / "cache"))
    return {"root": tmp_path, "data": write_dataset(build_movie_dataset(), tmp_path / "movies")}


def test_stages_and_every_eval_row_without_training(world: dict[str, Any]) -> None:
    root = world["root"]

    def config_of(url: str, *more: str) -> Any:
        overrides = [f"data.dataset={world['data']}", "data.n_test=3", "eval.classical=[random, itemknn]"]
        overrides += [f"student.base_urls.{role}={url}" for role in ("base", "sft", "grpo")]
        return load_config(TINY, [*overrides, *more], work=root / "work")

    layout = WorkLayout.of(config_of("http://unused"))
    run_pipeline(config_of("http://unused"), only="data")
    test_tasks, train_tasks = read_tasks(layout.test_tasks), read_tasks(layout.train_tasks)
    assert (len(test_tasks), len(train_tasks)) == (3, 4)
    assert (layout.work / "movies-train" / "review.json").is_file()
    teacher = scripted_teacher(
        {frozenset(t.candidates): t.ground_truth or "" for t in test_tasks + train_tasks}
    )

    with ScriptedServer(OracleStudent({t.user_id: t.ground_truth or "" for t in test_tasks})) as server:
        config = config_of(server.base_url)
        teach = run_pipeline(config, only="teach", teacher_model=teacher)["stages"]["teach"]
        assert teach["status"] == "ran" and teach["result"]["runs"] == 4 and teach["result"]["errors"] == 0
        assert run_pipeline(config, only="filter")["stages"]["filter"]["result"]["kept_runs"] == 4
        # planner-sft: off with the switch (nothing trained or written, recorded as off).
        off = run_pipeline(config_of(server.base_url, "eval.mars_planner=false"), only="planner-sft")
        assert off["stages"]["planner-sft"] == {"status": "off", "result": {}}
        assert not layout.planner_sft.exists()
        planner = ScriptedChatModel(
            responses={"planner": default_script([])["planner"]}, cycle=True, model_name="planner-sft"
        )
        serve = run_pipeline(config, only="serve", teacher_model=teacher, planner_model=planner)
        reached = [(e["role"], e["how"]) for e in serve["stages"]["serve"]["result"]["endpoints"]]
        assert reached == [
            ("teacher", "injected"),
            ("planner", "injected"),
            *((role, "endpoint") for role in ("base", "sft", "grpo")),
        ]
        outcome = run_pipeline(config, only="eval", teacher_model=teacher, planner_model=planner)
        results = json.loads(layout.results.read_text())

        # Resume inside eval: a finished group is read back; a missing one, or one whose settings
        # changed (here the best-of-k values), is measured again.
        before = {path.name: path.stat().st_mtime_ns for path in layout.eval_dir.glob("rows-*.json")}
        (layout.eval_dir / "rows-cf_prior.json").unlink()
        again = eval_stage(PipelineRun(config, layout, quiet_console(), teacher, planner))
        assert [untimed(entry) for entry in again["rows"]] == [untimed(entry) for entry in results["rows"]]
        fewer_config = config_of(server.base_url, "eval.ks=[1]", "eval.mars_planner=false")
        fewer = eval_stage(PipelineRun(fewer_config, layout, quiet_console(), teacher))
        assert [entry["key"] for entry in fewer["rows"]][-2:] == ["star_grpo", "best_of_1"]
        assert "mars_planner" not in {entry["key"] for entry in fewer["rows"]}
        after = {path.name: path.stat().st_mtime_ns for path in layout.eval_dir.glob("rows-*.json")}
        assert {name for name in after if after[name] != before.get(name)} == {
            "rows-cf_prior.json",
            "rows-best-of-k-grpo.json",
        }
        eval_stage(PipelineRun(config, layout, quiet_console(), teacher, planner))  # back to ks [1, 2]

    assert results == outcome["stages"]["eval"]["result"]
    rows = {entry["key"]: entry for entry in results["rows"]}
    assert list(rows) == ROW_KEYS
    for entry in rows.values():
        assert entry["n_tasks"] == 3 and entry["cost_per_task_usd"] == 0.0
        for key in ("hr@1", "hr@3", "hr@5", "hr_avg"):
            low, high = entry["ci95"][key]
            assert low <= entry[key] <= high
        assert (entry["llm_calls_per_task"] > 0) == (entry["kind"] in ("teacher", "hybrid", "student"))
    assert rows["best_classical"]["hr_avg"] == max(rows["random"]["hr_avg"], rows["itemknn"]["hr_avg"])
    for key in ("star_base", "star_sft", "star_grpo", "best_of_1", "best_of_2"):
        assert rows[key]["hr@1"] == 1.0 and rows[key]["unparsed_chain_share"] == 0.0
    assert rows["best_of_2"]["llm_calls_per_task"] == 2 * rows["best_of_1"]["llm_calls_per_task"]
    assert rows["best_of_1"]["wall_s"] is None and rows["best_of_2"]["wall_s"] is not None

    # MARS fused and raw are scored from the same recorded runs: the final and the ranker's LLM order.
    runs = {run.task_id: run for run in load_trajectories(layout.eval_dir / "mars-runs")}
    truths = [task.ground_truth or "" for task in test_tasks]
    fused = summarize([runs[t.task_id].ranking for t in test_tasks], truths)
    llm = [
        next(s for s in runs[t.task_id].steps if s.node == "ranker").output["llm_ranking"] for t in test_tasks
    ]
    assert rows["mars_fused"]["hr_avg"] == fused["hr_avg"]
    assert rows["mars_raw"]["hr_avg"] == summarize(llm, truths)["hr_avg"]

    # MARS-Planner: the injected planner planned every run, the teacher ran every other node.
    hybrid = rows["mars_planner"]
    assert hybrid["method"] == "MARS-Planner (fused)" and set(hybrid) >= set(rows["mars_fused"])
    assert hybrid["per_model"]["planner-sft"]["nodes"] == ["planner"]
    assert hybrid["per_model"]["planner-sft"]["llm_calls"] == 3
    assert "planner" not in hybrid["per_model"]["scripted"]["nodes"]
    assert "planner" in rows["mars_fused"]["per_model"]["scripted"]["nodes"]
    planned = load_trajectories(layout.eval_dir / "mars-planner-runs")
    assert sorted(run.task_id for run in planned) == sorted(t.task_id for t in test_tasks)

    record = json.loads(layout.record.read_text())
    assert {"data", "teach", "filter", "planner-sft", "serve", "eval"} <= set(record["stages"])
    assert record["stages"]["planner-sft"]["status"] == "off"
    assert record["config"]["data"]["n_test"] == 3 and len(record["invocations"]) == 6
    assert [untimed(entry) for entry in finished_rows(config, layout)[0]] == [
        untimed(e) for e in results["rows"]
    ]

    # The benchmark formats what the work folder holds (here: every group, nothing missing).
    report = benchmark().main(
        [
            "--config",
            str(TINY),
            "--work",
            str(layout.work),
            "--results",
            str(root / "results"),
            "--set",
            f"data.dataset={world['data']}",
            "--set",
            "data.n_test=3",
            "--set",
            "eval.classical=[random, itemknn]",
            "--report-only",
        ]
    )
    text = report.read_text(encoding="utf-8")
    assert "Not finished" not in text and (root / "results" / "star_vs_mars.png").is_file()
    raw = rows["mars_raw"]
    assert f"| MARS raw (LLM order) | {raw['hr@1']:.3f} [{raw['ci95']['hr@1'][0]:.2f}, " in text
    assert len(raw["load_average"]) == 3 and f"(load {raw['load_average'][0]:.1f})" in text  # beside its time
    saved = json.loads((root / "results" / "star_vs_mars.json").read_text())
    assert [entry["key"] for entry in saved["rows"]] == ROW_KEYS and saved["meta"]["missing"] == []


def benchmark() -> Any:
    """``benchmarks/star_vs_mars.py`` as a module."""
    return load_benchmark("star_vs_mars")


def test_planner_sft_makes_only_eval_stale() -> None:
    assert stale_before("eval", frozenset({"planner-sft"}))
    assert not stale_before("sft", frozenset({"planner-sft"}))
    assert not stale_before("grpo", frozenset({"planner-sft", "serve"}))
    assert stale_before("planner-sft", frozenset({"filter"})) and stale_before("sft", frozenset({"filter"}))
    assert not stale_before("eval", frozenset({"serve"}))


def test_benchmark_flags_set_config_fields(tmp_path: Path) -> None:
    module = benchmark()
    args = module.parse_args(
        ["--config", str(TINY), "--n-test", "5", "--concurrency", "3", "--set", "seed=2"]
    )
    config = module.build_config(args)
    assert (config.data.n_test, config.teacher.concurrency, config.student.concurrency) == (5, 3, 3)
    assert config.seed == 2 and config.work == TINY.parents[1] / "pipeline-work" / "tiny"
    report = module.main(
        [
            "--config",
            str(TINY),
            "--work",
            str(tmp_path / "w"),
            "--results",
            str(tmp_path / "r"),
            "--report-only",
        ]
    )
    assert (
        "**Not finished yet (no rows): classical, cf_prior, mars, mars_planner, star-base"
        in report.read_text()
    )


def untimed(entry: dict[str, Any]) -> dict[str, Any]:
    """A row without its timings (they differ between two measurements of the same rankings)."""
    return {
        key: value
        for key, value in entry.items()
        if "wall_s" not in key and "_s_per_" not in key and key != "load_average"
    }


def quiet_console() -> Any:
    from rich.console import Console

    return Console(quiet=True)


def test_cli_runs_a_stage_and_prints_the_stage_table(world: dict[str, Any]) -> None:
    work = world["root"] / "work"
    args = [
        "pipeline",
        "run",
        str(TINY),
        "--work",
        str(work),
        "--set",
        f"data.dataset={world['data']}",
        "--set",
        "data.n_test=3",
        "--only",
        "data",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "pipeline stages" in result.output and (work / "tasks-test" / "manifest.json").is_file()
    nothing = [
        "--set",
        "eval.mars=false",
        "--set",
        "eval.mars_planner=false",
        "--set",
        "eval.star=[]",
        "--set",
        "eval.ks=[]",
        "--only",
        "serve",
    ]
    checked = CliRunner().invoke(app, [*args[:-2], *nothing])
    assert checked.exit_code == 0, checked.output
    assert json.loads((work / "serve.json").read_text()) == {"endpoints": []}
    # A work folder built for other tasks is refused, also when the data stage would be skipped.
    for only in (["--only", "data"], ["--from", "teach"]):
        changed = CliRunner().invoke(app, [*args[:-2], "--set", "data.n_test=5", *only])
        assert changed.exit_code == 1
        last = changed.output.strip().splitlines()[-1]
        assert (
            last.startswith("error: ")
            and "holds 3 classic tasks built with seed 0, but the config asks for 5" in last
        )


def test_teach_stops_at_a_busy_run_folder_before_starting_a_server(world: dict[str, Any]) -> None:
    overrides = [f"data.dataset={world['data']}", "data.n_test=3", "teacher.llm=openai"]
    config = load_config(TINY, overrides, work=world["root"] / "work")
    run_pipeline(config, only="data")
    with (
        run_folder_lock(WorkLayout.of(config).runs),
        pytest.raises(RunFolderBusyError, match="is being written by"),
    ):
        run_pipeline(config, only="teach")  # a vLLM start would fail first here (no .venv-vllm in tests)


def test_a_row_keeps_distinct_error_messages_of_the_tasks_that_raised() -> None:
    report = {
        "per_task": [
            {"task_id": "a", "error": None},
            {"task_id": "b", "error": "APIConnectionError: Connection refused"},
            {"task_id": "c", "error": "APIConnectionError: Connection refused"},
            {"task_id": "d", "error": "BadRequestError: seed must be an int"},
            {"task_id": "e", "error": "TimeoutError: 120 s"},
            {"task_id": "f", "error": "KeyError: 'x'"},
        ]
    }
    assert error_examples(report) == [
        "APIConnectionError: Connection refused",
        "BadRequestError: seed must be an int",
        "TimeoutError: 120 s",
    ]
    assert error_examples({"per_task": [{"error": None}]}) == []


def test_carry_over_keeps_rows_of_the_same_test_tasks_only(tmp_path: Path) -> None:
    module = benchmark()

    def configured(*flags: str) -> Any:
        args = ["--config", str(TINY), "--work", str(tmp_path / "work"), *flags]
        return module.build_config(module.parse_args(args))

    config = configured()
    previous = {
        "config": config.to_dict(),
        "meta": {"date": "2026-12-03 19:00 UTC", "stages": {"sft": {"result": {"steps": 7, "examples": 3}}}},
        "rows": [{"key": "random", "hr_avg": 0.1}, {"key": "star_sft", "hr_avg": 0.5}],
    }
    (tmp_path / "star_vs_mars.json").write_text(json.dumps(previous))
    rows = [{"key": "random", "hr_avg": 0.2}]
    carried = module.carry_over(config, WorkLayout.of(config), rows, tmp_path)
    assert [row["key"] for row in rows] == ["random", "star_sft"] and rows[0]["hr_avg"] == 0.2
    assert rows[1]["carried_from"] == "2026-12-03 19:00 UTC" and rows[1]["carried_sft"]["steps"] == 7
    assert carried["rows"] == {"star_sft": "2026-12-03 19:00 UTC"} and carried["groups"] == ["star-sft"]
    assert "same task settings" in carried["matched_on"]
    more_training = configured("--n-train", "9")  # sizes the training tasks only: same test tasks
    assert module.carry_over(more_training, WorkLayout.of(more_training), [], tmp_path)["rows"]
    other = configured("--n-test", "9")
    with pytest.raises(SystemExit, match="other tasks"):
        module.carry_over(other, WorkLayout.of(other), [], tmp_path)
