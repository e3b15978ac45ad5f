"""The real local model (SmolLM2-135M-Instruct, CPU) through the whole graph on one MovieLens task."""

from __future__ import annotations

from pathlib import Path

import pytest

from starrec.contract.runs_file import RunsFile
from starrec.data.agentsociety import load_dataset
from starrec.data.scenarios import build_tasks
from starrec.data.tasks import write_tasks
from starrec.graphs.context import Context
from starrec.graphs.demo import DEMO_KNOBS
from starrec.graphs.teach import teach


@pytest.mark.slow
def test_smollm2_produces_a_valid_ranking_through_the_whole_graph(ml100k_dir: Path, tmp_path: Path) -> None:
    built = build_tasks(load_dataset(ml100k_dir), "classic", 1, seed=7)
    write_tasks(built.tasks, tmp_path / "tasks", built.manifest)
    context = Context(llm="local", data_dir=str(ml100k_dir), tasks_dir=str(tmp_path / "tasks"), **DEMO_KNOBS)
    summary = teach(ml100k_dir, tmp_path / "tasks", tmp_path / "runs", context)
    [record] = RunsFile(tmp_path / "runs").records()
    assert record["error"] is None, record["error"]
    assert sorted(record["ranking"]) == sorted(built.tasks[0].candidates)
    assert len(record["ranking"]) == 20
    assert record["nodes"][0] == "abstractor" and record["nodes"][-1] == "ranker"
    assert record["llm_calls"] >= 3 and record["completion_tokens"] > 0
    assert summary.runs == 1 and summary.errors == 0
