"""Candidate-scoped collaborative evidence: every candidate of one request scored from the whole graph.

The per-anchor tools (``item_cf``/``user_cf``) return the top-k neighbours of one node, so a
candidate outside those short lists scores nothing. ``candidate_cf`` turns the question around:
given the user's history and the candidates, it scores *every* candidate exactly.

Signals (``U(i)`` = the users who interacted with item ``i`` in the leakage-free graph):

- **Item-CF**, cosine-normalised and recency-weighted::

      item_cf(c) = sum_r  decay**r * |U(a_r) & U(c)| / sqrt(|U(a_r)| * |U(c)|)

  over the user's ``window`` most recent distinct history items ``a_0`` (newest), ``a_1``, ...
  A candidate is never paired with itself. With the defaults (window 10, decay 0.8) this is the
  ``itemknn`` baseline's formula; two details differ: among history items with the same timestamp
  the later one in the history counts as newer, and a candidate already in the history gets no
  self-similarity.
- **User-CF**: how many of the user's ``similar_users`` nearest users (most distinct history
  items shared; ties by user id) chose the candidate.
- **Popularity**: ``|U(c)|``.

The **prior order** sorts candidates by Item-CF, then User-CF, then popularity, then the order
they were shown in. Each signal is one parameterised query (``candidate_item_cf``,
``candidate_user_cf``, ``item_popularity``); the default ``index`` engine answers the same
queries from an in-memory sparse index of the graph's edges (tested equal to the Cypher answers),
so an online call costs a sparse row product instead of a graph traversal.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from starrec.contract.trajectory import QueryTrace
from starrec.data.schema import Dataset
from starrec.tools.oracle import SparseCFIndex
from starrec.tools.queries import load_query
from starrec.tools.store import GraphStore

CandidateEngine = Literal["index", "cypher"]
PairRow = tuple[str, str, int, int, int]
"""(anchor, candidate, shared users, anchor users, candidate users)."""

TITLES_PER_LINE = 3

INLINE_MAX_EDGES = 500_000
"""Up to this many distinct user-item edges an index answer costs about a millisecond or less (0.65 ms
over ML-100k's 100k), cheap enough to compute on an event loop; above it callers use a thread."""


@dataclass(frozen=True)
class CandidateCFConfig:
    """How candidate-scoped CF scores (defaults match ``itemknn``'s tuned defaults)."""

    window: int = field(default=10, metadata={"help": "Most recent distinct history items used as anchors."})
    decay: float = field(default=0.8, metadata={"help": "The r-th most recent anchor weighs decay**r."})
    similar_users: int = field(
        default=50, metadata={"help": "Nearest users (by shared history items) whose choices User-CF counts."}
    )

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"candidate_cf window must be >= 1, got {self.window}")
        if not 0 < self.decay <= 1:
            raise ValueError(f"candidate_cf decay must be in (0, 1], got {self.decay}")
        if self.similar_users < 1:
            raise ValueError(f"candidate_cf similar_users must be >= 1, got {self.similar_users}")


class CandidateScore(BaseModel):
    """One candidate's collaborative evidence."""

    id: str
    title: str = ""
    item_cf: float = Field(description="Recency-weighted cosine co-occurrence with the recent history.")
    co_chosen: list[str] = Field(
        default_factory=list, description="Anchors (recent history items) co-chosen with it, newest first."
    )
    user_cf: int = Field(description="How many of the user's nearest users chose it.")
    popularity: int = Field(description="Distinct users of the item in the graph.")
    line: str = Field(description="The verbalised evidence line.")


class CandidateCFResult(BaseModel):
    """What ``candidate_cf`` returns: scores per candidate, the prior order and the evidence text."""

    tool: Literal["candidate_cf"] = "candidate_cf"
    user: str
    anchors: list[str] = Field(description="The recent history items used as Item-CF anchors, newest first.")
    neighbours: int = Field(description="Nearest users User-CF consulted (fewer when the graph has fewer).")
    scores: list[CandidateScore] = Field(description="One entry per candidate, in prior order.")
    order: list[str] = Field(description="Prior order: by item_cf, user_cf, popularity, then shown order.")
    evidence: str = Field(description="What the model reads: one line per candidate (top k), in prior order.")
    queries: list[QueryTrace] = Field(default_factory=list)

    def score_of(self, item: str) -> CandidateScore:
        for entry in self.scores:
            if entry.id == item:
                return entry
        raise KeyError(f"{item!r} is not a candidate of this candidate_cf result")


def recent_anchors(history: Sequence[str], window: int) -> list[str]:
    """The ``window`` most recent distinct items of an oldest-first history, newest first."""
    anchors: list[str] = []
    seen: set[str] = set()
    for item in reversed(history):
        if item in seen:
            continue
        seen.add(item)
        anchors.append(item)
        if len(anchors) >= window:
            break
    return anchors


def item_cf_scores(
    pairs: Sequence[PairRow], anchors: Sequence[str], decay: float
) -> dict[str, tuple[float, list[str]]]:
    """Candidate -> (recency-weighted cosine score, co-chosen anchors newest first) from pair rows."""
    rank = {anchor: position for position, anchor in enumerate(anchors)}
    scored: dict[str, list[tuple[int, float]]] = {}
    for anchor, item, shared, anchor_users, item_users in pairs:
        if anchor not in rank or anchor_users <= 0 or item_users <= 0:
            continue
        cosine = shared / math.sqrt(anchor_users * item_users)
        scored.setdefault(item, []).append((rank[anchor], decay ** rank[anchor] * cosine))
    result: dict[str, tuple[float, list[str]]] = {}
    for item, parts in scored.items():
        parts.sort()
        # Summed newest anchor first, so both engines add the same floats in the same order.
        result[item] = (math.fsum(weight for _, weight in parts), [anchors[r] for r, _ in parts])
    return result


def prior_order(
    candidates: Sequence[str],
    item_cf: dict[str, float],
    user_cf: dict[str, int],
    popularity: dict[str, int],
) -> list[str]:
    """Candidates by Item-CF, then User-CF, then popularity (all descending), then shown order."""
    position = {item: index for index, item in enumerate(candidates)}
    return sorted(
        candidates,
        key=lambda item: (
            -item_cf.get(item, 0.0),
            -user_cf.get(item, 0),
            -popularity.get(item, 0),
            position[item],
        ),
    )


def evidence_line(
    entry: CandidateScore, window: int, neighbours: int, titles: dict[str, str], noun: str = "item"
) -> str:
    """``co-chosen with 4 of your last 10 items (The Matrix, …); chosen by 12 of your 50 nearest users``."""
    shown = [titles.get(anchor) or anchor for anchor in entry.co_chosen[:TITLES_PER_LINE]]
    more = ", …" if len(entry.co_chosen) > TITLES_PER_LINE else ""
    if entry.co_chosen:
        co = f"co-chosen with {len(entry.co_chosen)} of your last {window} {noun}s ({', '.join(shown)}{more})"
    else:
        co = f"co-chosen with none of your last {window} {noun}s" if window else "no history to compare with"
    return (
        f"{co}; chosen by {entry.user_cf} of your {neighbours} nearest users; "
        f"{entry.popularity} users overall (score {entry.item_cf:.3f})"
    )


@dataclass
class _Answers:
    """The three signals' rows, however they were computed."""

    pairs: list[PairRow]
    neighbours: int
    user_counts: dict[str, int]
    popularity: dict[str, int]
    traces: list[QueryTrace]


class CandidateCF:
    """Scores a request's candidates against one graph store (thread-safe)."""

    def __init__(
        self,
        store: GraphStore | None,
        config: CandidateCFConfig | None = None,
        *,
        engine: CandidateEngine = "index",
        noun: str = "item",
    ) -> None:
        if engine not in ("index", "cypher"):
            raise ValueError(f"candidate_cf engine must be 'index' or 'cypher', got {engine!r}")
        if store is None and engine == "cypher":
            raise ValueError("candidate_cf engine 'cypher' needs a graph store")
        self.store = store
        self.config = config or CandidateCFConfig()
        self.engine = engine
        self.noun = noun
        self._index: SparseCFIndex | None = None
        self._histories: dict[str, list[str]] = {}
        self._titles: dict[str, str] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_dataset(cls, dataset: Dataset, config: CandidateCFConfig | None = None) -> CandidateCF:
        """The index engine over an in-memory (already leakage-free) dataset, no graph store needed."""
        scorer = cls(None, config, engine="index", noun=dataset.domain)
        latest: dict[tuple[str, str], float] = {}
        for event in dataset.interactions:
            key = (event.user_id, event.item_id)
            latest[key] = max(latest.get(key, event.timestamp), event.timestamp)
        scorer._install(
            sorted(set(dataset.users) | {user for user, _ in latest}),
            sorted(set(dataset.items) | {item for _, item in latest}),
            [(user, item, ts) for (user, item), ts in latest.items()],
            {item: dataset.item_title(item) for item in dataset.items},
        )
        return scorer

    # --- public -----------------------------------------------------------------------------------
    def score(
        self,
        user_id: str,
        candidates: Sequence[str],
        history: Sequence[str] | None = None,
        k: int | None = None,
    ) -> CandidateCFResult:
        """Score ``candidates`` for ``user_id``.

        ``history``: the user's item ids, oldest first (default: the user's interactions in the
        graph, which for test users is the leakage-free view). ``k``: evidence lines shown (all).
        """
        candidates = list(dict.fromkeys(candidates))
        if not candidates:
            raise ValueError("candidate_cf needs at least one candidate id")
        if k is not None and k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        traces: list[QueryTrace] = []
        if history is None:
            history, trace = self._history(user_id)
            traces.append(trace)
        history = list(history)
        anchors = recent_anchors(history, self.config.window)
        distinct_history = sorted(set(history))
        if self.engine == "index":
            answers = self._from_index(user_id, anchors, distinct_history, candidates)
        else:
            answers = self._from_cypher(user_id, anchors, distinct_history, candidates)
        traces.extend(answers.traces)
        item_cf = item_cf_scores(answers.pairs, anchors, self.config.decay)
        scores_only = {item: value for item, (value, _) in item_cf.items()}
        order = prior_order(candidates, scores_only, answers.user_counts, answers.popularity)
        titles = self._titles_for([*anchors, *candidates])
        entries = []
        for item in order:
            value, co = item_cf.get(item, (0.0, []))
            entry = CandidateScore(
                id=item,
                title=titles.get(item, ""),
                item_cf=value,
                co_chosen=co,
                user_cf=answers.user_counts.get(item, 0),
                popularity=answers.popularity.get(item, 0),
                line="",
            )
            entry.line = evidence_line(entry, len(anchors), answers.neighbours, titles, self.noun)
            entries.append(entry)
        return CandidateCFResult(
            user=user_id,
            anchors=anchors,
            neighbours=answers.neighbours,
            scores=entries,
            order=order,
            evidence=self._render(user_id, anchors, entries, k),
            queries=traces,
        )

    @property
    def in_memory(self) -> bool:
        """True once scoring needs no graph query and is cheap enough for an event loop: the index
        engine, its index built, over at most :data:`INLINE_MAX_EDGES` edges."""
        index = self._index
        return self.engine == "index" and index is not None and index.by_user.nnz <= INLINE_MAX_EDGES

    # --- engines ----------------------------------------------------------------------------------
    def _from_index(
        self, user_id: str, anchors: list[str], history: list[str], candidates: list[str]
    ) -> _Answers:
        index = self._require_index()
        size = self.config.similar_users
        pairs, t1 = _timed(lambda: index.candidate_pairs(anchors, candidates))
        (neighbours, counts), t2 = _timed(lambda: index.candidate_user_cf(user_id, history, candidates, size))
        popularity, t4 = _timed(lambda: index.item_popularity(candidates))
        traces = [
            _index_trace("candidate_item_cf", {"anchors": anchors, "candidates": candidates}, len(pairs), t1),
            _index_trace(
                "candidate_user_cf",
                {"id": user_id, "history": history, "users": size, "candidates": candidates},
                len(counts),
                t2,
            ),
            _index_trace("item_popularity", {"ids": candidates}, len(popularity), t4),
        ]
        return _Answers(pairs, neighbours, counts, popularity, traces)

    def _from_cypher(
        self, user_id: str, anchors: list[str], history: list[str], candidates: list[str]
    ) -> _Answers:
        assert self.store is not None
        size = self.config.similar_users
        rows, t_pairs = self.store.run("candidate_item_cf", {"anchors": anchors, "candidates": candidates})
        pairs = [
            (str(r["anchor"]), str(r["item"]), int(r["shared"]), int(r["anchor_users"]), int(r["item_users"]))
            for r in rows
        ]
        params = {"id": user_id, "history": history, "users": size, "candidates": candidates}
        rows, t_users = self.store.run("candidate_user_cf", params)
        counts = {str(r["item"]): int(r["users"]) for r in rows if int(r["users"]) > 0}
        near, t_near = self.store.run(
            "similar_users_of_history", {"id": user_id, "history": history, "users": size}
        )
        rows, t_pop = self.store.run("item_popularity", {"ids": candidates})
        popularity = {str(r["item"]): int(r["users"]) for r in rows if int(r["users"]) > 0}
        return _Answers(pairs, len(near), counts, popularity, [t_pairs, t_users, t_near, t_pop])

    # --- helpers ----------------------------------------------------------------------------------
    def _require_index(self) -> SparseCFIndex:
        with self._lock:
            if self._index is None:
                assert self.store is not None  # from_dataset installs the index up front
                rows, _ = self.store.run("edges_timed", {})
                edges = [(str(row["user"]), str(row["item"]), float(row["ts"])) for row in rows]
                items = self.store.ids("item")
                titles = {item: row.title for item, row in self.store.item_meta(items).items()}
                self._install(self.store.ids("user"), items, edges, titles)
            assert self._index is not None
            return self._index

    def _install(
        self, users: list[str], items: list[str], edges: list[tuple[str, str, float]], titles: dict[str, str]
    ) -> None:
        """Index distinct (user, item, latest time) edges; histories are ordered by (time, item id)."""
        events: dict[str, list[tuple[float, str]]] = {}
        for user, item, ts in edges:
            events.setdefault(user, []).append((ts, item))
        self._histories = {user: [item for _, item in sorted(timed)] for user, timed in events.items()}
        self._titles = titles
        self._index = SparseCFIndex(users, items, [(user, item) for user, item, _ in edges])

    def _history(self, user_id: str) -> tuple[list[str], QueryTrace]:
        if self.engine == "index":
            self._require_index()
            history, seconds = _timed(lambda: list(self._histories.get(user_id, [])))
            return history, _index_trace("user_history", {"id": user_id}, len(history), seconds)
        assert self.store is not None
        rows, trace = self.store.run("user_history", {"id": user_id})
        return [str(row["item"]) for row in rows], trace

    def _titles_for(self, items: Sequence[str]) -> dict[str, str]:
        if self.engine == "index":
            self._require_index()
            return {item: self._titles.get(item, "") for item in items}
        assert self.store is not None
        meta = self.store.item_meta(items)
        return {item: row.title for item, row in meta.items()}

    def _render(self, user_id: str, anchors: list[str], entries: list[CandidateScore], k: int | None) -> str:
        shown = entries[:k] if k is not None else entries
        if not anchors:
            header = (
                f"Collaborative evidence for user {user_id}: no history in the graph, so Item-CF is silent; "
                "candidates ordered by nearest users, then popularity."
            )
        else:
            header = (
                f"Collaborative evidence for user {user_id}, candidates strongest first "
                f"({len(shown)} of {len(entries)} shown):"
            )
        lines = [f"- [{e.id}] {e.title or e.id}: {e.line}" for e in shown]
        return "\n".join([header, *lines])


def _timed(compute: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = compute()
    return value, time.perf_counter() - started


def _index_trace(name: str, params: dict[str, Any], rows: int, seconds: float) -> QueryTrace:
    """The query an index answer equals (run it with ``starrec cypher run`` to check)."""
    return QueryTrace(
        name=name, cypher=load_query(name), params=params, row_count=rows, seconds=seconds, engine="index"
    )
