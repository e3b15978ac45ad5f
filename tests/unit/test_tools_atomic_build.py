"""A killed or failed graph build never leaves a database that is reused."""

from __future__ import annotations

from pathlib import Path

import pytest
from mars_fixtures import build_movie_dataset

from starrec.tools import toolkit
from starrec.tools.ladybug_store import LadybugStore
from starrec.tools.store import GraphStoreError, GraphTables


@pytest.fixture(autouse=True)
def fresh_handles(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STARREC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(toolkit, "_OPEN", {})


def test_a_build_that_fails_midway_leaves_nothing_at_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(self: LadybugStore, tables: GraphTables) -> dict[str, float]:
        raise KeyboardInterrupt  # what SIGINT does mid-COPY

    monkeypatch.setattr(LadybugStore, "load", crash)
    target = tmp_path / "g.lbdb"
    with pytest.raises(KeyboardInterrupt):
        toolkit.build_ladybug_graph(build_movie_dataset(), target, fingerprint="f")
    assert not target.exists() and not toolkit.manifest_path(target).exists()


def test_the_manifest_is_written_last_and_marks_the_build_complete(tmp_path: Path) -> None:
    store, _ = toolkit.build_ladybug_graph(build_movie_dataset(), tmp_path / "g.lbdb", fingerprint="f")
    store.close()
    manifest = toolkit.read_manifest(tmp_path / "g.lbdb")
    assert toolkit.manifest_is_complete(manifest) and manifest["counts"]["interactions"] > 0
    assert not list(tmp_path.glob(".g.lbdb.building-*"))


def half_built(path: Path) -> None:
    """What a build killed between loading nodes and edges left behind before builds were atomic."""
    dataset = build_movie_dataset()
    tables = GraphTables.from_dataset(dataset)
    LadybugStore.create(path, GraphTables(tables.users, tables.items, [])).close()


def test_a_cached_store_without_a_complete_manifest_is_rebuilt(tmp_path: Path) -> None:
    dataset = build_movie_dataset()
    fingerprint = toolkit.in_memory_graph_fingerprint(dataset)
    path = tmp_path / "cache" / "graphs" / f"{dataset.name}-{fingerprint}.lbdb"
    path.parent.mkdir(parents=True)
    half_built(path)
    with pytest.warns(UserWarning, match="interrupted build"):
        source = toolkit.open_dataset_toolkit(dataset)
    assert source.store.counts()["interactions"] == len(dataset.interactions)
    assert toolkit.manifest_is_complete(toolkit.read_manifest(path))
    assert source.item_cf("m4", 5).neighbours


def test_a_chosen_path_without_a_complete_manifest_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "mine.lbdb"
    half_built(path)
    with pytest.raises(GraphStoreError, match=r"no complete manifest.*--overwrite"):
        toolkit.open_dataset_toolkit(build_movie_dataset(), path=path)


def test_staging_files_of_killed_builds_are_removed(tmp_path: Path) -> None:
    dead = tmp_path / ".g.lbdb.building-999999999"
    dead_wal = tmp_path / ".g.lbdb.building-999999999.wal"
    dead.write_bytes(b"half a database")
    dead_wal.write_bytes(b"wal")
    store, _ = toolkit.build_ladybug_graph(build_movie_dataset(), tmp_path / "g.lbdb", fingerprint="f")
    store.close()
    assert not dead.exists() and not dead_wal.exists()
