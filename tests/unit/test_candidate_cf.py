"""candidate_cf: the formula on hand-computed cases, Cypher == index, leakage, k, the LangChain tool."""

from __future__ import annotations

import asyncio
import math
import threading
from pathlib import Path
from typing import Any

import pytest

from starrec.data.schema import Dataset, Interaction, Task
from starrec.tools.candidate_cf import (
    CandidateCF,
    CandidateCFConfig,
    item_cf_scores,
    prior_order,
    recent_anchors,
)
from starrec.tools.evidence import EvidenceStore
from starrec.tools.langchain_tools import make_cf_tools
from starrec.tools.toolkit import build_ladybug_graph
from tests.mars_fixtures import build_movie_dataset


def events(rows: list[tuple[str, str, float]]) -> Dataset:
    items = sorted({item for _, item, _ in rows})
    return Dataset(
        {}, {i: {"title": f"Title {i}"} for i in items},
        sorted((Interaction(u, i, t) for u, i, t in rows), key=lambda e: e.timestamp),
    )  # fmt: skip


# u1 watched a (t=1) then b (t=2). Users of a: u1,u2,u3. Users of b: u1,u3. x: u2,u3,u4. y: u4.
HAND = events(
    [
        ("u1", "a", 1), ("u1", "b", 2),
        ("u2", "a", 1), ("u2", "x", 2),
        ("u3", "a", 1), ("u3", "b", 2), ("u3", "x", 3),
        ("u4", "x", 1), ("u4", "y", 2),
    ]
)  # fmt: skip


def test_recent_anchors_are_distinct_newest_first() -> None:
    assert recent_anchors(["a", "b", "a", "c", "d"], 3) == ["d", "c", "a"]
    assert recent_anchors([], 10) == []


def test_scores_match_a_hand_computation() -> None:
    result = CandidateCF.from_dataset(HAND, CandidateCFConfig(window=10, decay=0.5)).score("u1", ["x", "y"])
    x, y = result.score_of("x"), result.score_of("y")
    # Anchors newest first: b (weight 1), a (weight 0.5). x shares u3 with b, u2 and u3 with a.
    expected = 1.0 * 1 / math.sqrt(2 * 3) + 0.5 * 2 / math.sqrt(3 * 3)
    assert x.item_cf == pytest.approx(expected)
    assert x.co_chosen == ["b", "a"]
    assert y.item_cf == 0.0 and y.co_chosen == []
    # Nearest users by shared history items: u3 (2), u2 (1); both chose x, none chose y.
    assert result.neighbours == 2 and x.user_cf == 2 and y.user_cf == 0
    assert (x.popularity, y.popularity) == (3, 1)
    assert result.order == ["x", "y"]
    assert "co-chosen with 2 of your last 2 items (Title b, Title a)" in x.line
    assert "chosen by 2 of your 2 nearest users" in x.line


def test_prior_order_breaks_ties_by_user_cf_then_popularity_then_shown_order() -> None:
    order = prior_order(
        ["p", "q", "r", "s"], {"p": 0.0, "q": 0.5}, {"r": 1, "s": 1, "p": 0}, {"s": 9, "r": 2}
    )
    assert order == ["q", "s", "r", "p"]


def test_item_cf_scores_ignore_pairs_of_unknown_anchors() -> None:
    assert item_cf_scores([("zz", "x", 5, 5, 5)], ["a"], 0.8) == {}


def test_cypher_equals_the_index_for_every_user(tmp_path: Path) -> None:
    dataset = build_movie_dataset(users=12, items=30)
    store, _ = build_ladybug_graph(dataset, tmp_path / "g.lbdb")
    try:
        index = CandidateCF(store, engine="index", noun="movie")
        cypher = CandidateCF(store, engine="cypher", noun="movie")
        candidates = sorted(dataset.items)[:20]
        for user in sorted(dataset.by_user):
            a, b = index.score(user, candidates), cypher.score(user, candidates)
            assert a.anchors == b.anchors and a.order == b.order and a.neighbours == b.neighbours
            for left, right in zip(a.scores, b.scores, strict=True):
                assert left.id == right.id
                assert left.item_cf == pytest.approx(right.item_cf, abs=1e-12)
                assert (left.co_chosen, left.user_cf, left.popularity) == (
                    right.co_chosen,
                    right.user_cf,
                    right.popularity,
                )
            assert [t.engine for t in a.queries] == ["index"] * 4
            wanted = {"candidate_item_cf", "candidate_user_cf", "item_popularity"}
            assert {t.name for t in b.queries} >= wanted
    finally:
        store.close()


def test_calls_are_inspectable_with_query_and_params() -> None:
    result = CandidateCF.from_dataset(HAND).score("u1", ["x", "y"], history=["a", "b"])
    names = [trace.name for trace in result.queries]
    assert names == ["candidate_item_cf", "candidate_user_cf", "item_popularity"]
    item_query = result.queries[0]
    assert "$anchors" in item_query.cypher
    assert item_query.params == {"anchors": ["b", "a"], "candidates": ["x", "y"]}
    assert item_query.row_count == 2  # (a, x) and (b, x)


def test_leakage_trap_hidden_events_never_contribute(tmp_path: Path) -> None:
    """The ground truth g and u1's later item z would both lift g; neither may reach a score."""
    rows = [
        ("u1", "a", 1), ("u1", "g", 5), ("u1", "z", 6),
        ("u2", "a", 1), ("u2", "g", 2), ("u2", "z", 3),
        ("u3", "z", 1), ("u3", "g", 2), ("u3", "n", 3),
        ("u4", "a", 1), ("u4", "n", 2),
    ]  # fmt: skip
    full = events(rows)
    task = Task("t0", "u1", ("g", "n"), "g")
    view = full.hide_from([task])
    clean = events([row for row in rows if not (row[0] == "u1" and row[2] >= 5)])
    store, _ = build_ladybug_graph(view, tmp_path / "g.lbdb")
    try:
        for scorer in (
            CandidateCF(store, engine="cypher"),
            CandidateCF(store, engine="index"),
            CandidateCF.from_dataset(view),
        ):
            leaky = scorer.score("u1", ["g", "n"])
            assert leaky.anchors == ["a"]
            reference = CandidateCF.from_dataset(clean).score("u1", ["g", "n"])
            assert leaky.model_dump(exclude={"queries"}) == reference.model_dump(exclude={"queries"})
            # g's users are u2 and u3 only: u1's own hidden interaction is not counted anywhere.
            assert leaky.score_of("g").popularity == 2
    finally:
        store.close()


def test_evidence_lines_follow_k_and_the_tool_returns_an_artifact(tmp_path: Path) -> None:
    dataset = build_movie_dataset(users=12, items=30)
    store, _ = build_ladybug_graph(dataset, tmp_path / "g.lbdb")
    try:
        source = EvidenceStore(store, noun="movie")
        candidates = sorted(dataset.items)[:20]
        short = source.candidate_cf("u1", candidates, k=3)
        assert len(short.scores) == 20 and short.evidence.count("\n- [") == 3  # header + 3 lines
        assert short.evidence.splitlines()[1].startswith(f"- [{short.order[0]}]")
        tool = {t.name: t for t in make_cf_tools(source)}["candidate_cf"]
        message = tool.invoke(
            {
                "type": "tool_call",
                "id": "1",
                "name": "candidate_cf",
                "args": {"user_id": "u1", "candidate_ids": candidates[:5]},
            }
        )
        assert message.artifact.order == source.candidate_cf("u1", candidates[:5]).order
        assert message.content == message.artifact.evidence
        # Asynchronously the tool answers inline once the index is in memory (no thread hop).
        assert source.answers_in_memory("candidate_cf") and not source.answers_in_memory("item_cf")
        call = {"type": "tool_call", "id": "2", "name": "candidate_cf",
                "args": {"user_id": "u1", "candidate_ids": candidates[:5]}}  # fmt: skip
        threads: list[int] = []
        scorer = source.candidates.score

        def recording_score(*args: Any, **kwargs: Any) -> Any:
            threads.append(threading.get_ident())
            return scorer(*args, **kwargs)

        source.candidates.score = recording_score  # type: ignore[method-assign]
        answer = asyncio.run(tool.ainvoke(call))
        assert answer.artifact.order == message.artifact.order and threads == [threading.get_ident()]
        # A source whose index is not built yet answers from the graph, so in a thread.
        fresh = EvidenceStore(store, noun="movie")
        assert not fresh.answers_in_memory("candidate_cf")
        fresh_scorer, fresh_threads = fresh.candidates.score, []

        def recording_fresh(*args: Any, **kwargs: Any) -> Any:
            fresh_threads.append(threading.get_ident())
            return fresh_scorer(*args, **kwargs)

        fresh.candidates.score = recording_fresh  # type: ignore[method-assign]
        fresh_tool = {t.name: t for t in make_cf_tools(fresh)}["candidate_cf"]
        answer = asyncio.run(fresh_tool.ainvoke(call))
        assert answer.artifact.order == message.artifact.order
        assert len(fresh_threads) == 1 and fresh_threads[0] != threading.get_ident()
        assert fresh.answers_in_memory("candidate_cf")  # the call built the index
    finally:
        store.close()


def test_bad_arguments_are_named() -> None:
    scorer = CandidateCF.from_dataset(HAND)
    with pytest.raises(ValueError, match="at least one candidate"):
        scorer.score("u1", [])
    with pytest.raises(ValueError, match="k must be >= 1"):
        scorer.score("u1", ["x"], k=0)
    with pytest.raises(ValueError, match="window must be >= 1"):
        CandidateCFConfig(window=0)
    with pytest.raises(ValueError, match="needs a graph store"):
        CandidateCF(None, engine="cypher")


def test_user_without_history_is_ranked_by_neighbours_then_popularity() -> None:
    result = CandidateCF.from_dataset(HAND).score("new-user", ["y", "x"])
    assert result.anchors == [] and result.order == ["x", "y"]
    assert "no history in the graph" in result.evidence


def test_item_and_user_cf_answers_follow_the_k_asked_for(tmp_path: Path) -> None:
    from starrec.tools.evidence import EvidenceBuildConfig, build_evidence

    dataset = build_movie_dataset(users=12, items=30)
    store, _ = build_ladybug_graph(dataset, tmp_path / "g.lbdb")
    try:
        build_evidence(store, EvidenceBuildConfig(k=20, noun="movie"), show_progress=False)
        source = EvidenceStore(store, noun="movie")
        full, short = source.item_cf("m4", 20), source.item_cf("m4", 3)
        assert len(full.neighbours) > 3
        assert [n.id for n in short.neighbours] == [n.id for n in full.neighbours][:3]
        assert short.evidence != full.evidence
        dropped = [n.id for n in full.neighbours[3:]]
        assert not any(f"[{item}]" in short.evidence or f"{item}," in short.evidence for item in dropped)
        user_short = source.user_cf("u1", 2)
        assert len(user_short.neighbours) == 2
        assert source.reverbalised == 2 and source.live_fallbacks == 0
    finally:
        store.close()
