"""MovieLens-100k: candidate_cf on Ladybug (Cypher) equals the scipy oracle for every test user."""

from __future__ import annotations

from pathlib import Path

import pytest

from starrec.data.scenarios import SCENARIOS, build_tasks
from starrec.data.schema import Dataset
from starrec.eval.harness import build_requests
from starrec.tools.candidate_cf import CandidateCF
from starrec.tools.toolkit import build_ladybug_graph


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_cypher_equals_the_scipy_oracle_for_every_test_user(
    ml100k: Dataset, scenario: str, tmp_path: Path
) -> None:
    tasks = build_tasks(ml100k, scenario, n=100, seed=0).tasks
    view = ml100k.hide_from(tasks)
    store, _ = build_ladybug_graph(view, tmp_path / "ml.lbdb")
    try:
        cypher = CandidateCF(store, engine="cypher", noun="movie")
        oracle = CandidateCF.from_dataset(view)
        for request in build_requests(tasks, view, seed=0):
            history = [event.item_id for event in request.history]
            got = cypher.score(request.user_id, request.candidates, history)
            want = oracle.score(request.user_id, request.candidates, history)
            assert got.order == want.order, request.task_id
            assert got.neighbours == want.neighbours
            for left, right in zip(got.scores, want.scores, strict=True):
                assert left.item_cf == pytest.approx(right.item_cf, abs=1e-12), (request.task_id, left.id)
                assert (left.co_chosen, left.user_cf, left.popularity) == (
                    right.co_chosen,
                    right.user_cf,
                    right.popularity,
                ), (request.task_id, left.id)
    finally:
        store.close()
