"""Neo4j backend over Bolt with the official driver (also FalkorDB's Bolt listener, for smoke tests).

Loading is batched ``UNWIND $rows ... MERGE``; every query runs in a managed transaction
(``execute_read`` / ``execute_write``), which the driver retries on transient errors for up to
``max_transaction_retry_time``. ``dialect="falkordb"`` swaps the constraint DDL for plain indexes
and keeps every parameter payload under FalkorDB's ~4 KiB limit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

from starrec.tools.queries import load_query, load_statements
from starrec.tools.store import GraphStore, GraphStoreError, GraphTables

if TYPE_CHECKING:
    from starrec.config import Settings

Dialect = Literal["neo4j", "falkordb"]
FALKORDB_MAX_ROWS = 40
FALKORDB_MAX_PARAM_BYTES = 3_000


def batches_within(
    rows: Sequence[dict[str, Any]], max_rows: int, max_bytes: int | None
) -> Iterator[list[dict]]:
    """Consecutive batches of at most ``max_rows`` rows and (if set) ``max_bytes`` of JSON."""
    batch: list[dict[str, Any]] = []
    size = 0
    for row in rows:
        row_bytes = len(json.dumps(row, ensure_ascii=False).encode("utf-8")) if max_bytes else 0
        if batch and (len(batch) >= max_rows or (max_bytes and size + row_bytes > max_bytes)):
            yield batch
            batch, size = [], 0
        batch.append(row)
        size += row_bytes
    if batch:
        yield batch


FALKORDB_UNSAFE_CHARACTERS = ("'", "\\")


def falkordb_unsafe_value(value: Any) -> str | None:
    """A string inside ``value`` that FalkorDB's Bolt layer would corrupt or choke on, if any.

    FalkorDB 4.16 splices Bolt parameters into the query text: a single quote fails with a bare
    ``UnknownError`` and backslash escapes are decoded.
    """
    if isinstance(value, str):
        return value if any(char in value for char in FALKORDB_UNSAFE_CHARACTERS) else None
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list | tuple):
        for entry in value:
            found = falkordb_unsafe_value(entry)
            if found is not None:
                return found
    return None


class Neo4jStore(GraphStore):
    """A graph on a Bolt server (Neo4j 5; FalkorDB 4.16 with ``dialect="falkordb"``)."""

    backend = "neo4j"

    def __init__(
        self,
        uri: str,
        user: str,
        password: str,
        database: str | None = None,
        *,
        dialect: Dialect = "neo4j",
        batch_size: int | None = None,
        connection_timeout: float = 5.0,
        max_transaction_retry_time: float = 15.0,
    ) -> None:
        from neo4j.exceptions import AuthError, DriverError, Neo4jError, ServiceUnavailable

        import neo4j

        self.uri = uri
        self.database = database
        self.dialect = dialect
        self.write_batch_size = batch_size or (FALKORDB_MAX_ROWS if dialect == "falkordb" else 1000)
        self.read_batch_size = self.write_batch_size
        self.max_param_bytes = FALKORDB_MAX_PARAM_BYTES if dialect == "falkordb" else None
        try:
            self._driver = neo4j.GraphDatabase.driver(
                uri,
                auth=(user, password),
                connection_timeout=connection_timeout,
                max_transaction_retry_time=max_transaction_retry_time,
            )
            self._driver.verify_connectivity()
        except (ServiceUnavailable, AuthError, DriverError, Neo4jError, OSError, ValueError) as error:
            raise GraphStoreError(
                f"cannot reach Neo4j at {uri} as user {user!r}: {error}. Start the server "
                f"(neo4j/docker-compose.yml) or set NEO4J_URI / NEO4J_USER / NEO4J_PASSWORD"
            ) from error

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> Neo4jStore:
        return cls(
            settings.neo4j_uri,
            settings.neo4j_user,
            settings.neo4j_password,
            settings.neo4j_database,
            **options,
        )

    @property
    def location(self) -> str:
        return self.uri if self.database is None else f"{self.uri} (database {self.database})"

    def _session(self):
        return self._driver.session(database=self.database)

    def _transact(self, query: str, params: dict[str, Any], write: bool) -> list[dict[str, Any]]:
        from neo4j.exceptions import DriverError, Neo4jError

        if self.dialect == "falkordb" and (unsafe := falkordb_unsafe_value(params)) is not None:
            raise GraphStoreError(
                f"FalkorDB at {self.location} cannot take the string parameter {unsafe!r}: its Bolt layer "
                "splices parameters into the query text, so single quotes and backslashes break (use Neo4j)"
            )

        def work(tx) -> list[dict[str, Any]]:
            return [record.data() for record in tx.run(query, params)]

        try:
            with self._session() as session:
                return session.execute_write(work) if write else session.execute_read(work)
        except (Neo4jError, DriverError) as error:
            raise GraphStoreError(f"query failed on {self.location}: {error}\nquery: {query}") from error

    def _read(self, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        return self._transact(query, params, write=False)

    def _write(self, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        return self._transact(query, params, write=True)

    def batches(self, rows: Sequence[dict[str, Any]], max_rows: int) -> Iterator[list[dict[str, Any]]]:
        return batches_within(rows, max_rows, self.max_param_bytes)

    def create_schema(self) -> None:
        for statement in load_statements(f"{self.dialect}_schema"):
            self._write(statement, {})

    def clear(self) -> None:
        self.run("neo4j_clear", {}, write=True)

    def load(self, tables: GraphTables, *, show_progress: bool = False) -> dict[str, float]:
        """Schema, then users, items and edges in batches (``UNWIND ... MERGE``/``CREATE``)."""
        from rich.progress import Progress

        started = time.perf_counter()
        self.create_schema()
        steps = [
            ("neo4j_load_users", [{"id": user} for user in tables.users]),
            (
                "neo4j_load_items",
                [{"id": r.id, "title": r.title, "facets": list(r.facets)} for r in tables.items],
            ),
            (
                "neo4j_load_edges",
                [{"user": e.user, "item": e.item, "ts": e.ts, "rating": e.rating} for e in tables.edges],
            ),
        ]
        with Progress(disable=not show_progress) as progress:
            for name, rows in steps:
                task = progress.add_task(name.removeprefix("neo4j_"), total=len(rows))
                query = load_query(name)
                for batch in self.batches(rows, self.write_batch_size):
                    self._write(query, {"rows": batch})
                    progress.advance(task, len(batch))
        return {
            "users": len(tables.users),
            "items": len(tables.items),
            "interactions": len(tables.edges),
            "seconds": time.perf_counter() - started,
        }

    def fingerprint(self) -> str | None:
        rows, _ = self.run("graph_fingerprint_get", {})
        return str(rows[0]["fingerprint"]) if rows else None

    def set_fingerprint(self, fingerprint: str) -> None:
        self.run("graph_fingerprint_set", {"fingerprint": fingerprint}, write=True)

    def close(self) -> None:
        driver = getattr(self, "_driver", None)
        if driver is not None:
            driver.close()
            self._driver = None
