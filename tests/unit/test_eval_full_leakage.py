"""The leakage guard of ``starrec eval --protocol full``, end to end: no stage sees the answer.

A spy method records the training view it is fitted on and every request; the test fails if the
protocol fits on the full data or builds a request from it (e.g. ``hide_from`` removed).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from baselines_fixtures import planted_clusters
from typer.testing import CliRunner

import starrec.eval.methods
from starrec.cli import app
from starrec.data import write_dataset
from starrec.data.schema import Dataset, RankRequest
from starrec.data.tasks import write_tasks
from starrec.eval.recommender import Recommender

runner = CliRunner()


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Four clusters of 25 items; each user has 10 training items and one held-out truth."""
    root = tmp_path_factory.mktemp("planted")
    dataset, tasks = planted_clusters()
    return write_dataset(dataset, root / "data"), write_tasks(tasks[::4], root / "tasks")


def run_full(planted: tuple[Path, Path], tmp_path: Path, *flags: str) -> dict:
    data, tasks = planted
    out = tmp_path / "report.json"
    result = runner.invoke(app, ["eval", "--protocol", "full", "--data", str(data), "--tasks", str(tasks),
                                 *flags, "--json", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


class Spy(Recommender):
    """Records the training view and every request; ranks by item id."""

    name = "spy"
    instances: list[Spy] = []  # noqa: RUF012 - the test reads what the CLI built

    def __init__(self) -> None:
        self.train: Dataset | None = None
        self.requests: list[RankRequest] = []
        Spy.instances.append(self)

    def fit(self, train: Dataset) -> None:
        self.train = train

    def rank(self, request: RankRequest) -> Sequence[str]:
        self.requests.append(request)
        return sorted(request.candidates)


def test_no_stage_sees_the_answer(planted: tuple[Path, Path], tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails if evaluate_full fits on the full data or builds requests from it (the leakage guard)."""
    monkeypatch.setattr(starrec.eval.methods, "make_method", lambda name, options=None: Spy())
    Spy.instances.clear()
    report = run_full(planted, tmp_path, "--method", "spy", "--retriever", "other", "--retrieve-n", "5")
    reranker, retriever = Spy.instances  # --method is built first
    truths = {task["user_id"]: task["ground_truth"] for task in report["per_task"]}
    for spy, size in ((retriever, 90), (reranker, 5)):
        assert spy.train is not None and len(spy.requests) == 30
        assert not any(event.item_id == truths.get(event.user_id) for event in spy.train.interactions)
        for request in spy.requests:
            assert len(request.candidates) == size and len(request.history) == 10
            assert all(event.item_id != truths[request.user_id] for event in request.history)
    for request in retriever.requests:
        assert truths[request.user_id] in request.candidates
        assert not {event.item_id for event in request.history} & set(request.candidates)
