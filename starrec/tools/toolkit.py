"""One call from a data folder to a ready CF tool backend: :func:`open_toolkit`.

Graphs and their deterministic evidence are cached under ``<cache_dir>/graphs`` keyed by the
data folder (path, file sizes and times) and the tasks hidden from it, so every process after
the first reopens the same Ladybug file read-only instead of rebuilding it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from starrec.config import get_settings
from starrec.data.schema import Dataset, Task
from starrec.tools.evidence import EvidenceBuildConfig, EvidenceStore, Verbaliser, build_evidence
from starrec.tools.ladybug_store import DATABASE_SUFFIXES, LadybugStore, remove_database
from starrec.tools.store import GraphStoreError, GraphTables

GRAPH_FORMAT_VERSION = 2
"""Bump when the schema or the evidence format changes: cached graphs are then rebuilt.

2: ``User`` nodes carry a mined value profile (``values_profile``, ``values_top``, ``values_by``)."""

StoreName = Literal["ladybug", "neo4j"]

_OPEN: dict[str, EvidenceStore] = {}
_OPEN_LOCK = threading.Lock()


def tasks_fingerprint(tasks: Iterable[Task] | None) -> str:
    """Stable hash of what is hidden: (user, ground truth) of every task with an answer."""
    if tasks is None:
        return "none"
    hidden = sorted({(task.user_id, task.ground_truth) for task in tasks if task.ground_truth is not None})
    return hashlib.sha256(json.dumps(hidden).encode("utf-8")).hexdigest()[:16]


def data_dir_stat_fingerprint(data_dir: Path) -> str:
    """Hash of the data folder's location and its files' sizes and modification times."""
    entries: list[Any] = [str(data_dir.resolve())]
    for path in sorted(data_dir.rglob("*")):
        if path.is_file():
            stat = path.stat()
            entries.append([str(path.relative_to(data_dir)), stat.st_size, int(stat.st_mtime)])
    return hashlib.sha256(json.dumps(entries).encode("utf-8")).hexdigest()[:16]


def manifest_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".manifest.json")


def read_manifest(db_path: Path) -> dict[str, Any] | None:
    path = manifest_path(db_path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise GraphStoreError(f"corrupt graph manifest {path}: {error}; delete it to rebuild") from error


def write_manifest(db_path: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest atomically (temporary file, then rename): a reader sees the old or the new one."""
    target = manifest_path(db_path)
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    staging.write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    staging.replace(target)


@contextmanager
def build_lock(db_path: Path) -> Iterator[None]:
    """Serialise builds of one database path across processes."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with db_path.with_name(db_path.name + ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def training_view(dataset: Dataset, tasks: Iterable[Task] | None) -> Dataset:
    """What the graph may contain: the leakage-free view when tasks are given."""
    return dataset if tasks is None else dataset.hide_from(tasks)


def manifest_is_complete(manifest: dict[str, Any] | None) -> bool:
    """True for the manifest of a build that ran to the end (it is written last)."""
    if not manifest:
        return False
    return manifest.get("complete") is True and manifest.get("format") == GRAPH_FORMAT_VERSION


def remove_stale_builds(path: Path) -> None:
    """Delete the staging files of builds of ``path`` whose process no longer runs (killed builds)."""
    for staged in path.parent.glob(f".{path.name}.building-*"):
        pid = staged.name.rsplit("-", 1)[-1].split(".", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            staged.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def build_ladybug_graph(
    dataset: Dataset, path: Path, *, fingerprint: str = "", overwrite: bool = False
) -> tuple[LadybugStore, dict[str, float]]:
    """Create and bulk-load a Ladybug graph (caller passes the leakage-free view) + its manifest.

    Atomic: the database is built under a temporary name beside ``path``, closed, renamed into
    place, and only then is its manifest written, so a killed build never leaves a database that
    looks usable at ``path``. Returns the store opened read-write.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise GraphStoreError(f"Ladybug database {path} already exists; remove it or pass --overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(path)
    staging = path.with_name(f".{path.name}.building-{os.getpid()}")
    remove_database(staging)
    tables = GraphTables.from_dataset(dataset)
    store = LadybugStore.create(staging, tables)
    report, counts = store.load_report, store.counts()
    store.close()
    manifest_path(path).unlink(missing_ok=True)
    remove_database(path)
    for suffix in DATABASE_SUFFIXES:
        moved = staging.with_name(staging.name + suffix)
        if moved.exists():
            moved.replace(path.with_name(path.name + suffix))
    write_manifest(
        path,
        {
            "format": GRAPH_FORMAT_VERSION,
            "fingerprint": fingerprint,
            "dataset": dataset.name,
            "domain": dataset.domain,
            "counts": counts,
            "load": report,
            "evidence": None,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "complete": True,
        },
    )
    return LadybugStore(path), report


def graph_fingerprint(data_dir: Path, tasks: Iterable[Task] | None) -> str:
    """What a graph was built from: format version, data folder and hidden tasks."""
    return f"v{GRAPH_FORMAT_VERSION}-{data_dir_stat_fingerprint(data_dir)}-{tasks_fingerprint(tasks)}"


def default_graph_path(data_dir: Path, tasks: Iterable[Task] | None) -> tuple[Path, str]:
    fingerprint = graph_fingerprint(data_dir, tasks)
    name = data_dir.resolve().name or "data"
    return get_settings().cache_dir / "graphs" / f"{name}-{fingerprint}.lbdb", fingerprint


def open_toolkit(
    data_dir: str | Path,
    tasks: Iterable[Task] | None = None,
    store: StoreName = "ladybug",
    path: str | Path | None = None,
    build_evidence: bool = True,
    *,
    verbaliser: Verbaliser | None = None,
    config: EvidenceBuildConfig | None = None,
    show_progress: bool = False,
) -> EvidenceStore:
    """Build or reuse the graph (and its evidence) for ``data_dir`` and return the CF backend.

    ``tasks``: their ground truth and everything after it is left out of the graph
    (:meth:`Dataset.hide_from`). ``store="ladybug"`` caches one file per (data, tasks) under
    ``<cache_dir>/graphs`` unless ``path`` is given; ``store="neo4j"`` uses the ``NEO4J_*``
    settings and loads the graph only when the server holds none. Handles are shared within a
    process: calling this twice returns the same object.
    """
    from starrec.data import load_dataset

    data_dir = Path(data_dir)
    tasks = list(tasks) if tasks is not None else None
    if store == "neo4j":
        return _open_neo4j(data_dir, tasks, build_evidence, verbaliser, config, show_progress)
    if store != "ladybug":
        raise ValueError(f"unknown store {store!r}; choose ladybug or neo4j")
    default_path, fingerprint = default_graph_path(data_dir, tasks)
    db_path = Path(path) if path is not None else default_path
    return _open_ladybug(
        db_path,
        fingerprint,
        lambda: training_view(load_dataset(data_dir), tasks),
        path is None,
        build_evidence,
        verbaliser,
        config,
        show_progress,
    )


def in_memory_graph_fingerprint(dataset: Dataset) -> str:
    """Content hash of an in-memory dataset's interactions and item ids (plus the format version)."""
    digest = hashlib.sha256(f"v{GRAPH_FORMAT_VERSION}\n{dataset.domain}\n".encode())
    for event in dataset.interactions:
        digest.update(f"{event.user_id}\t{event.item_id}\t{event.timestamp}\t{event.stars}\n".encode())
    for item in sorted(dataset.items):
        digest.update(f"{item}\n".encode())
    return f"v{GRAPH_FORMAT_VERSION}-mem-{digest.hexdigest()[:16]}"


def open_dataset_toolkit(
    dataset: Dataset,
    path: str | Path | None = None,
    build_evidence: bool = True,
    *,
    verbaliser: Verbaliser | None = None,
    config: EvidenceBuildConfig | None = None,
    show_progress: bool = False,
) -> EvidenceStore:
    """:func:`open_toolkit` for a dataset already in memory (e.g. ``Recommender.fit(train)``).

    The caller passes the leakage-free view itself; it is cached by content under
    ``<cache_dir>/graphs/<name>-v<format>-mem-<hash>.lbdb`` and shared within the process.
    """
    fingerprint = in_memory_graph_fingerprint(dataset)
    default_path = get_settings().cache_dir / "graphs" / f"{dataset.name or 'data'}-{fingerprint}.lbdb"
    db_path = Path(path) if path is not None else default_path
    return _open_ladybug(
        db_path, fingerprint, lambda: dataset, path is None, build_evidence, verbaliser, config, show_progress
    )


@contextmanager
def writable_dataset_graph(dataset: Dataset) -> Iterator[LadybugStore]:
    """A writer on the cached graph that :func:`open_dataset_toolkit` serves for ``dataset``.

    For offline writes that readers must then see, such as mined value profiles. Ladybug admits one
    writer or many readers, so the process's shared read-only handle is closed first (a handle taken
    before this call then raises "was closed") and the next :func:`open_dataset_toolkit` opens a
    fresh one. Do not open the same view's toolkit inside the block: it waits for this writer.
    """
    handle = open_dataset_toolkit(dataset)
    path = Path(handle.store.location)
    with _OPEN_LOCK, build_lock(path):
        _OPEN.pop(f"ladybug:{path.resolve()}", None)
        handle.store.close()
        writer = LadybugStore(path)
        try:
            yield writer
        finally:
            writer.close()


def _open_ladybug(
    db_path: Path,
    fingerprint: str,
    graph_view: Callable[[], Dataset],
    cached: bool,
    build_evidence: bool,
    verbaliser: Verbaliser | None,
    config: EvidenceBuildConfig | None,
    show_progress: bool,
) -> EvidenceStore:
    """Reuse or build (graph, then evidence) one Ladybug file; one handle per file per process.

    A database without a complete manifest (an interrupted build) is never reused: in the cache
    (``cached``) it is rebuilt; at a path the caller chose, opening stops with how to fix it.
    """
    key = f"ladybug:{db_path.resolve()}"
    with _OPEN_LOCK:
        if key in _OPEN:
            return _OPEN[key]
        with build_lock(db_path):
            manifest = read_manifest(db_path)
            if db_path.exists() and not manifest_is_complete(manifest):
                if not cached:
                    raise GraphStoreError(
                        f"Ladybug database {db_path} has no complete manifest (its build was interrupted); "
                        f"rebuild it with `starrec graph build --path {db_path} --overwrite` or delete it"
                    )
                warnings.warn(
                    f"{db_path}: interrupted build (no complete manifest); rebuilding it", stacklevel=3
                )
                remove_database(db_path)
                manifest_path(db_path).unlink(missing_ok=True)
                manifest = None
            if (
                db_path.exists()
                and manifest is not None
                and manifest.get("fingerprint") not in ("", fingerprint)
            ):
                raise GraphStoreError(
                    f"Ladybug database {db_path} was built from other data or tasks "
                    f"({manifest.get('fingerprint')} != {fingerprint}); use another path or rebuild it"
                )
            view: Dataset | None = None
            if not db_path.exists():
                view = graph_view()
                writer, _ = build_ladybug_graph(view, db_path, fingerprint=fingerprint)
                writer.close()
                manifest = read_manifest(db_path)
            # Reuse reads the domain from the manifest: no dataset load on the fast path.
            noun = (manifest or {}).get("domain") or (view or graph_view()).domain
            if build_evidence and not (manifest or {}).get("evidence"):
                _build_and_record_evidence(db_path, noun, verbaliser, config, show_progress)
        handle = EvidenceStore(LadybugStore(db_path, read_only=True), noun=noun)
        _OPEN[key] = handle
        return handle


def _build_and_record_evidence(
    db_path: Path,
    noun: str,
    verbaliser: Verbaliser | None,
    config: EvidenceBuildConfig | None,
    show_progress: bool,
) -> None:
    config = config or EvidenceBuildConfig()
    config.noun = noun
    with LadybugStore(db_path) as writer:
        report = build_evidence(writer, config, verbaliser, show_progress=show_progress)
    manifest = read_manifest(db_path) or {"format": GRAPH_FORMAT_VERSION, "fingerprint": ""}
    manifest["evidence"] = {"verbaliser": report.verbaliser, "k": config.k, "anchors": report.anchors}
    write_manifest(db_path, manifest)


def _open_neo4j(
    data_dir: Path,
    tasks: list[Task] | None,
    build_evidence_flag: bool,
    verbaliser: Verbaliser | None,
    config: EvidenceBuildConfig | None,
    show_progress: bool,
) -> EvidenceStore:
    from starrec.data import load_dataset
    from starrec.tools.neo4j_store import Neo4jStore

    settings = get_settings()
    key = f"neo4j:{settings.neo4j_uri}:{settings.neo4j_database}"
    with _OPEN_LOCK:
        if key in _OPEN:
            return _OPEN[key]
        dataset = load_dataset(data_dir)
        fingerprint = graph_fingerprint(data_dir, tasks)
        graph = Neo4jStore.from_settings(settings)
        if graph.counts()["interactions"] == 0:
            graph.load(GraphTables.from_dataset(training_view(dataset, tasks)), show_progress=show_progress)
            graph.set_fingerprint(fingerprint)
        elif (found := graph.fingerprint()) != fingerprint:
            graph.close()
            raise GraphStoreError(
                f"the graph at {graph.location} was built from other data or tasks "
                f"({found} != {fingerprint}); "
                "rebuild it with `starrec graph build --store neo4j --overwrite`"
            )
        if build_evidence_flag and graph.ids("item", missing_evidence_only=True):
            config = config or EvidenceBuildConfig()
            config.noun = dataset.domain
            build_evidence(graph, config, verbaliser, show_progress=show_progress)
        handle = EvidenceStore(graph, noun=dataset.domain)
        _OPEN[key] = handle
        return handle
