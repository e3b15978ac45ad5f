"""Evidence build + online lookup, leakage trap, open_toolkit reuse, LangChain tools."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.messages import ToolMessage

from starrec.data.schema import Dataset, Interaction, Task
from starrec.tools import make_cf_tools, open_toolkit
from starrec.tools import toolkit as toolkit_module
from starrec.tools.evidence import EvidenceBuildConfig, EvidenceStore, build_evidence
from starrec.tools.ladybug_store import LadybugStore
from starrec.tools.store import GraphStoreError, GraphTables
from starrec.tools.synthetic import power_law_dataset


@pytest.fixture()
def isolated_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("STARREC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(toolkit_module, "_OPEN", {})
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    dataset = power_law_dataset(60, 90, 1200, seed=5)
    store = LadybugStore.create(tmp_path_factory.mktemp("ev") / "g.lbdb", GraphTables.from_dataset(dataset))
    report = build_evidence(store, EvidenceBuildConfig(k=8, noun="movie"), show_progress=False)
    yield store, report
    store.close()


def test_build_covers_every_anchor_and_resumes(built) -> None:
    store, report = built
    assert report.anchors == {"item": 90, "user": 60}
    assert store.ids("item", missing_evidence_only=True) == []
    again = build_evidence(store, EvidenceBuildConfig(k=8), show_progress=False)
    assert again.anchors == {"item": 0, "user": 0} and again.skipped == {"item": 90, "user": 60}


def test_tool_call_is_one_lookup_returning_stored_evidence_and_its_cypher(built) -> None:
    store, _ = built
    source = EvidenceStore(store, noun="movie")
    result = source.item_cf("i1", 5)
    assert result.found and result.evidence.startswith('Item-CF for movie i1 "Title 1"')
    live, _ = store.item_cf("i1", 8)
    assert [(n.id, n.shared) for n in result.neighbours] == live[:5]
    assert [query.name for query in result.queries] == ["item_evidence_get", "item_cf"]
    assert result.queries[1].params == {"id": "i1", "k": 8}
    assert "count(DISTINCT u)" in result.queries[1].cypher
    assert source.live_fallbacks == 0


def test_more_neighbours_than_stored_falls_back_to_a_live_query(built) -> None:
    store, _ = built
    source = EvidenceStore(store, noun="movie")
    result = source.user_cf("u3", 15)
    assert source.live_fallbacks == 1
    assert [query.name for query in result.queries] == ["user_evidence_get", "user_cf"]
    assert result.queries[1].params["k"] == 15


def test_unknown_ids_say_not_in_graph(built) -> None:
    store, _ = built
    source = EvidenceStore(store)
    for result in (source.item_cf("nope' OR 1=1", 5), source.user_cf("{ghost}", 5)):
        assert not result.found and "not in graph" in result.evidence and result.neighbours == []
    with pytest.raises(ValueError, match="k must be"):
        source.item_cf("i1", 0)


def test_langchain_tools_return_evidence_and_artifact(built) -> None:
    store, _ = built
    item_cf, user_cf, _ = make_cf_tools(EvidenceStore(store))
    assert item_cf.name == "item_cf" and set(item_cf.args) == {"item_id", "k"}
    message = item_cf.invoke({"type": "tool_call", "id": "c1", "name": "item_cf", "args": {"item_id": "i2"}})
    assert isinstance(message, ToolMessage) and message.content.startswith("Item-CF")
    assert message.artifact.anchor == "i2" and len(message.artifact.neighbours) == 10  # default k
    assert "User-CF" in user_cf.invoke({"user_id": "u1", "k": 3})
    with pytest.raises(ValueError):
        item_cf.invoke({"item_id": "i2", "k": 500})


def _trap_dataset() -> tuple[Dataset, Task]:
    """``trap`` is interacted with only by the task user (as its ground truth); so is ``after``."""
    items = {item: {"title": item.upper(), "genres": ["Drama"]} for item in ("a", "b", "c", "trap", "after")}
    events = [
        ("target", "a", 1), ("target", "b", 2), ("target", "trap", 3), ("target", "after", 4),
        ("other", "a", 1), ("other", "b", 2), ("other", "c", 3),
        ("third", "a", 1), ("third", "c", 2),
    ]  # fmt: skip
    interactions = [Interaction(user, item, float(day)) for user, item, day in events]
    users = {user: {} for user in ("target", "other", "third")}
    task = Task("t1", "target", ("trap", "c", "a"), ground_truth="trap")
    return Dataset(users, items, interactions, domain="movie", name="trap"), task


def test_leakage_trap_ground_truth_never_an_edge_nor_in_evidence(tmp_path: Path, isolated_cache: Path):
    from starrec.data.agentsociety import write_dataset

    dataset, task = _trap_dataset()
    data_dir = write_dataset(dataset, tmp_path / "trap")
    source = open_toolkit(data_dir, tasks=[task])
    graph = source.store
    assert graph.edge_count("target", "trap") == 0 and graph.edge_count("target", "after") == 0
    assert graph.edge_count("target", "a") == 1
    texts = [source.user_cf("target", 10).evidence]
    texts += [source.item_cf(item, 10).evidence for item in ("a", "b", "c")]
    texts += [source.user_cf(user, 10).evidence for user in ("other", "third")]
    for text in texts:
        assert "trap" not in text.lower() and "after" not in text.lower().replace("after it", "")
    assert [n.id for n in source.user_cf("target", 10).neighbours] == ["c"]
    # Without the task the trap is visible (the test would catch a no-op hide).
    unprotected = open_toolkit(data_dir)
    assert unprotected.store.edge_count("target", "trap") == 1


def test_open_toolkit_reuses_the_cached_graph(tmp_path: Path, isolated_cache: Path, monkeypatch) -> None:
    from starrec.data.agentsociety import write_dataset

    dataset, _ = _trap_dataset()
    data_dir = write_dataset(dataset, tmp_path / "plain")
    first = open_toolkit(data_dir)
    assert open_toolkit(data_dir) is first  # same process: same handle
    path = first.store.location
    first.close()
    monkeypatch.setattr(toolkit_module, "_OPEN", {})

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cached graph was rebuilt")

    monkeypatch.setattr(toolkit_module, "build_ladybug_graph", no_rebuild)
    monkeypatch.setattr(toolkit_module, "build_evidence", no_rebuild)
    monkeypatch.setattr("starrec.data.load_dataset", no_rebuild)  # reuse does not even read the data
    second = open_toolkit(data_dir)
    assert second.store.location == path and second.item_cf("a", 3).found
    assert list((isolated_cache / "graphs").glob("*.lbdb")) == [Path(path)]


def test_open_dataset_toolkit_caches_by_content(isolated_cache: Path) -> None:
    from starrec.tools import open_dataset_toolkit

    dataset, task = _trap_dataset()
    first = open_dataset_toolkit(dataset)
    assert open_dataset_toolkit(dataset) is first
    hidden = open_dataset_toolkit(dataset.hide_from([task]))
    assert hidden is not first and hidden.store.location != first.store.location
    assert first.store.edge_count("target", "trap") == 1 and hidden.store.edge_count("target", "trap") == 0
    assert hidden.user_cf("target", 5).queries[0].name == "user_evidence_get"


def test_writable_dataset_graph_writes_what_the_next_reader_sees(isolated_cache: Path) -> None:
    from starrec.contract.values import profile_from_weights
    from starrec.tools import open_dataset_toolkit
    from starrec.tools.toolkit import writable_dataset_graph

    dataset, _ = _trap_dataset()
    reader = open_dataset_toolkit(dataset)
    assert reader.store.get_value_profile("target")[0] is None
    with writable_dataset_graph(dataset) as writer:
        assert writer.location == reader.store.location
        writer.set_value_profiles([profile_from_weights("target", {"hedonism": 0.8})], by="test")
    fresh = open_dataset_toolkit(dataset)
    assert fresh is not reader
    with pytest.raises(GraphStoreError, match="was closed"):
        reader.store.get_value_profile("target")
    profile = fresh.store.get_value_profile("target")[0]
    assert profile is not None and profile.weights()["hedonism"] == 0.8
