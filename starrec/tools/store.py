"""The graph-store interface shared by the Ladybug and Neo4j backends.

A store holds the bipartite interaction graph (``(:User)-[:INTERACTED {ts, rating}]->(:Item)``)
built from a dataset's *training* interactions, answers the Item-CF / User-CF queries from
``starrec/tools/cypher`` and keeps verbalised evidence as node properties, so the online tool
call is one lookup. Every query goes through :meth:`GraphStore.run`, which loads it by name,
sends parameters only and records a :class:`QueryTrace`.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from starrec.contract.trajectory import QueryTrace
from starrec.contract.values import ValueProfile
from starrec.data.schema import Dataset
from starrec.tools.adhoc import ensure_read_only
from starrec.tools.queries import load_query

EvidenceKind = Literal["item", "user"]
DEFAULT_SIMILAR_USERS = 20
"""How many similar users stage 1 of User-CF keeps before counting what they liked."""

MAX_FACETS_PER_ITEM = 12
# Goodreads shelves that say nothing about the book itself.
GENERIC_SHELVES = frozenset(
    {
        "to-read",
        "currently-reading",
        "favorites",
        "favourites",
        "owned",
        "books-i-own",
        "default",
        "library",
        "owned-books",
        "my-books",
        "wish-list",
        "kindle",
        "ebook",
        "ebooks",
        "to-buy",
        "read",
    }
)
CREATOR_FIELDS = ("author", "authors", "brand", "store", "director", "city")


class GraphStoreError(RuntimeError):
    """A backend could not be opened or queried; the message names the path or URI."""


@dataclass(frozen=True, slots=True)
class ItemRow:
    id: str
    title: str
    facets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EdgeRow:
    user: str
    item: str
    ts: float
    rating: float | None


@dataclass(slots=True)
class GraphTables:
    """Node and edge rows of one graph, derived from a (leakage-free) dataset."""

    users: list[str]
    items: list[ItemRow]
    edges: list[EdgeRow]

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> GraphTables:
        user_ids = set(dataset.users) | {event.user_id for event in dataset.interactions}
        item_ids = set(dataset.items) | {event.item_id for event in dataset.interactions}
        items = [
            ItemRow(item, dataset.item_title(item), tuple(item_facets(dataset, item)))
            for item in sorted(item_ids)
        ]
        edges = [
            EdgeRow(event.user_id, event.item_id, float(event.timestamp), event.stars)
            for event in dataset.interactions
        ]
        return cls(sorted(user_ids), items, edges)


@dataclass(slots=True)
class StoredEvidence:
    """Evidence as stored on a node: text, the neighbours it was built from, and by what."""

    anchor: str
    title: str
    evidence: str | None
    neighbours: list[tuple[str, str, int]] = field(default_factory=list)
    k: int = 0
    by: str = ""

    @staticmethod
    def encode_neighbours(neighbours: Sequence[tuple[str, str, int]]) -> str:
        return json.dumps([list(entry) for entry in neighbours], ensure_ascii=False)

    @staticmethod
    def decode_neighbours(text: str | None) -> list[tuple[str, str, int]]:
        if not text:
            return []
        return [(str(a), str(b), int(c)) for a, b, c in json.loads(text)]


def _facet_kind(dataset: Dataset) -> str:
    return "genre" if dataset.domain in {"movie", "book"} else "category"


def _creator_names(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value.strip() else []
    names: list[str] = []
    if isinstance(value, list | tuple):
        for entry in value:
            if isinstance(entry, dict):
                name = entry.get("name") or entry.get("author_id")
                if name:
                    names.append(str(name))
            elif entry:
                names.append(str(entry))
    return names


def item_facets(dataset: Dataset, item_id: str) -> list[str]:
    """``kind=label`` facets (genre/category, author, brand, store, director, city) of an item.

    These are what the deterministic verbaliser groups neighbours by.
    """
    kind = _facet_kind(dataset)
    facets: list[str] = []
    for label in dataset.item_categories(item_id):
        if label.lower() not in GENERIC_SHELVES:
            facets.append(f"{kind}={label}")
    meta = dataset.items.get(item_id, {})
    for key in CREATOR_FIELDS:
        for name in _creator_names(meta.get(key)):
            facets.append(f"{key.removesuffix('s')}={name}")
    unique = list(dict.fromkeys(facets))
    return unique[:MAX_FACETS_PER_ITEM]


def batched(rows: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


class GraphStore(ABC):
    """One interaction graph on one backend."""

    backend: str = ""

    @property
    @abstractmethod
    def location(self) -> str:
        """The path or URI, for messages."""

    @abstractmethod
    def _read(self, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Run a read query; rows as dicts keyed by the RETURN aliases."""

    @abstractmethod
    def _write(self, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Run a write query in a write transaction."""

    @abstractmethod
    def load(self, tables: GraphTables) -> dict[str, float]:
        """Bulk-load an empty store; returns counts and seconds."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> GraphStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- named queries -----------------------------------------------------------------------
    def run(
        self, name: str, params: dict[str, Any], *, write: bool = False
    ) -> tuple[list[dict[str, Any]], QueryTrace]:
        """Run the packaged query ``name`` with parameters; returns rows and their trace."""
        query = load_query(name)
        started = time.perf_counter()
        rows = self._write(query, params) if write else self._read(query, params)
        trace = QueryTrace(
            name=name, cypher=query, params=params, row_count=len(rows), seconds=time.perf_counter() - started
        )
        return rows, trace

    def run_ad_hoc(self, query: str, params: dict[str, Any]) -> tuple[list[dict[str, Any]], QueryTrace]:
        """A user's read-only query (``starrec cypher run``): one statement, checked before sending."""
        query = ensure_read_only(query)
        started = time.perf_counter()
        rows = self._read_only(query, params)
        return rows, QueryTrace(
            name="ad_hoc",
            cypher=query,
            params=params,
            row_count=len(rows),
            seconds=time.perf_counter() - started,
        )

    def _read_only(self, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Backends override to add an engine-level read-only guard."""
        return self._read(query, params)

    def item_cf(self, item_id: str, k: int) -> tuple[list[tuple[str, int]], QueryTrace]:
        rows, trace = self.run("item_cf", {"id": item_id, "k": int(k)})
        return [(str(row["item"]), int(row["shared"])) for row in rows], trace

    def user_cf(
        self, user_id: str, k: int, similar_users: int = DEFAULT_SIMILAR_USERS
    ) -> tuple[list[tuple[str, int]], QueryTrace]:
        rows, trace = self.run("user_cf", {"id": user_id, "users": int(similar_users), "k": int(k)})
        return [(str(row["item"]), int(row["shared"])) for row in rows], trace

    def batches(self, rows: Sequence[dict[str, Any]], max_rows: int) -> Iterator[Sequence[dict[str, Any]]]:
        """Parameter batches; backends with payload limits override."""
        return batched(rows, max_rows)

    def item_meta(self, item_ids: Iterable[str]) -> dict[str, ItemRow]:
        rows = [{"id": item} for item in dict.fromkeys(item_ids)]
        found: dict[str, ItemRow] = {}
        for chunk in self.batches(rows, self.read_batch_size):
            result, _ = self.run("item_meta", {"rows": list(chunk)})
            for row in result:
                found[str(row["id"])] = ItemRow(
                    str(row["id"]), row["title"] or "", tuple(row["facets"] or ())
                )
        return found

    def user_history(self, user_id: str) -> list[dict[str, Any]]:
        rows, _ = self.run("user_history", {"id": user_id})
        return rows

    def get_evidence(self, kind: EvidenceKind, anchor: str) -> tuple[StoredEvidence | None, QueryTrace]:
        """The stored evidence node for ``anchor`` (None when the node does not exist)."""
        rows, trace = self.run(f"{kind}_evidence_get", {"id": anchor})
        if not rows:
            return None, trace
        row = rows[0]
        stored = StoredEvidence(
            anchor=str(row["id"]),
            title=row["title"] or "",
            evidence=row["evidence"],
            neighbours=StoredEvidence.decode_neighbours(row["neighbours"]),
            k=int(row["k"] or 0),
            by=row["by"] or "",
        )
        return stored, trace

    def set_evidence(self, kind: EvidenceKind, records: Sequence[StoredEvidence]) -> int:
        """Write evidence for many anchors (batched); returns how many nodes were updated."""
        rows = [
            {
                "id": record.anchor,
                "evidence": record.evidence,
                "neighbours": StoredEvidence.encode_neighbours(record.neighbours),
                "k": record.k,
                "by": record.by,
            }
            for record in records
        ]
        updated = 0
        for chunk in self.batches(rows, self.write_batch_size):
            result, _ = self.run(f"{kind}_evidence_set", {"rows": list(chunk)}, write=True)
            updated += int(result[0]["updated"]) if result else 0
        return updated

    def get_value_profile(self, user_id: str) -> tuple[ValueProfile | None, QueryTrace]:
        """The user's mined value profile (None when none is stored or the user is not in the graph)."""
        rows, trace = self.run("user_values_get", {"id": user_id})
        if not rows or not rows[0]["values_json"]:
            return None, trace
        try:
            payload = json.loads(rows[0]["values_json"])
            return ValueProfile.from_dict(payload), trace
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise GraphStoreError(
                f"{self.location}: the value profile stored on user {user_id!r} is not a valid profile "
                f"({error}); mine it again with `starrec values mine --users {user_id} --no-resume`"
            ) from error

    def set_value_profiles(self, profiles: Sequence[ValueProfile], by: str) -> int:
        """Store profiles on their ``User`` nodes (batched); returns how many nodes were updated."""
        rows = [
            {
                "id": profile.user_id,
                "values_json": json.dumps(profile.to_dict(), ensure_ascii=False),
                "top": [score.value for score in profile.top(3) if score.weight > 0],
                "by": by,
            }
            for profile in profiles
        ]
        updated = 0
        for chunk in self.batches(rows, self.write_batch_size):
            result, _ = self.run("user_values_set", {"rows": list(chunk)}, write=True)
            updated += int(result[0]["updated"]) if result else 0
        return updated

    def users_with_values(self) -> list[str]:
        """Users that have a stored value profile."""
        rows, _ = self.run("users_with_values", {})
        return [str(row["id"]) for row in rows]

    def ids(self, kind: EvidenceKind, *, missing_evidence_only: bool = False) -> list[str]:
        name = (f"{kind}s_without_evidence") if missing_evidence_only else f"{kind}_ids"
        rows, _ = self.run(name, {})
        return [str(row["id"]) for row in rows]

    def counts(self) -> dict[str, int]:
        rows, _ = self.run("graph_counts", {})
        row = rows[0] if rows else {"users": 0, "items": 0, "interactions": 0}
        return {key: int(row[key]) for key in ("users", "items", "interactions")}

    def edge_count(self, user_id: str, item_id: str) -> int:
        rows, _ = self.run("user_item_edges", {"user": user_id, "item": item_id})
        return int(rows[0]["edges"]) if rows else 0

    read_batch_size: int = 500
    write_batch_size: int = 500
