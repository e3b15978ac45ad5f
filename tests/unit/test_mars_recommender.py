"""``starrec eval --method mars`` path: options -> Context, the Recommender over the shared runner."""

from __future__ import annotations

from pathlib import Path

import pytest
from mars_fixtures import FakeEvidence, build_movie_dataset, default_script, make_task

from starrec.eval.harness import evaluate
from starrec.eval.methods import MethodOptions
from starrec.graphs.context import Context
from starrec.graphs.recommender import MarsRecommender, context_from_options
from starrec.llm.scripted import ScriptedChatModel


def test_options_become_a_typed_context() -> None:
    options = MethodOptions(
        seed=3,
        data_dir=Path("/data"),
        llm="openai",
        model="deepseek-chat",
        base_url="http://127.0.0.1:8000/v1",
        extra={"ranker_fusion": "rrf", "use_planner": "false", "max_tool_calls": "3"},
    )
    context = context_from_options(options)
    assert context.llm == "openai:deepseek-chat" and context.base_url == "http://127.0.0.1:8000/v1"
    assert context.ranker_fusion == "rrf" and context.use_planner is False and context.max_tool_calls == 3
    assert context.seed == 3 and context.data_dir == "/data"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"colour": "red"}, "unknown MARS option 'colour'"),
        ({"use_tools": "maybe"}, "MARS option use_tools='maybe' is not a valid bool"),
        ({"chunk_size": "ten"}, "MARS option chunk_size='ten' is not a valid int"),
        ({"ranker_fusion": "borda"}, "ranker_fusion must be 'agreement', 'rrf' or 'llm'"),
    ],
)
def test_bad_options_are_named(extra: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        context_from_options(MethodOptions(extra=extra))


def test_ablation_switches_one_knob() -> None:
    assert Context().with_ablation("no_reflector").use_reflector is False
    with pytest.raises(ValueError, match="unknown ablation"):
        Context().with_ablation("no_ranker")


def test_harness_evaluates_mars_with_repairs_counted() -> None:
    dataset = build_movie_dataset()
    tasks = [make_task(dataset, user, i) for i, user in enumerate(("u1", "u2", "u3"))]
    script = default_script([])
    script["ranker"] = ['{"ranking": ["m999"]}']
    model = ScriptedChatModel(responses=script, cycle=True)
    method = MarsRecommender(
        Context(chunk_size=3), chat_model=model, evidence=FakeEvidence(dataset), concurrency=3
    )
    report = evaluate(method, tasks, dataset, seed=0, progress=False)
    assert report["n_tasks"] == 3 and report["invalid"]["errors"] == 0
    stats = report["method_stats"]
    assert stats["runs"] == 3 and stats["repairs"]["ranking_hallucinated"] == 3
    assert all(len(t.ranking) == 20 for t in method.trajectories)


def test_fit_builds_ladybug_evidence_from_the_training_view(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STARREC_CACHE_DIR", str(tmp_path))
    dataset = build_movie_dataset()
    tasks = [make_task(dataset, "u4", 0)]
    model = ScriptedChatModel(responses=default_script([]), cycle=True)
    method = MarsRecommender(Context(chunk_size=3), chat_model=model)
    report = evaluate(method, tasks, dataset, seed=0, progress=False)
    assert report["invalid"]["errors"] == 0
    assert list((tmp_path / "graphs").glob("*.lbdb"))
    ranker = next(s for s in method.trajectories[0].steps if s.node == "ranker")
    assert ranker.output["cf_ranking"] and ranker.output["cf_queries"]


def test_a_second_fit_rebuilds_its_evidence_and_forgets_old_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from starrec.graphs import recommender as module
    from starrec.graphs.context import Context
    from starrec.graphs.recommender import MarsRecommender

    built: list[object] = []
    monkeypatch.setattr(module, "evidence_for_training_view", lambda train: built.append(train) or train)
    mars = MarsRecommender(Context())
    first, second = object(), object()
    mars.fit(first)  # type: ignore[arg-type]
    mars.trajectories.append("old run")  # type: ignore[arg-type]
    mars.fit(second)  # type: ignore[arg-type]
    assert built == [first, second] and mars.evidence is second and mars.trajectories == []
    given = MarsRecommender(Context(), evidence="mine")  # type: ignore[arg-type]
    given.fit(first)  # type: ignore[arg-type]
    given.fit(second)  # type: ignore[arg-type]
    assert given.evidence == "mine"
