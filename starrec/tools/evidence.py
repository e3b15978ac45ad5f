"""Offline evidence building and the online :class:`EvidenceStore` (an ``EvidenceSource``).

Offline, :func:`build_evidence` computes every item's Item-CF and every user's User-CF
neighbours (in bulk with the scipy index built from the graph's own edges, which is tested to
equal the Cypher answers; or query by query with ``engine="cypher"``), verbalises them and stores
the text plus the neighbours on the nodes. Online, :meth:`EvidenceStore.item_cf` /
:meth:`EvidenceStore.user_cf` are one ``*_evidence_get`` lookup; only anchors without stored
evidence (or asked for more neighbours than were stored) fall back to a live CF query.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal, Protocol

from starrec.contract.tool_names import ITEM_CF, USER_CF, AgentToolName
from starrec.contract.trajectory import QueryTrace
from starrec.contract.values import ValueProfile
from starrec.tools.base import CFResult, Neighbour, ValuesResult
from starrec.tools.candidate_cf import CandidateCF, CandidateCFConfig, CandidateCFResult, CandidateEngine
from starrec.tools.oracle import SparseCFIndex
from starrec.tools.queries import load_query
from starrec.tools.store import (
    DEFAULT_SIMILAR_USERS,
    EvidenceKind,
    GraphStore,
    ItemRow,
    StoredEvidence,
    batched,
)
from starrec.tools.verbalise import (
    EvidenceRequest,
    MetadataVerbaliser,
    NeighbourInfo,
    Verbalised,
    not_in_graph_message,
)

TOOL_OF_KIND: dict[EvidenceKind, AgentToolName] = {"item": ITEM_CF, "user": USER_CF}


class Verbaliser(Protocol):
    name: str

    def verbalise(self, request: EvidenceRequest) -> Verbalised: ...


def profile_result(
    user_id: str,
    profile: ValueProfile,
    queries: list[QueryTrace],
    source: Literal["stored", "live"] = "stored",
) -> ValuesResult:
    """A value profile worded for an agent, strongest value first (stored or mined live)."""
    lines = [
        f"- {score.value} {score.weight:.2f}: {score.reason or '-'}"
        + (f" [{', '.join(score.item_ids)}]" if score.item_ids else "")
        for score in profile.top(len(profile.scores))
        if score.weight > 0
    ]
    heading = "Mined value profile" if source == "stored" else "Value profile mined live (none was stored)"
    text = f"{heading} of user {user_id}, strongest first:\n" + ("\n".join(lines) or "- (none)")
    return ValuesResult(
        user_id=user_id, found=True, evidence=text, profile=profile.to_dict(), queries=queries, source=source
    )


@dataclass
class EvidenceBuildConfig:
    """Knobs of ``starrec evidence build``."""

    k: int = field(default=20, metadata={"help": "Neighbours computed, verbalised and stored per anchor."})
    similar_users: int = field(
        default=DEFAULT_SIMILAR_USERS, metadata={"help": "Users kept by stage 1 of User-CF."}
    )
    kinds: tuple[EvidenceKind, ...] = field(
        default=("item", "user"), metadata={"help": "Build Item-CF evidence for items, User-CF for users."}
    )
    items: tuple[str, ...] | None = field(
        default=None, metadata={"help": "Only these item ids (default: every item)."}
    )
    users: tuple[str, ...] | None = field(
        default=None, metadata={"help": "Only these user ids (default: every user)."}
    )
    resume: bool = field(default=True, metadata={"help": "Skip anchors that already have evidence."})
    engine: Literal["scipy", "cypher"] = field(
        default="scipy",
        metadata={
            "help": "scipy: bulk neighbours from an index of the graph's edges; cypher: one query each."
        },
    )
    batch_size: int = field(default=256, metadata={"help": "Anchors verbalised and written per batch."})
    noun: str = field(
        default="item", metadata={"help": "What items are (movie, book, ...), for the wording."}
    )


@dataclass
class EvidenceBuildReport:
    store: str
    verbaliser: str
    anchors: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    per_second: dict[str, float] = field(default_factory=dict)
    index_seconds: float = 0.0
    llm: dict[str, float] | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def stored_neighbours(
    rows: Sequence[tuple[str, int]], meta: dict[str, ItemRow]
) -> list[tuple[str, str, int]]:
    return [(item, meta[item].title if item in meta else "", shared) for item, shared in rows]


def _infos(rows: Sequence[tuple[str, int]], meta: dict[str, ItemRow]) -> list[NeighbourInfo]:
    return [
        NeighbourInfo(
            item, meta[item].title if item in meta else item, meta[item].facets if item in meta else (), n
        )
        for item, n in rows
    ]


def item_request(
    anchor: str, rows: Sequence[tuple[str, int]], meta: dict[str, ItemRow], noun: str
) -> EvidenceRequest:
    own = meta.get(anchor)
    return EvidenceRequest(
        ITEM_CF,
        anchor,
        own.title if own else anchor,
        own.facets if own else (),
        _infos(rows, meta),
        noun=noun,
    )


def user_request(
    anchor: str, history: Sequence[str], rows: Sequence[tuple[str, int]], meta: dict[str, ItemRow], noun: str
) -> EvidenceRequest:
    facets = tuple(facet for item in history if item in meta for facet in meta[item].facets)
    return EvidenceRequest(
        USER_CF, anchor, anchor, facets, _infos(rows, meta), history_size=len(history), noun=noun
    )


class _Neighbours:
    """Neighbour lists for the builder, from the scipy index or from Cypher queries."""

    def __init__(self, store: GraphStore, config: EvidenceBuildConfig) -> None:
        self.store = store
        self.config = config
        self.index: SparseCFIndex | None = None
        self.index_seconds = 0.0
        started = time.perf_counter()
        rows, _ = store.run("edges", {})
        pairs = [(str(row["user"]), str(row["item"])) for row in rows]
        self.history: dict[str, list[str]] = {}
        for user, item in pairs:
            self.history.setdefault(user, []).append(item)
        if config.engine == "scipy":
            self.index = SparseCFIndex(store.ids("user"), store.ids("item"), pairs)
        self.index_seconds = time.perf_counter() - started

    def of(self, kind: EvidenceKind, anchor: str) -> list[tuple[str, int]]:
        k, similar = self.config.k, self.config.similar_users
        if self.index is not None:
            return self.index.item_cf(anchor, k) if kind == "item" else self.index.user_cf(anchor, k, similar)
        return (self.store.item_cf(anchor, k) if kind == "item" else self.store.user_cf(anchor, k, similar))[
            0
        ]


def build_evidence(
    store: GraphStore,
    config: EvidenceBuildConfig | None = None,
    verbaliser: Verbaliser | None = None,
    *,
    show_progress: bool = True,
) -> EvidenceBuildReport:
    """Compute, verbalise and store evidence for the configured anchors (resumable)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    config = config or EvidenceBuildConfig()
    verbaliser = verbaliser or MetadataVerbaliser()
    neighbours = _Neighbours(store, config)
    meta = store.item_meta(store.ids("item"))
    report = EvidenceBuildReport(store.location, verbaliser.name, index_seconds=neighbours.index_seconds)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not show_progress,
    )
    with progress:
        for kind in config.kinds:
            anchors = _anchors(store, kind, config)
            report.skipped[kind] = len(store.ids(kind)) - len(anchors)
            task = progress.add_task(f"{TOOL_OF_KIND[kind]} evidence", total=len(anchors))
            started = time.perf_counter()
            for chunk in batched(anchors, config.batch_size):
                requests = [_request(kind, anchor, neighbours, meta, config) for anchor in chunk]
                results = _verbalise_all(verbaliser, requests, lambda task=task: progress.advance(task))
                records = [
                    StoredEvidence(
                        request.anchor,
                        "",
                        result.text,
                        [(n.id, n.title, n.shared) for n in request.neighbours],
                        config.k,
                        result.by,
                    )
                    for request, result in zip(requests, results, strict=True)
                ]
                store.set_evidence(kind, records)
            elapsed = time.perf_counter() - started
            report.anchors[kind] = len(anchors)
            report.seconds[kind] = elapsed
            report.per_second[kind] = len(anchors) / elapsed if elapsed > 0 else 0.0
    stats = getattr(verbaliser, "stats", None)
    if stats is not None:
        report.llm = stats.as_dict()
    return report


def _anchors(store: GraphStore, kind: EvidenceKind, config: EvidenceBuildConfig) -> list[str]:
    anchors = store.ids(kind, missing_evidence_only=config.resume)
    wanted = config.items if kind == "item" else config.users
    if wanted is not None:
        known = set(store.ids(kind))
        unknown = [anchor for anchor in wanted if anchor not in known]
        if unknown:
            raise KeyError(f"{kind} ids not in graph {store.location}: {unknown[:10]}")
        selected = set(wanted)
        anchors = [anchor for anchor in anchors if anchor in selected]
    return anchors


def _request(
    kind: EvidenceKind,
    anchor: str,
    neighbours: _Neighbours,
    meta: dict[str, ItemRow],
    config: EvidenceBuildConfig,
) -> EvidenceRequest:
    rows = neighbours.of(kind, anchor)
    if kind == "item":
        return item_request(anchor, rows, meta, config.noun)
    return user_request(anchor, neighbours.history.get(anchor, []), rows, meta, config.noun)


def _verbalise_all(
    verbaliser: Verbaliser, requests: list[EvidenceRequest], advance: Callable[[], None]
) -> list[Verbalised]:
    many = getattr(verbaliser, "verbalise_many", None)
    if many is not None:
        return many(requests, progress=advance)
    results = []
    for request in requests:
        results.append(verbaliser.verbalise(request))
        advance()
    return results


class EvidenceStore:
    """The CF tools' backend for agents: implements ``EvidenceSource`` on a graph store.

    Thread-safe (stores serialise their own queries), so LangGraph may call it from tool threads.
    """

    def __init__(
        self,
        store: GraphStore,
        *,
        noun: str = "item",
        similar_users: int = DEFAULT_SIMILAR_USERS,
        candidate_config: CandidateCFConfig | None = None,
        candidate_engine: CandidateEngine = "index",
    ):
        self.store = store
        self.noun = noun
        self.similar_users = similar_users
        self.live_fallbacks = 0
        """Tool calls answered by a live query because no (or too little) evidence was stored."""
        self.reverbalised = 0
        """Tool calls that asked for fewer neighbours than were stored (re-worded for the k asked)."""
        self.candidates = CandidateCF(store, candidate_config, engine=candidate_engine, noun=noun)
        self._count_lock = threading.Lock()
        self._has_values: bool | None = None

    def candidate_cf(
        self,
        user_id: str,
        candidates: Sequence[str],
        history: Sequence[str] | None = None,
        k: int | None = None,
    ) -> CandidateCFResult:
        """Every candidate scored from the whole graph (see :mod:`starrec.tools.candidate_cf`)."""
        return self.candidates.score(user_id, candidates, history, k)

    def answers_in_memory(self, call: str) -> bool:
        """``candidate_cf`` once its in-memory index is built; the per-anchor tools query the store."""
        return call == "candidate_cf" and self.candidates.in_memory

    def item_cf(self, item_id: str, k: int = 10) -> CFResult:
        return self._answer("item", item_id, k)

    def user_cf(self, user_id: str, k: int = 10) -> CFResult:
        return self._answer("user", user_id, k)

    def _answer(self, kind: EvidenceKind, anchor: str, k: int) -> CFResult:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        tool = TOOL_OF_KIND[kind]
        stored, lookup = self.store.get_evidence(kind, anchor)
        if stored is None:
            return CFResult(
                tool=tool,
                anchor=anchor,
                found=False,
                evidence=not_in_graph_message(tool, anchor),
                queries=[lookup],
            )
        if stored.evidence is not None and k < min(stored.k, len(stored.neighbours)):
            with self._count_lock:
                self.reverbalised += 1
            return self._reworded(kind, anchor, stored, k, lookup)
        if stored.evidence is not None and k <= stored.k:
            neighbours = [Neighbour(id=i, title=t, shared=n) for i, t, n in stored.neighbours[:k]]
            return CFResult(
                tool=tool,
                anchor=anchor,
                found=True,
                evidence=stored.evidence,
                neighbours=neighbours,
                queries=[lookup, self._producing_trace(kind, anchor, stored)],
            )
        with self._count_lock:
            self.live_fallbacks += 1
        return self._live(kind, anchor, k, lookup)

    def _producing_trace(self, kind: EvidenceKind, anchor: str, stored: StoredEvidence) -> QueryTrace:
        """The CF query whose answer the stored evidence verbalises (run at build time)."""
        name = TOOL_OF_KIND[kind]
        params: dict[str, object] = {"id": anchor, "k": stored.k}
        if kind == "user":
            params = {"id": anchor, "users": self.similar_users, "k": stored.k}
        return QueryTrace(name=name, cypher=load_query(name), params=params, row_count=len(stored.neighbours))

    def _reworded(
        self, kind: EvidenceKind, anchor: str, stored: StoredEvidence, k: int, lookup: QueryTrace
    ) -> CFResult:
        """The stored neighbours cut to the k asked for, worded deterministically (no k=20 text for k=5)."""
        rows = [(item, shared) for item, _, shared in stored.neighbours[:k]]
        return self._verbalised(kind, anchor, rows, [lookup, self._producing_trace(kind, anchor, stored)])

    def _live(self, kind: EvidenceKind, anchor: str, k: int, lookup: QueryTrace) -> CFResult:
        if kind == "item":
            rows, trace = self.store.item_cf(anchor, k)
        else:
            rows, trace = self.store.user_cf(anchor, k, self.similar_users)
        return self._verbalised(kind, anchor, rows, [lookup, trace])

    def _verbalised(
        self, kind: EvidenceKind, anchor: str, rows: Sequence[tuple[str, int]], traces: list[QueryTrace]
    ) -> CFResult:
        if kind == "item":
            meta = self.store.item_meta([anchor, *(item for item, _ in rows)])
            request = item_request(anchor, rows, meta, self.noun)
        else:
            # Distinct items, as the evidence builder counts them (repeat interactions count once).
            history = list(dict.fromkeys(str(row["item"]) for row in self.store.user_history(anchor)))
            meta = self.store.item_meta([*history, *(item for item, _ in rows)])
            request = user_request(anchor, history, rows, meta, self.noun)
        result = MetadataVerbaliser().verbalise(request)
        neighbours = [Neighbour(id=n.id, title=n.title, shared=n.shared) for n in request.neighbours]
        return CFResult(
            tool=TOOL_OF_KIND[kind],
            anchor=anchor,
            found=True,
            evidence=result.text,
            neighbours=neighbours,
            queries=traces,
        )

    def value_profile(self, user_id: str) -> ValuesResult:
        """The user's stored value profile, worded for an agent (the ``user_values`` tool)."""
        profile, trace = self.store.get_value_profile(user_id)
        if profile is None:
            text = (
                f"No value profile is stored for user {user_id}; judge the values from the history "
                "(mine profiles with `starrec values mine`)."
            )
            return ValuesResult(user_id=user_id, found=False, evidence=text, queries=[trace], source="none")
        return profile_result(user_id, profile, [trace])

    def has_value_profiles(self) -> bool:
        """True when at least one user has a stored profile (checked once; stores are read-only online)."""
        if self._has_values is None:
            self._has_values = bool(self.store.users_with_values())
        return self._has_values

    def close(self) -> None:
        self.store.close()
