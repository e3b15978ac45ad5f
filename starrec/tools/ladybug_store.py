"""Ladybug (embedded Kuzu fork, one file on disk): the default graph store.

Built once with ``COPY`` from in-process Arrow tables (500k edges in about a second), then
reopened without reloading. Ladybug locks the file per process: read-only handles may be
shared by several processes, a writer excludes everyone else.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from starrec.tools.queries import load_statements
from starrec.tools.store import GraphStore, GraphStoreError, GraphTables

DEFAULT_BUFFER_POOL_BYTES = 1 << 30
"""1 GiB: Ladybug's default reserves most of the machine's memory."""


def _arrow_tables(tables: GraphTables) -> dict[str, Any]:
    import pyarrow as pa

    users = pa.table(
        {
            "id": pa.array(tables.users, pa.string()),
            "evidence": pa.nulls(len(tables.users), pa.string()),
            "evidence_neighbours": pa.nulls(len(tables.users), pa.string()),
            "evidence_k": pa.nulls(len(tables.users), pa.int64()),
            "evidence_by": pa.nulls(len(tables.users), pa.string()),
            "values_profile": pa.nulls(len(tables.users), pa.string()),
            "values_top": pa.nulls(len(tables.users), pa.list_(pa.string())),
            "values_by": pa.nulls(len(tables.users), pa.string()),
        }
    )
    count = len(tables.items)
    items = pa.table(
        {
            "id": pa.array([row.id for row in tables.items], pa.string()),
            "title": pa.array([row.title for row in tables.items], pa.string()),
            "facets": pa.array([list(row.facets) for row in tables.items], pa.list_(pa.string())),
            "evidence": pa.nulls(count, pa.string()),
            "evidence_neighbours": pa.nulls(count, pa.string()),
            "evidence_k": pa.nulls(count, pa.int64()),
            "evidence_by": pa.nulls(count, pa.string()),
        }
    )
    edges = pa.table(
        {
            "from": pa.array([edge.user for edge in tables.edges], pa.string()),
            "to": pa.array([edge.item for edge in tables.edges], pa.string()),
            "ts": pa.array([edge.ts for edge in tables.edges], pa.float64()),
            "rating": pa.array([edge.rating for edge in tables.edges], pa.float64()),
        }
    )
    return {"users": users, "items": items, "edges": edges}


class LadybugStore(GraphStore):
    """A graph in one Ladybug database file."""

    backend = "ladybug"

    def __init__(self, path: str | Path, *, read_only: bool = False, create: bool = False) -> None:
        """Open ``path``; it must exist unless ``create`` (then it must not)."""
        import ladybug

        self.path = Path(path)
        if create and self.path.exists():
            raise GraphStoreError(
                f"Ladybug database {self.path} already exists; remove it or pass --overwrite"
            )
        if not create and not self.path.exists():
            raise GraphStoreError(
                f"Ladybug database {self.path} does not exist; build it with "
                f"`starrec graph build --data DIR --store ladybug --path {self.path}`"
            )
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = ladybug.Database(
                str(self.path), read_only=read_only, buffer_pool_size=DEFAULT_BUFFER_POOL_BYTES
            )
            self._conn = ladybug.Connection(self._db)
        except RuntimeError as error:
            hint = " (another process holds it open for writing)" if "lock" in str(error).lower() else ""
            raise GraphStoreError(f"cannot open Ladybug database {self.path}{hint}: {error}") from error
        self.read_only = read_only
        self.load_report: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def location(self) -> str:
        return str(self.path)

    @classmethod
    def create(cls, path: str | Path, tables: GraphTables, *, overwrite: bool = False) -> LadybugStore:
        """Create a new database at ``path`` and bulk-load ``tables`` into it."""
        path = Path(path)
        if overwrite:
            remove_database(path)
        store = cls(path, create=True)
        try:
            store.load(tables)
        except Exception:
            store.close()
            remove_database(path)
            raise
        return store

    def _execute(self, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        with self._lock:
            if self._conn is None:
                raise GraphStoreError(
                    f"Ladybug database {self.path} was closed (e.g. by writable_dataset_graph); open it again"
                )
            try:
                result = self._conn.execute(query, params)
            except RuntimeError as error:
                raise GraphStoreError(
                    f"Ladybug query failed on {self.path}: {error}\nquery: {query}"
                ) from error
            if isinstance(result, list):  # Ladybug ran several statements and returns one result each
                for part in result:
                    part.close()
                raise GraphStoreError(
                    f"Ladybug query on {self.path} held {len(result)} statements; send one per call\n"
                    f"query: {query}"
                )
            columns = result.get_column_names()
            rows = [dict(zip(columns, values, strict=True)) for values in result.get_all()]
            result.close()
            return rows

    def _read(self, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        return self._execute(query, params)

    def _write(self, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        if self.read_only:
            raise GraphStoreError(f"Ladybug database {self.path} is open read-only; cannot write")
        return self._execute(query, params)

    def load(self, tables: GraphTables) -> dict[str, float]:
        started = time.perf_counter()
        for statement in load_statements("ladybug_schema"):
            self._execute(statement, {})
        arrow = _arrow_tables(tables)
        copy_started = time.perf_counter()
        with self._lock:
            for statement in load_statements("ladybug_copy"):
                self._copy(statement, arrow)
        finished = time.perf_counter()
        self.load_report = {
            "users": len(tables.users),
            "items": len(tables.items),
            "interactions": len(tables.edges),
            "copy_seconds": finished - copy_started,
            "seconds": finished - started,
        }
        return self.load_report

    def _copy(self, statement: str, arrow: dict[str, Any]) -> None:
        # COPY ... FROM <name> scans the caller's local variable of that name.
        users, items, edges = arrow["users"], arrow["items"], arrow["edges"]  # noqa: F841
        try:
            self._conn.execute(statement)
        except RuntimeError as error:
            raise GraphStoreError(
                f"Ladybug bulk load into {self.path} failed at `{statement}`: {error}"
            ) from error

    def close(self) -> None:
        with self._lock:
            if getattr(self, "_conn", None) is not None:
                self._conn.close()
                self._conn = None
            if getattr(self, "_db", None) is not None:
                self._db.close()
                self._db = None


DATABASE_SUFFIXES = ("", ".wal", ".shadow")
"""The files one Ladybug database consists of: the database itself, its WAL and shadow pages."""


def remove_database(path: Path) -> None:
    """Delete a Ladybug database file and its write-ahead log, if present."""
    for candidate in (path.with_name(path.name + suffix) for suffix in DATABASE_SUFFIXES):
        if candidate.is_dir():
            raise GraphStoreError(f"{candidate} is a directory, not a Ladybug database file")
        candidate.unlink(missing_ok=True)
