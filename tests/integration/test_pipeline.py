"""``configs/pipeline-tiny.yaml`` end to end, training included: a scripted MARS teacher on a 12-user
dataset, SFT, RL data and GRPO on the random ``tiny`` student, every eval row with the students
in-process; then a rerun that skips everything, and ``--from grpo`` that redoes only what GRPO feeds.

About three minutes on a busy 2-core machine (the TRL stages), hence ``slow``; the default suite runs
the same stages without training in tests/unit/test_pipeline_stages.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from distill_fixtures import scripted_teacher
from mars_fixtures import build_movie_dataset

from starrec.data.agentsociety import write_dataset
from starrec.data.tasks import read_tasks
from starrec.pipeline import STAGES, WorkLayout, load_config, run_pipeline

TINY = Path(__file__).resolve().parents[2] / "configs" / "pipeline-tiny.yaml"


@pytest.mark.slow
def test_tiny_pipeline_trains_evaluates_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STARREC_CACHE_DIR", str(tmp_path / "cache"))
    data = write_dataset(build_movie_dataset(), tmp_path / "movies")
    config = load_config(TINY, [f"data.dataset={data}", "data.n_test=3"], work=tmp_path / "work")
    layout = WorkLayout.of(config)
    run_pipeline(config, only="data")
    tasks = read_tasks(layout.train_tasks) + read_tasks(layout.test_tasks)
    teacher = scripted_teacher({frozenset(t.candidates): t.ground_truth or "" for t in tasks})

    first = run_pipeline(config, teacher_model=teacher)["stages"]
    assert first["data"]["status"] == "skipped"
    assert all(first[name]["status"] == "ran" for name in STAGES[1:])
    assert first["sft"]["result"]["steps"] == 2 and first["grpo"]["result"]["steps"] == 2
    assert first["planner-sft"]["result"]["steps"] == 2 and (layout.planner_sft / "config.json").is_file()
    assert first["rl-data"]["result"]["instances"] == 4 and first["rl-data"]["result"]["mixed"]["hard"] > 0
    assert (layout.grpo / "model.safetensors").is_file() and (layout.grpo / "reward_curve.png").is_file()
    rows = {row["key"]: row for row in first["eval"]["result"]["rows"]}
    assert list(rows) == ["random", "pop", "itemknn", "best_classical", "cf_prior", "mars_fused", "mars_raw",
                          "mars_planner", "star_base", "star_sft", "star_grpo", "best_of_1",
                          "best_of_2"]  # fmt: skip
    planner_nodes = [row["nodes"] for row in rows["mars_planner"]["per_model"].values()]
    assert ["planner"] in planner_nodes and rows["mars_planner"]["n_tasks"] == 3
    for key in ("star_base", "star_sft", "star_grpo", "best_of_2"):
        assert rows[key]["n_tasks"] == 3 and rows[key]["chains"] >= 3 and rows[key]["llm_calls_per_task"] >= 1
        assert 0.0 <= rows[key]["repaired_chain_share"] <= 1.0

    second = run_pipeline(config, teacher_model=teacher)["stages"]
    assert [name for name, entry in second.items() if entry["status"] == "ran"] == ["serve"]
    assert second["eval"]["result"] == first["eval"]["result"]
    assert second["grpo"]["seconds"] == first["grpo"]["seconds"]  # the timing of the run that made it

    before = {path.name: path.stat().st_mtime_ns for path in layout.eval_dir.glob("rows-*.json")}
    third = run_pipeline(config, from_stage="grpo", teacher_model=teacher)["stages"]
    assert list(third) == ["grpo", "serve", "eval"] and all(e["status"] == "ran" for e in third.values())
    after = {path.name: path.stat().st_mtime_ns for path in layout.eval_dir.glob("rows-*.json")}
    assert {name for name in after if after[name] != before[name]} == {
        "rows-star-grpo.json",
        "rows-best-of-k-grpo.json",
    }
    record = json.loads(layout.record.read_text())
    assert len(record["invocations"]) == 4 and record["stages"]["grpo"]["seconds"] > 0
