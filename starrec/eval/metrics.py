"""Pure ranking metrics with one signature: ``(rankings, ground_truths, k) -> float``.

``rankings[i]`` is the full ordered candidate list for task ``i`` and ``ground_truths[i]`` its
held-out item. Inputs are validated instead of silently truncated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from starrec.contract.trajectory import HIT_KS, hit_at_k


def _validate(rankings: Sequence[Sequence[str]], ground_truths: Sequence[str], k: int) -> None:
    if len(rankings) != len(ground_truths):
        raise ValueError(
            f"{len(rankings)} rankings but {len(ground_truths)} ground truths; they must pair up"
        )
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def hit_rate_at_k(rankings: Sequence[Sequence[str]], ground_truths: Sequence[str], k: int) -> float:
    """Fraction of tasks whose ground truth is among the first ``k`` ranked items."""
    _validate(rankings, ground_truths, k)
    if not rankings:
        return 0.0
    hits = sum(hit_at_k(ranking, truth, k) for ranking, truth in zip(rankings, ground_truths, strict=True))
    return hits / len(rankings)


def ndcg_at_k(rankings: Sequence[Sequence[str]], ground_truths: Sequence[str], k: int) -> float:
    """Mean NDCG@k with one relevant item per task (ideal DCG = 1)."""
    _validate(rankings, ground_truths, k)
    if not rankings:
        return 0.0
    total = 0.0
    for ranking, truth in zip(rankings, ground_truths, strict=True):
        top = list(ranking)[:k]
        if truth in top:
            total += 1.0 / math.log2(top.index(truth) + 2)
    return total / len(rankings)


def hr_avg(
    rankings: Sequence[Sequence[str]], ground_truths: Sequence[str], ks: Sequence[int] = (1, 3, 5)
) -> float:
    """AgentRecBench's headline number: the mean of HR@1, HR@3 and HR@5."""
    return sum(hit_rate_at_k(rankings, ground_truths, k) for k in ks) / len(ks)


def recall_at_k(rankings: Sequence[Sequence[str]], ground_truths: Sequence[str], k: int) -> float:
    """Fraction of tasks whose one relevant item is among the first ``k`` (a retriever's Recall@N).

    With one relevant item per task, recall equals the hit rate; the separate name says which
    list it is read on (the retrieved top N, not the final ranking).
    """
    return hit_rate_at_k(rankings, ground_truths, k)


def mean_reciprocal_rank(rankings: Sequence[Sequence[str]], ground_truths: Sequence[str], k: int) -> float:
    """Mean of ``1 / rank`` of the ground truth within the first ``k`` items (0 when it is not there).

    In the full-corpus protocol ``k`` is the retrieved N: the ground truth ranked past the
    retrieved list counts 0, as in any two-stage evaluation.
    """
    _validate(rankings, ground_truths, k)
    if not rankings:
        return 0.0
    total = 0.0
    for ranking, truth in zip(rankings, ground_truths, strict=True):
        position = rank_of(list(ranking)[:k], truth)
        total += 1.0 / position if position is not None else 0.0
    return total / len(rankings)


def expected_sampled_hr_avg(
    scored_above: Sequence[int], unseen: Sequence[int], negatives: int = 19, ks: Sequence[int] = HIT_KS
) -> float:
    """Expected HR_avg of the 1 + ``negatives`` protocol, given each ground truth's catalogue rank.

    ``scored_above[i]`` of the ``unseen[i]`` items user ``i`` never touched score above its ground
    truth; ``negatives`` are drawn uniformly without replacement from those, so the ground truth
    lands in the top k exactly when at most k-1 of them come from above it (a hypergeometric
    count). Exact, so a validation curve has no sampling noise.
    """
    import numpy as np
    from scipy.stats import hypergeom

    if len(scored_above) != len(unseen):
        raise ValueError(f"{len(scored_above)} ranks but {len(unseen)} pool sizes; they must pair up")
    if not len(scored_above):
        return 0.0
    above = np.asarray(scored_above, dtype=np.int64)
    pool = np.asarray(unseen, dtype=np.int64)
    if np.any(above > pool) or np.any(above < 0):
        raise ValueError("every scored_above must lie in [0, unseen]")
    draws = np.minimum(negatives, pool)
    hits = [hypergeom.cdf(k - 1, pool, above, draws) for k in ks]
    return float(np.mean(np.mean(hits, axis=0)))


def full_corpus_metric_names(k: int = 10) -> tuple[str, str, str]:
    """The keys of :func:`summarize_full`: ``hr@k``, ``ndcg@k``, ``mrr``."""
    return (f"hr@{k}", f"ndcg@{k}", "mrr")


def per_task_full_scores(
    rankings: Sequence[Sequence[str]], ground_truths: Sequence[str], k: int = 10
) -> dict[str, list[float]]:
    """Each task's HR@k, NDCG@k and reciprocal rank (over the whole given list) for the full protocol."""
    _validate(rankings, ground_truths, k)
    hr, ndcg, mrr = full_corpus_metric_names(k)
    scores: dict[str, list[float]] = {hr: [], ndcg: [], mrr: []}
    for ranking, truth in zip(rankings, ground_truths, strict=True):
        position = rank_of(ranking, truth)
        inside = position is not None and position <= k
        scores[hr].append(1.0 if inside else 0.0)
        scores[ndcg].append(1.0 / math.log2(position + 1) if inside and position else 0.0)
        scores[mrr].append(1.0 / position if position else 0.0)
    return scores


def summarize_full(
    rankings: Sequence[Sequence[str]], ground_truths: Sequence[str], k: int = 10
) -> dict[str, float]:
    """The full-corpus report: HR@k, NDCG@k and MRR (reciprocal rank over the whole re-ranked list)."""
    hr, ndcg, mrr = full_corpus_metric_names(k)
    longest = max((len(ranking) for ranking in rankings), default=1)
    return {
        hr: hit_rate_at_k(rankings, ground_truths, k),
        ndcg: ndcg_at_k(rankings, ground_truths, k),
        mrr: mean_reciprocal_rank(rankings, ground_truths, max(longest, 1)),
    }


def rank_of(ranking: Sequence[str], ground_truth: str) -> int | None:
    """1-based position of the ground truth, or ``None`` when absent."""
    for position, item in enumerate(ranking, start=1):
        if item == ground_truth:
            return position
    return None


def summarize(rankings: Sequence[Sequence[str]], ground_truths: Sequence[str]) -> dict[str, float]:
    """The standard report: HR@1/3/5, HR_avg and NDCG@5."""
    return {
        "hr@1": hit_rate_at_k(rankings, ground_truths, 1),
        "hr@3": hit_rate_at_k(rankings, ground_truths, 3),
        "hr@5": hit_rate_at_k(rankings, ground_truths, 5),
        "hr_avg": hr_avg(rankings, ground_truths),
        "ndcg@5": ndcg_at_k(rankings, ground_truths, 5),
    }


def per_task_scores(
    rankings: Sequence[Sequence[str]], ground_truths: Sequence[str]
) -> dict[str, list[float]]:
    """Each task's contribution to every metric of :func:`summarize` (their means are the report)."""
    _validate(rankings, ground_truths, 1)
    scores: dict[str, list[float]] = {name: [] for name in ("hr@1", "hr@3", "hr@5", "hr_avg", "ndcg@5")}
    for ranking, truth in zip(rankings, ground_truths, strict=True):
        position = rank_of(ranking, truth)
        hits = [float(hit_at_k(ranking, truth, k)) for k in HIT_KS]
        scores["hr@1"].append(hits[0])
        scores["hr@3"].append(hits[1])
        scores["hr@5"].append(hits[2])
        scores["hr_avg"].append(sum(hits) / 3)
        in_top5 = position is not None and position <= 5
        scores["ndcg@5"].append(1.0 / math.log2(position + 1) if in_top5 and position else 0.0)
    return scores


def bootstrap_interval(
    values: Sequence[float], *, resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (fixed seed: same data, same interval)."""
    import numpy as np

    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    # Resampled in chunks so memory stays ~a few MB whatever the task count.
    chunk = max(1, 2_000_000 // data.size)
    means = np.concatenate(
        [
            data[rng.integers(0, data.size, size=(min(chunk, resamples - start), data.size))].mean(axis=1)
            for start in range(0, resamples, chunk)
        ]
    )
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return (float(low), float(high))


def confidence_intervals(
    rankings: Sequence[Sequence[str]],
    ground_truths: Sequence[str],
    *,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """A bootstrap interval for every metric of :func:`summarize`, all from the same resampled tasks."""
    scores = per_task_scores(rankings, ground_truths)
    return {
        name: bootstrap_interval(values, resamples=resamples, level=level, seed=seed)
        for name, values in scores.items()
    }
