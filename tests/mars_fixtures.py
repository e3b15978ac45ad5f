"""Shared helpers for the MARS tests: a 30-movie dataset, a hand-built evidence source, scripts."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from starrec.contract.trajectory import QueryTrace
from starrec.data.schema import Dataset, Interaction, RankRequest, Task
from starrec.tools.base import CFResult, Neighbour
from starrec.tools.candidate_cf import CandidateCF, CandidateCFResult

DAY = 86_400.0
GENRES = ("Action", "Drama", "Comedy")


def build_movie_dataset(users: int = 12, items: int = 30) -> Dataset:
    """Users watch movies of 'their' genre in id order; every user also watched m1 first."""
    item_meta = {
        f"m{i}": {"item_id": f"m{i}", "title": f"Film {i}", "genres": [GENRES[i % 3]]}
        for i in range(1, items + 1)
    }
    user_meta = {f"u{u}": {"user_id": f"u{u}", "age": 20 + u} for u in range(1, users + 1)}
    events = []
    for u in range(1, users + 1):
        genre = u % 3
        watched = ["m1", *[f"m{i}" for i in range(1, items + 1) if i % 3 == genre and i != 1][: 6 + u % 4]]
        for day, item in enumerate(watched, start=1):
            events.append(Interaction(f"u{u}", item, day * DAY + u, stars=float(3 + day % 3)))
    return Dataset(user_meta, item_meta, events, domain="movie", name="movies")


def make_task(dataset: Dataset, user: str = "u1", index: int = 0) -> Task:
    """A task for ``user``: the ground truth is their last item, 19 unseen negatives."""
    history = dataset.history(user)
    truth = history[-1].item_id
    seen = {event.item_id for event in history}
    negatives = [item for item in sorted(dataset.items) if item not in seen][:19]
    return Task(f"t{index}", user, tuple([truth, *negatives]), truth, scenario="classic")


def make_request(dataset: Dataset, task: Task) -> RankRequest:
    visible = dataset.hide_from([task])
    return RankRequest(
        task.task_id,
        task.user_id,
        tuple(reversed(task.candidates)),
        scenario=task.scenario,
        history=tuple(visible.history(task.user_id)),
    )


class FakeEvidence:
    """An ``EvidenceSource`` computed from a dataset's co-occurrences (no graph database)."""

    def __init__(self, dataset: Dataset, fail_on: str | None = None) -> None:
        self.dataset = dataset
        self.fail_on = fail_on
        self.calls: list[tuple[str, str, int]] = []
        self._candidates: CandidateCF | None = None

    def candidate_cf(
        self,
        user_id: str,
        candidates: Sequence[str],
        history: Sequence[str] | None = None,
        k: int | None = None,
    ) -> CandidateCFResult:
        """The real candidate-CF scorer over the fixture dataset (in-memory index engine)."""
        self.calls.append(("candidate_cf", user_id, len(candidates)))
        if self._candidates is None:
            self._candidates = CandidateCF.from_dataset(self.dataset)
        return self._candidates.score(user_id, candidates, history, k)

    def _result(self, tool: str, anchor: str, counts: Counter[str], k: int) -> CFResult:
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        trace = QueryTrace(
            name=tool,
            cypher=f"MATCH /* {tool} */ RETURN $id",
            params={"id": anchor, "k": k},
            row_count=len(top),
        )
        neighbours = [Neighbour(id=i, title=self.dataset.item_title(i), shared=n) for i, n in top]
        text = f"{tool} for {anchor}: " + ", ".join(f"{n.id} ({n.shared})" for n in neighbours)
        return CFResult(
            tool=tool, anchor=anchor, found=bool(top), evidence=text, neighbours=neighbours, queries=[trace]
        )

    def item_cf(self, item_id: str, k: int = 10) -> CFResult:
        self.calls.append(("item_cf", item_id, k))
        if item_id == self.fail_on:
            raise RuntimeError(f"graph unavailable for {item_id}")
        users = {e.user_id for e in self.dataset.by_item.get(item_id, [])}
        counts = Counter(e.item_id for u in users for e in self.dataset.history(u) if e.item_id != item_id)
        return self._result("item_cf", item_id, counts, k)

    def user_cf(self, user_id: str, k: int = 10) -> CFResult:
        self.calls.append(("user_cf", user_id, k))
        mine = {e.item_id for e in self.dataset.history(user_id)}
        counts: Counter[str] = Counter()
        for other, events in self.dataset.by_user.items():
            if other != user_id and mine & {e.item_id for e in events}:
                counts.update(e.item_id for e in events if e.item_id not in mine)
        return self._result("user_cf", user_id, counts, k)


def analysis(*conclusions: str) -> str:
    return "Looking at the history.\n" + json.dumps(
        {"thinking": "short", "conclusions": list(conclusions) or ["likes action"], "evidence_ids": ["m1"]}
    )


def default_script(
    candidates: list[str],
    plan: list[str] | None = None,
    ranking: list[str] | None = None,
    reflections: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Responses keyed by graph node (the scripted model picks by ``langgraph_node``)."""
    return {
        "abstractor": ["The viewer watched Film 1 [m1] then action films [m4], [m7]."],
        "planner": [
            json.dumps(
                {
                    "thinking": "plan",
                    "agents": plan
                    or ["user_profile", "historical_interest", "recent_interest", "interest_divergence"],
                }
            )
        ],
        "user_profile": [analysis("young adult")],
        "historical_interest": [analysis("action fan")],
        "recent_interest": [analysis("recently more action")],
        "interest_divergence": [analysis("may try thrillers")],
        "reflector": [
            json.dumps(r) for r in (reflections or [{"thinking": "ok", "verdict": "pass", "issues": []}])
        ],
        "ranker": [json.dumps({"thinking": "rank", "ranking": ranking or list(candidates)})],
    }
