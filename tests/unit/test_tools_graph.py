"""Ladybug store against the scipy oracle, injection, unknown ids and bad paths/URIs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from starrec.data.schema import Dataset, Interaction
from starrec.tools.adhoc import AdHocQueryError
from starrec.tools.ladybug_store import LadybugStore
from starrec.tools.oracle import SparseCFIndex
from starrec.tools.store import GraphStoreError, GraphTables, StoredEvidence
from starrec.tools.synthetic import power_law_dataset

NASTY_IDS = [
    "it's",
    'say "hi"',
    "{brace}",
    "}) MATCH (n) DETACH DELETE n //",
    "back\\slash",
    "$id",
    "MERGE",
    "ünï cödé",
    "multi\nline",
]


@pytest.fixture(scope="module")
def synthetic() -> Dataset:
    return power_law_dataset(80, 120, 1500, seed=3)


@pytest.fixture(scope="module")
def synthetic_store(tmp_path_factory: pytest.TempPathFactory, synthetic: Dataset):
    store = LadybugStore.create(tmp_path_factory.mktemp("lb") / "g.lbdb", GraphTables.from_dataset(synthetic))
    yield store
    store.close()


def test_ladybug_equals_oracle_on_every_anchor(synthetic: Dataset, synthetic_store: LadybugStore) -> None:
    oracle = SparseCFIndex.from_tables(GraphTables.from_dataset(synthetic))
    for item in oracle.items:
        assert synthetic_store.item_cf(item, 7)[0] == oracle.item_cf(item, 7), item
    for user in oracle.users:
        assert synthetic_store.user_cf(user, 7, 5)[0] == oracle.user_cf(user, 7, 5), user


def test_rows_ordered_by_shared_then_id(synthetic_store: LadybugStore) -> None:
    rows, trace = synthetic_store.item_cf("i0", 30)
    assert rows == sorted(rows, key=lambda row: (-row[1], row[0]))
    assert trace.name == "item_cf" and trace.params == {"id": "i0", "k": 30} and trace.row_count == len(rows)


def test_counts_match_tables(synthetic: Dataset, synthetic_store: LadybugStore) -> None:
    tables = GraphTables.from_dataset(synthetic)
    assert synthetic_store.counts() == {
        "users": len(tables.users), "items": len(tables.items), "interactions": len(tables.edges)
    }  # fmt: skip


def _nasty_dataset() -> Dataset:
    items = {item: {"title": f"T {item}", "genres": ["Drama"]} for item in NASTY_IDS}
    users = {f"user {quote}": {} for quote in ("'a'", '"b"', "{c}")}
    interactions = [
        Interaction(user, item, float(index))
        for index, (user, item) in enumerate((u, i) for u in users for i in NASTY_IDS)
    ]
    return Dataset(users, items, interactions, domain="movie")


def test_injection_ids_round_trip_as_data(tmp_path: Path) -> None:
    dataset = _nasty_dataset()
    with LadybugStore.create(tmp_path / "g.lbdb", GraphTables.from_dataset(dataset)) as store:
        assert sorted(store.ids("item")) == sorted(NASTY_IDS)
        for item in NASTY_IDS:
            rows, _ = store.item_cf(item, 20)
            assert sorted(other for other, _ in rows) == sorted(set(NASTY_IDS) - {item})
            assert all(shared == 3 for _, shared in rows)
        text = "evidence with 'quotes' and {braces}"
        record = StoredEvidence(NASTY_IDS[3], "", text, [(NASTY_IDS[0], "t", 3)], 5)
        store.set_evidence("item", [record])
        stored, trace = store.get_evidence("item", NASTY_IDS[3])
        assert stored is not None and stored.evidence == record.evidence
        assert stored.neighbours == [(NASTY_IDS[0], "t", 3)]
        assert trace.params == {"id": NASTY_IDS[3]}
        assert store.counts()["interactions"] == len(dataset.interactions)  # nothing was deleted


def test_unknown_ids_give_empty_answers(synthetic_store: LadybugStore) -> None:
    assert synthetic_store.item_cf("no such item", 5)[0] == []
    assert synthetic_store.user_cf("no such user", 5)[0] == []
    assert synthetic_store.get_evidence("item", "no such item")[0] is None


def test_missing_path_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "absent.lbdb"
    with pytest.raises(GraphStoreError, match=str(missing)):
        LadybugStore(missing)


def test_existing_path_is_not_overwritten_silently(tmp_path: Path, synthetic: Dataset) -> None:
    path = tmp_path / "g.lbdb"
    LadybugStore.create(path, GraphTables.from_dataset(synthetic)).close()
    with pytest.raises(GraphStoreError, match="already exists"):
        LadybugStore.create(path, GraphTables.from_dataset(synthetic))
    LadybugStore.create(path, GraphTables.from_dataset(synthetic), overwrite=True).close()


def test_locked_database_names_path(tmp_path: Path, synthetic: Dataset) -> None:
    path = tmp_path / "g.lbdb"
    LadybugStore.create(path, GraphTables.from_dataset(synthetic)).close()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import ladybug,sys; d=ladybug.Database({str(path)!r}); print('ok', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        with pytest.raises(GraphStoreError, match=rf"{path}.*another process"):
            LadybugStore(path)
    finally:
        holder.communicate("", timeout=30)


def test_read_only_store_refuses_writes(tmp_path: Path, synthetic: Dataset) -> None:
    path = tmp_path / "g.lbdb"
    LadybugStore.create(path, GraphTables.from_dataset(synthetic)).close()
    with LadybugStore(path, read_only=True) as store:
        with pytest.raises(GraphStoreError, match="read-only"):
            store.set_evidence("item", [StoredEvidence("i0", "", "x", [], 1)])
        with pytest.raises(PermissionError):
            store.run_ad_hoc("MATCH (i:Item) SET i.title = 'x' RETURN i.id", {})
        with pytest.raises(PermissionError, match="CHECKPOINT"):
            store.run_ad_hoc("CHECKPOINT", {})
        with pytest.raises(AdHocQueryError, match="one statement per call"):
            store.run_ad_hoc("MATCH (i:Item) RETURN i.id; MATCH (u:User) RETURN u.id", {})
        # Past the guard, the engine itself refuses writes and several statements.
        with pytest.raises(GraphStoreError, match="read-only"):
            store._read_only("MATCH (i:Item) SET i.title = 'x' RETURN i.id", {})
        with pytest.raises(GraphStoreError, match="2 statements; send one per call"):
            store._read_only("MATCH (i:Item) RETURN i.id; MATCH (u:User) RETURN u.id", {})
        rows, _ = store.run_ad_hoc("MATCH (i:Item {id: $id}) RETURN i.id AS id;", {"id": "i0"})
        assert rows == [{"id": "i0"}]


def test_cypher_run_opens_ladybug_read_only_and_refuses_maintenance(
    tmp_path: Path, synthetic: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from starrec.cli import app
    from starrec.tools import ladybug_store

    path = tmp_path / "g.lbdb"
    LadybugStore.create(path, GraphTables.from_dataset(synthetic)).close()
    opened: list[bool] = []

    class Recording(LadybugStore):
        def __init__(self, path: Path, *, read_only: bool = False, create: bool = False) -> None:
            opened.append(read_only)
            super().__init__(path, read_only=read_only, create=create)

    monkeypatch.setattr(ladybug_store, "LadybugStore", Recording)
    runner = CliRunner()
    for query in ("CHECKPOINT", "MATCH (i:Item) RETURN i.id; MATCH (u:User) RETURN u.id"):
        result = runner.invoke(app, ["cypher", "run", query, "--path", str(path)])
        assert result.exit_code == 1 and result.stderr.startswith("error: "), result.output
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    result = runner.invoke(app, ["cypher", "run", "MATCH (i:Item {id: 'i0'}) RETURN i.id AS id", "--path",
                                 str(path), "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert opened == [True]


def test_unreachable_neo4j_names_uri() -> None:
    from starrec.tools.neo4j_store import Neo4jStore

    uri = "bolt://127.0.0.1:9"
    with pytest.raises(GraphStoreError, match=uri):
        Neo4jStore(uri, "neo4j", "secret", connection_timeout=2, max_transaction_retry_time=1)


def test_falkordb_batches_stay_under_the_payload_limit() -> None:
    import json

    from starrec.tools.neo4j_store import FALKORDB_MAX_PARAM_BYTES, batches_within

    rows = [{"id": f"item-{index}", "title": "x" * 150} for index in range(100)]
    batches = list(batches_within(rows, 40, FALKORDB_MAX_PARAM_BYTES))
    assert [row for batch in batches for row in batch] == rows
    assert all(len(batch) <= 40 for batch in batches)
    assert all(len(json.dumps(batch).encode()) <= FALKORDB_MAX_PARAM_BYTES + 200 for batch in batches)


def test_falkordb_dialect_refuses_strings_it_would_corrupt() -> None:
    from starrec.tools.neo4j_store import falkordb_unsafe_value

    assert falkordb_unsafe_value({"rows": [{"id": "ok"}, {"id": "Schindler's List"}]}) == "Schindler's List"
    assert falkordb_unsafe_value({"id": "back\\slash"}) == "back\\slash"
    assert falkordb_unsafe_value({"rows": [{"id": '"}{ MATCH'}], "k": 3}) is None
