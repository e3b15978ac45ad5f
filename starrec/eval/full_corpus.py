"""The full-corpus protocol: retrieve the top N of the whole catalogue, re-rank them, score.

The sampled AgentRecBench protocol (1 ground truth + 19 negatives, :mod:`starrec.eval.harness`)
stays the default; this one answers the paper's open question, ranking over every item:

1. the leakage guard is the sampled harness's: every method is fitted on
   ``dataset.hide_from(tasks)`` and every request carries only that view's history;
2. a *retriever* (any :class:`Recommender`: itemknn, bpr, lightgcn, sasrec, cf_prior, ...) ranks
   the whole catalogue minus the user's training items, presented in a seeded shuffle, and
   keeps the top N (Recall@N says how often the ground truth survives);
3. a *re-ranker* (MARS, STAR or a classical method) ranks those N, shuffled again with the seed
   so it cannot read the retriever's order from positions; without one the retriever's order
   stands;
4. HR@10, NDCG@10 and MRR are read on the final list of N, over the whole catalogue: a ground
   truth the retriever dropped is a miss for every metric.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from starrec.data.schema import Dataset, RankRequest, Task
from starrec.data.seeding import seeded_rng
from starrec.eval.harness import CI_RESAMPLES, CI_SEED, TaskOutcome, invalid_counts, rank_all, score_result
from starrec.eval.metrics import (
    bootstrap_interval,
    per_task_full_scores,
    rank_of,
    recall_at_k,
    summarize_full,
)
from starrec.eval.recommender import Recommender
from starrec.eval.timing import load_average

DEFAULT_RETRIEVE_N = 50
FULL_K = 10


def catalogue_of(dataset: Dataset) -> tuple[str, ...]:
    """Every item the dataset knows (its item table and every interacted item), sorted."""
    return tuple(sorted(set(dataset.items) | set(dataset.by_item)))


def seen_items(train: Dataset, user_id: str) -> set[str]:
    return {event.item_id for event in train.history(user_id)}


def catalogue_request(
    task_id: str,
    user_id: str,
    train: Dataset,
    catalogue: Sequence[str],
    seed: int,
    category: str = "",
    scenario: str = "",
) -> RankRequest:
    """The retrieval request: the catalogue minus the user's training items, in a seeded order."""
    seen = seen_items(train, user_id)
    candidates = [item for item in catalogue if item not in seen]
    if not candidates:
        raise ValueError(f"user {user_id!r} interacted with every item of the catalogue; nothing to retrieve")
    seeded_rng(seed, "catalogue", task_id, user_id).shuffle(candidates)
    return RankRequest(task_id=task_id, user_id=user_id, candidates=tuple(candidates), category=category,
                       scenario=scenario, history=tuple(train.history(user_id)))  # fmt: skip


def check_full_tasks(tasks: Sequence[Task], train: Dataset, catalogue: Sequence[str]) -> None:
    """Every task needs an answer from the catalogue that the training view does not already show."""
    missing = [task.task_id for task in tasks if task.ground_truth is None]
    if missing:
        raise ValueError(
            f"{len(missing)} task(s) have no ground truth (task ids {', '.join(missing[:10])}); "
            "the full-corpus protocol needs groundtruth/groundtruth_<i>.json for every task"
        )
    known = set(catalogue)
    outside = [task.task_id for task in tasks if task.ground_truth not in known]
    if outside:
        raise ValueError(
            f"ground truth of task(s) {', '.join(outside[:10])} is not in the dataset's catalogue; "
            "pass the --data the tasks were built from"
        )
    leaked = [task.task_id for task in tasks if task.ground_truth in seen_items(train, task.user_id)]
    if leaked:
        raise ValueError(
            f"the training view still holds the ground truth of task(s) {', '.join(leaked[:10])}; "
            "fit on dataset.hide_from(tasks)"
        )


def rerank_request(request: RankRequest, retrieved: Sequence[str], seed: int) -> RankRequest:
    """The re-ranker's request: the retrieved N in a seeded order, the same history."""
    order = list(retrieved)
    seeded_rng(seed, "rerank", request.task_id, request.user_id).shuffle(order)
    return RankRequest(
        task_id=request.task_id,
        user_id=request.user_id,
        candidates=tuple(order),
        category=request.category,
        scenario=request.scenario,
        history=request.history,
    )


def full_intervals(
    rankings: Sequence[Sequence[str]], truths: Sequence[str], k: int
) -> dict[str, list[float]]:
    """95% bootstrap interval of each full-corpus metric (same seed and resamples as the harness)."""
    scores = per_task_full_scores(rankings, truths, k)
    found = {name: bootstrap_interval(values, resamples=CI_RESAMPLES, seed=CI_SEED)
             for name, values in scores.items()}  # fmt: skip
    return {name: [round(low, 4), round(high, 4)] for name, (low, high) in found.items()}


def evaluate_full(
    retriever: Recommender,
    tasks: Sequence[Task],
    dataset: Dataset,
    reranker: Recommender | None = None,
    *,
    retrieve_n: int = DEFAULT_RETRIEVE_N,
    k: int = FULL_K,
    seed: int = 0,
    limit: int | None = None,
    progress: bool = True,
    batch_size: int = 64,
    include_per_task: bool = True,
) -> dict[str, Any]:
    """Retrieve with ``retriever``, re-rank with ``reranker`` (or keep the retrieval order), score.

    Returns ``{"method", "retriever", "protocol": "full", "n_tasks", "hr@k", "ndcg@k", "mrr",
    "recall@N", "ci95", "retrieval", "invalid", "catalogue_size", ...}``.
    """
    if retrieve_n < 1:
        raise ValueError(f"retrieve_n must be >= 1, got {retrieve_n}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    tasks = list(tasks)[:limit] if limit is not None else list(tasks)
    if not tasks:
        raise ValueError("no tasks to evaluate")
    started = time.perf_counter()
    train = dataset.hide_from(tasks)
    catalogue = catalogue_of(dataset)
    check_full_tasks(tasks, train, catalogue)
    retriever.fit(train)
    fit_reranker = reranker is not None and reranker is not retriever
    if fit_reranker:
        assert reranker is not None
        reranker.fit(train)
    requests = [catalogue_request(task.task_id, task.user_id, train, catalogue, seed, task.category,
                                  task.scenario) for task in tasks]  # fmt: skip
    found = rank_all(retriever, requests, batch_size, progress)
    retrieval = [
        score_result(task, request, answer)
        for task, request, answer in zip(tasks, requests, found, strict=True)
    ]
    retrieved = [outcome.ranking[:retrieve_n] for outcome in retrieval]
    truths = [task.ground_truth or "" for task in tasks]
    if fit_reranker:
        assert reranker is not None
        second = [
            rerank_request(request, top, seed) for request, top in zip(requests, retrieved, strict=True)
        ]
        answers = rank_all(reranker, second, batch_size, progress)
        final = [
            score_result(task, request, answer)
            for task, request, answer in zip(tasks, second, answers, strict=True)
        ]
    else:
        final = [TaskOutcome(outcome.task, top, outcome.repair_counts, outcome.error)
                 for outcome, top in zip(retrieval, retrieved, strict=True)]  # fmt: skip
    rankings = [outcome.ranking for outcome in final]
    recall_key = f"recall@{retrieve_n}"
    survived = [1.0 if truth in top else 0.0 for top, truth in zip(retrieved, truths, strict=True)]
    recall_low, recall_high = bootstrap_interval(survived, resamples=CI_RESAMPLES, seed=CI_SEED)
    method_name = reranker.name if fit_reranker and reranker is not None else retriever.name
    report: dict[str, Any] = {
        "method": method_name
        if not fit_reranker
        else f"{method_name} (re-ranking {retriever.name} top {retrieve_n})",
        "reranker": method_name if fit_reranker else None,
        "retriever": retriever.name,
        "protocol": "full",
        "n_tasks": len(tasks),
        **summarize_full(rankings, truths, k),
        recall_key: recall_at_k(retrieved, truths, retrieve_n),
        "ci95": {
            **full_intervals(rankings, truths, k),
            recall_key: [round(recall_low, 4), round(recall_high, 4)],
        },
        "retrieve_n": retrieve_n,
        "k": k,
        "catalogue_size": len(catalogue),
        "mean_retrieval_candidates": sum(len(request.candidates) for request in requests) / len(requests),
        "invalid": invalid_counts(final),
        "retrieval_invalid": invalid_counts(retrieval),
        "seed": seed,
        "retriever_stats": retriever.stats(),
        "method_stats": reranker.stats() if fit_reranker and reranker is not None else retriever.stats(),
        "elapsed_s": round(time.perf_counter() - started, 3),
        "load_average": load_average(),
    }
    if include_per_task:
        report["per_task"] = [
            {"task_id": task.task_id, "user_id": task.user_id, "ground_truth": task.ground_truth,
             "retrieval_rank": rank_of(top, task.ground_truth or ""),
             "rank": rank_of(outcome.ranking, task.ground_truth or ""), "ranking": outcome.ranking[:k],
             "error": outcome.error or retrieved_outcome.error}
            for task, top, outcome, retrieved_outcome in zip(tasks, retrieved, final, retrieval, strict=True)
        ]  # fmt: skip
    return report
