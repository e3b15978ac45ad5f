"""``starrec recommend``: one user's top-k over the whole catalogue, with the evidence behind each item.

The method (any registered one) is fitted on the whole dataset, since this recommends the user's
next items rather than scoring a held-out one; it ranks every item the user has not interacted
with (presented in a seeded shuffle, as in the full-corpus protocol). With a re-ranker, the
retriever's top ``retrieve_n`` are re-ranked by it (MARS, STAR or a classical method). Each
recommended item then gets its collaborative evidence from the candidate-scoped CF tool: which
of the user's recent items it was co-chosen with, how many of the user's nearest users chose it,
and its popularity. Whatever the method returned is repaired into a valid ranking and the repair
is counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starrec.data.schema import Dataset
from starrec.eval.full_corpus import catalogue_of, catalogue_request, rerank_request
from starrec.eval.harness import rank_all
from starrec.eval.recommender import Recommender
from starrec.eval.repair import repair_ranking
from starrec.tools.candidate_cf import CandidateCF


@dataclass
class Recommendation:
    item_id: str
    title: str
    rank: int
    evidence: str
    item_cf: float
    user_cf: int
    popularity: int


@dataclass
class RecommendationResult:
    user_id: str
    method: str
    retriever: str
    history_size: int
    items: list[Recommendation] = field(default_factory=list)
    repairs: dict[str, int] = field(default_factory=dict)
    """Ids dropped from the method's answer (hallucinated, duplicates) or appended to it (missing)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "method": self.method,
            "retriever": self.retriever,
            "history_size": self.history_size,
            "repairs": self.repairs,
            "items": [vars(item) for item in self.items],
        }


def unknown_user_message(dataset: Dataset, user_id: str) -> str:
    examples = ", ".join(sorted(dataset.by_user)[:3])
    return (
        f"user {user_id!r} has no interactions in dataset {dataset.name!r}, so there is nothing to "
        f"recommend from; pass one of its {len(dataset.by_user)} users (e.g. {examples})"
    )


def _ranked(method: Recommender, request: Any) -> tuple[list[str], dict[str, int]]:
    (answer,) = rank_all(method, [request], batch_size=1, progress=False)
    if isinstance(answer, BaseException):
        raise RuntimeError(f"{method.name} failed to rank for user {request.user_id!r}: {answer}") from answer
    ranking, repair = repair_ranking(
        [answer] if isinstance(answer, str) else list(answer), request.candidates
    )
    return ranking, repair.counts()


def recommend_for_user(
    dataset: Dataset,
    user_id: str,
    retriever: Recommender,
    *,
    k: int = 10,
    reranker: Recommender | None = None,
    retrieve_n: int = 50,
    seed: int = 0,
) -> RecommendationResult:
    """Fit, retrieve (and re-rank), and explain the top ``k`` for ``user_id``; see the module docstring."""
    if user_id not in dataset.by_user:
        raise ValueError(unknown_user_message(dataset, user_id))
    if k < 1 or retrieve_n < 1:
        raise ValueError(f"k and retrieve_n must be >= 1, got k={k}, retrieve_n={retrieve_n}")
    request = catalogue_request("recommend", user_id, dataset, catalogue_of(dataset), seed)
    if not request.candidates:
        raise ValueError(
            f"user {user_id!r} has interacted with every item of {dataset.name!r}; nothing is left"
        )
    retriever.fit(dataset)
    ranking, repairs = _ranked(retriever, request)
    method_name = retriever.name
    if reranker is not None and reranker is not retriever:
        reranker.fit(dataset)
        ranking, repairs = _ranked(reranker, rerank_request(request, ranking[:retrieve_n], seed))
        method_name = reranker.name
    top = ranking[:k]
    history = [event.item_id for event in dataset.history(user_id)]
    evidence = CandidateCF.from_dataset(dataset).score(user_id, top, history=history)
    result = RecommendationResult(user_id, method_name, retriever.name, len(history), repairs=repairs)
    for rank, item in enumerate(top, start=1):
        entry = evidence.score_of(item)
        result.items.append(
            Recommendation(
                item,
                dataset.item_title(item),
                rank,
                entry.line,
                entry.item_cf,
                entry.user_cf,
                entry.popularity,
            )
        )
    return result
