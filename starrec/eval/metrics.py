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
    means = np.concatenate([
        data[rng.integers(0, data.size, size=(min(chunk, resamples - start), data.size))].mean(axis=1)
        for start in range(0, resamples, chunk)
    ])
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
