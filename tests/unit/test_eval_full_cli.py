"""``starrec eval --protocol full`` and ``starrec recommend`` end to end on planted clusters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from baselines_fixtures import planted_clusters
from typer.testing import CliRunner

from starrec.cli import app
from starrec.data.agentsociety import write_dataset
from starrec.data.tasks import write_tasks

runner = CliRunner()


@pytest.fixture(scope="module")
def planted_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("planted")
    dataset, tasks = planted_clusters()
    data = write_dataset(dataset, root / "data")
    write_tasks(tasks[::4], root / "tasks")
    return data, root / "tasks"


def run_full(data: Path, tasks: Path, out: Path, *extra: str) -> dict:
    outputs = ["--json", str(out / "r.json"), "--markdown", str(out / "r.md")]
    command = ["eval", "--protocol", "full", "--data", str(data), "--tasks", str(tasks), *outputs, *extra]
    result = runner.invoke(app, command)
    assert result.exit_code == 0, result.output
    return json.loads((out / "r.json").read_text())


def test_full_protocol_retrieves_reranks_and_scores(planted_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    data, tasks = planted_dirs
    report = run_full(
        data, tasks, tmp_path, "--method", "itemknn", "--retriever", "itemknn", "--retrieve-n", "30"
    )
    assert report["protocol"] == "full" and report["n_tasks"] == 30 and report["reranker"] is None
    # 100 items, 10 seen per user: the truth is one of 15 unseen in-cluster items, which ItemKNN puts first.
    assert report["recall@30"] == 1.0 and report["hr@10"] >= 0.5
    assert report["catalogue_size"] == 100 and report["mean_retrieval_candidates"] == 90
    assert "recall@30" in (tmp_path / "r.md").read_text()
    # pop scores every item the same (flat popularity): re-ranking its top 30 with itemknn lifts HR@10.
    pop = run_full(data, tasks, tmp_path, "--method", "pop", "--retriever", "pop", "--retrieve-n", "30")
    reranked = run_full(
        data, tasks, tmp_path, "--method", "itemknn", "--retriever", "pop", "--retrieve-n", "30"
    )
    assert reranked["reranker"] == "itemknn" and reranked["retriever"] == "pop"
    assert reranked["recall@30"] == pop["recall@30"]
    assert reranked["hr@10"] > pop["hr@10"]


def test_full_protocol_errors_name_the_flag(planted_dirs: tuple[Path, Path]) -> None:
    data, tasks = planted_dirs
    base = ["eval", "--protocol", "full", "--tasks", str(tasks), "--method", "itemknn"]
    missing = runner.invoke(app, base)
    assert missing.exit_code != 0 and "--data" in missing.output
    unknown = runner.invoke(app, [*base, "--data", str(data), "--retriever", "nope"])
    assert unknown.exit_code != 0 and "unknown method 'nope'" in unknown.output
    bad_n = runner.invoke(app, [*base, "--data", str(data), "--retrieve-n", "0"])
    assert bad_n.exit_code != 0 and "retrieve_n must be >= 1" in bad_n.output


def test_recommend_prints_top_k_with_evidence(planted_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    data, _ = planted_dirs
    out = tmp_path / "rec.json"
    result = runner.invoke(
        app, ["recommend", "--data", str(data), "--user", "u2_3", "--k", "5", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    items = payload["items"]
    assert [item["rank"] for item in items] == [1, 2, 3, 4, 5] and payload["method"] == "itemknn"
    # Cluster-2 users touch only cluster-2 items: the top 5 are unseen cluster-2 items co-chosen with history.
    assert all(item["item_id"].startswith("i2_") for item in items)
    assert all(item["item_cf"] > 0 and "co-chosen with" in item["evidence"] for item in items)
    assert "co-chosen with" in result.output


def test_recommend_reranks_and_names_an_unknown_user(planted_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    data, _ = planted_dirs
    reranked = runner.invoke(
        app, ["recommend", "--data", str(data), "--user", "u0_0", "--method", "pop", "--rerank", "itemknn",
              "--retrieve-n", "99", "--json", str(tmp_path / "r.json")],
    )  # fmt: skip
    assert reranked.exit_code == 0, reranked.output
    payload = json.loads((tmp_path / "r.json").read_text())
    assert payload["method"] == "itemknn" and payload["retriever"] == "pop"
    assert all(item["item_id"].startswith("i0_") for item in payload["items"])
    unknown = runner.invoke(app, ["recommend", "--data", str(data), "--user", "ghost"])
    assert unknown.exit_code != 0 and "user 'ghost' has no interactions" in unknown.output
