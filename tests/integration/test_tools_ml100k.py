"""MovieLens-100k: Ladybug == scipy, the CLI JSON contract, and a MARS-style tool call."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from starrec.cli import app
from starrec.data.schema import Dataset, Task
from starrec.data.tasks import write_tasks
from starrec.tools import toolkit as toolkit_module
from starrec.tools.ladybug_store import LadybugStore
from starrec.tools.oracle import SparseCFIndex
from starrec.tools.store import GraphTables

runner = CliRunner()


@pytest.fixture(scope="module")
def ml_graph(ml100k: Dataset, tmp_path_factory: pytest.TempPathFactory):
    tables = GraphTables.from_dataset(ml100k)
    store = LadybugStore.create(tmp_path_factory.mktemp("ml") / "ml.lbdb", tables)
    yield store, SparseCFIndex.from_tables(tables)
    store.close()


def _anchors(index: SparseCFIndex, ids: list[str], popular: int, sampled: int, by_items: bool) -> list[str]:
    matrix = index.by_item if by_items else index.by_user.T.tocsc()
    degree = [int(matrix.indptr[i + 1] - matrix.indptr[i]) for i in range(len(ids))]
    ranked = [ids[i] for i in sorted(range(len(ids)), key=lambda i: (-degree[i], ids[i]))]
    return ranked[:popular] + random.Random(0).sample(ranked[popular:], sampled)


def test_ladybug_equals_scipy_item_cf(ml_graph) -> None:
    store, oracle = ml_graph
    for item in _anchors(oracle, oracle.items, 10, 25, by_items=True):
        assert store.item_cf(item, 20)[0] == oracle.item_cf(item, 20), item


def test_ladybug_equals_scipy_user_cf(ml_graph) -> None:
    store, oracle = ml_graph
    for user in _anchors(oracle, oracle.users, 1, 5, by_items=False):
        assert store.user_cf(user, 20)[0] == oracle.user_cf(user, 20), user


@pytest.mark.slow
def test_ladybug_equals_scipy_on_every_anchor(ml_graph) -> None:
    store, oracle = ml_graph
    assert all(store.item_cf(item, 20)[0] == oracle.item_cf(item, 20) for item in oracle.items)
    assert all(store.user_cf(user, 20)[0] == oracle.user_cf(user, 20) for user in oracle.users)


def _invoke(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_cli_build_with_tasks_and_item_cf_json_contract(
    ml100k_dir: Path, ml100k: Dataset, tmp_path: Path
) -> None:
    user = "196"
    history = ml100k.history(user)
    ground_truth = history[10].item_id
    negatives = [item for item in sorted(ml100k.items) if item != ground_truth][:19]
    task = Task("t0", user, (ground_truth, *negatives), ground_truth=ground_truth)
    tasks_dir = write_tasks([task], tmp_path / "tasks")
    db = tmp_path / "g.lbdb"
    _invoke("graph", "build", "--data", str(ml100k_dir), "--tasks", str(tasks_dir), "--store", "ladybug",
            "--path", str(db))  # fmt: skip
    with LadybugStore(db, read_only=True) as store:
        assert store.edge_count(user, ground_truth) == 0
        later = [event.item_id for event in history[10:]]
        assert all(store.edge_count(user, item) == 0 for item in later)
        assert store.edge_count(user, history[0].item_id) == 1

    payload = json.loads(_invoke("cypher", "item-cf", "50", "--store", "ladybug", "--path", str(db),
                                 "--k", "7", "--json"))  # fmt: skip
    assert set(payload) == {"query", "params", "rows", "evidence"}
    assert payload["params"] == {"id": "50", "k": 7} and payload["evidence"] is None
    rows = [(row["item"], row["shared"]) for row in payload["rows"]]
    assert rows == sorted(rows, key=lambda row: (-row[1], row[0])) and len(rows) == 7
    hidden = ml100k.hide_from([task])
    assert rows == SparseCFIndex.from_tables(GraphTables.from_dataset(hidden)).item_cf("50", 7)

    _invoke("evidence", "build", "--data", str(ml100k_dir), "--tasks", str(tasks_dir), "--path", str(db),
            "--items", "50", "--users", user, "--json")  # fmt: skip
    payload = json.loads(_invoke("cypher", "item-cf", "50", "--path", str(db), "--json"))
    assert payload["evidence"].startswith('Item-CF for movie 50 "Star Wars"')
    user_payload = json.loads(_invoke("cypher", "user-cf", user, "--path", str(db), "--k", "5", "--json"))
    assert user_payload["params"] == {"id": user, "users": 20, "k": 5}
    assert "User-CF for user 196" in user_payload["evidence"]

    candidates = "50,181,100,1"
    scored = json.loads(_invoke("cypher", "candidate-cf", user, "--candidates", candidates, "--path", str(db),
                                "--json"))  # fmt: skip
    assert [trace["name"] for trace in scored["queries"]][:2] == ["user_history", "candidate_item_cf"]
    assert all(trace["engine"] == "cypher" for trace in scored["queries"])
    assert sorted(scored["order"]) == sorted(candidates.split(","))
    assert ground_truth not in scored["anchors"]
    missing = runner.invoke(
        app, ["cypher", "item-cf", "50", "--path", str(tmp_path / "absent.lbdb"), "--json"]
    )
    assert missing.exit_code == 1 and "absent.lbdb does not exist" in missing.output
    write = runner.invoke(app, ["cypher", "run", "MATCH (i:Item) DETACH DELETE i", "--path", str(db)])
    assert write.exit_code == 1 and "read-only" in write.output
    read = json.loads(_invoke("cypher", "run", "MATCH (i:Item {id: $id}) RETURN i.title AS title",
                              "--param", "id=50", "--path", str(db), "--json"))  # fmt: skip
    assert read["rows"] == [{"title": "Star Wars"}]


def test_mars_tool_call_returns_stored_evidence(ml100k_dir: Path, monkeypatch, tmp_path: Path) -> None:
    from starrec.tools import make_cf_tools, open_toolkit

    monkeypatch.setenv("STARREC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(toolkit_module, "_OPEN", {})
    source = open_toolkit(ml100k_dir)
    item_cf, user_cf, _ = make_cf_tools(source)
    message = item_cf.invoke(
        {"type": "tool_call", "id": "c1", "name": "item_cf", "args": {"item_id": "1", "k": 5}}
    )
    result = message.artifact
    assert result.found and message.content == result.evidence
    assert [query.name for query in result.queries] == ["item_evidence_get", "item_cf"]
    assert result.queries[0].row_count == 1 and source.live_fallbacks == 0
    assert [n.id for n in result.neighbours] == ["50", "181", "100", "121", "117"]
    assert "not in graph" in user_cf.invoke({"user_id": "no-such-user"})
