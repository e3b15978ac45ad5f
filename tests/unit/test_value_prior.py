"""The value-affinity prior in the ranker's fusion (``Context.value_weight``): off at 0, tested on."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from mars_fixtures import FakeEvidence, build_movie_dataset, default_script, make_request, make_task

from starrec.contract.values import SCHWARTZ_VALUES
from starrec.eval.fusion import prior_points, value_prior
from starrec.graphs.context import Context
from starrec.graphs.graph import build_mars_graph
from starrec.graphs.recording import TrajectoryRecorder
from starrec.graphs.state import input_from_request
from starrec.llm.scripted import ScriptedChatModel
from starrec.tools.value_profiles import ItemValueProfiles

PROSE = ["I would enjoy several of these films.", "Any of them, really."]


def test_value_prior_at_weight_zero_is_the_prior_and_at_one_is_the_affinity() -> None:
    prior = ["a", "b", "c", "d"]
    affinity = {"a": -0.5, "b": 0.0, "c": 0.9, "d": 0.2}
    order, points = value_prior(prior, affinity, 0.0, {"a": 3.0, "b": 2.0, "c": 1.0, "d": 0.0})
    assert order == prior and points == prior_points(prior, {"a": 3.0, "b": 2.0, "c": 1.0, "d": 0.0})
    order, points = value_prior(prior, affinity, 1.0)
    assert order == ["c", "d", "b", "a"]
    assert points["c"] == pytest.approx(0.95) and points["a"] == pytest.approx(0.25)
    # Half the weight: affinity lifts b over a and d over c, but d (last in the prior) stays behind a.
    scores = {"a": 10.0, "b": 9.0, "c": 8.9, "d": 0.0}
    order, _ = value_prior(prior, {"b": 1.0, "c": -1.0, "d": 1.0}, 0.5, scores)
    assert order == ["b", "a", "d", "c"]
    with pytest.raises(ValueError, match=r"value weight must be in \[0, 1\], got 1.5"):
        value_prior(prior, affinity, 1.5)


def test_context_value_weight_is_bounded() -> None:
    assert Context().value_weight == 0.0
    with pytest.raises(ValueError, match="value_weight must be in"):
        Context(value_weight=-0.1)


def planted_profiles(dataset: Any, history: list[str], favourite: str) -> ItemValueProfiles:
    """History items and ``favourite`` lean to power; every other item leans to tradition."""
    power, tradition = SCHWARTZ_VALUES.index("power"), SCHWARTZ_VALUES.index("tradition")
    item_ids = tuple(sorted(dataset.items))
    matrix = np.full((len(item_ids), 10), 0.05, dtype=np.float32)
    for row, item in enumerate(item_ids):
        matrix[row, power if item in {*history, favourite} else tradition] = 0.55
    return ItemValueProfiles(item_ids, matrix, "planted")


def ranker_output(context: Context, profiles: ItemValueProfiles | None) -> tuple[dict[str, Any], list[str]]:
    dataset = build_movie_dataset()
    task = make_task(dataset, "u4")
    request = make_request(dataset, task)
    script = {**default_script(list(request.candidates)), "ranker": PROSE}
    model = ScriptedChatModel(responses=script, cycle=True)
    graph = build_mars_graph(chat_model=model, evidence=FakeEvidence(dataset), value_profiles=profiles)
    recorder = TrajectoryRecorder()
    state = asyncio.run(
        graph.ainvoke(input_from_request(request, dataset), context=context, config={"callbacks": [recorder]})
    )
    trajectory = recorder.trajectory(state, task_id=task.task_id, settings=context.settings())
    step = next(s for s in trajectory.steps if s.node == "ranker")
    return step.output, [e.item_id for e in request.history]


def test_weight_zero_keeps_the_cf_prior_and_a_positive_weight_lifts_the_value_match() -> None:
    base, history = ranker_output(Context(chunk_size=3, structured_output="json"), None)
    prior = base["cf_ranking"]
    favourite = prior[-1]
    profiles = planted_profiles(build_movie_dataset(), history, favourite)
    off, _ = ranker_output(Context(chunk_size=3, structured_output="json"), profiles)
    assert off["ranking"] == prior and "value_affinity" not in off
    on, _ = ranker_output(Context(chunk_size=3, structured_output="json", value_weight=0.6), profiles)
    assert on["cf_ranking"] == prior, "the CF prior itself is recorded unchanged"
    others = [score for item, score in on["value_affinity"].items() if item != favourite]
    assert on["value_affinity"][favourite] > 0 > max(others)
    assert on["ranking"][0] == favourite and on["value_ranking"][0] == favourite
    assert on["shown_order"] == on["value_ranking"], "the LLM is shown the value-blended prior"
    assert sorted(on["ranking"]) == sorted(prior)
