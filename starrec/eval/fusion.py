"""Fusing an LLM's ranking with the collaborative prior so that a weak model cannot pull it down.

**Agreement-weighted fusion** (``ranker_fusion="agreement"``, the MARS default):

1. ``valid``: the ids the LLM itself ranked, hallucinations and repeats dropped (m of n).
2. ``tau``: Kendall's tau between the LLM's order of those m ids and the prior's order of them.
3. Under an uninformative order, tau has mean 0 and standard deviation
   ``sqrt(2 (2m + 5) / (9 m (m - 1)))``; ``tau0 = z`` times that (z = 1.645: one-sided 5%).
   ``trust = clip((tau - tau0) / (1 - tau0), 0, 1)``: an order no better than chance gets none.
4. ``weight = max_weight * (m / n) * trust``.
5. Borda points are ``(n - position) / n``. The LLM's points come from its order (repaired,
   missing ids appended in prior order). The prior's points are the mean of its Borda points and,
   when scores are given, the candidate's score divided by the best score. Candidates are ordered
   by ``(1 - weight) * prior + weight * llm``, ties in prior order, **within runs of near-ties**:
   with scores, neighbours in the prior whose normalised scores differ by at most ``near_tie``
   (default 0.1 of the best score) form one run, and runs keep their prior order, so the LLM can
   swap candidates the evidence barely separates and never ones it clearly separates.

So an echo of the candidates as shown (they are shown in prior order) reproduces the prior; prose
with no ids, hallucinated or duplicated ids, and random permutations get (almost) no weight; an
LLM whose order agrees with the evidence beyond chance may reorder near-ties of the prior.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from starrec.eval.repair import repair_ranking

DEFAULT_MAX_WEIGHT = 0.5
DEFAULT_Z = 1.645
DEFAULT_NEAR_TIE = 0.1
"""Largest gap between neighbouring normalised prior scores that the LLM may reorder across."""


@dataclass(frozen=True, slots=True)
class FusionResult:
    """The fused ranking and why the LLM got the weight it got."""

    ranking: list[str]
    weight: float
    valid: int
    """Distinct candidate ids the LLM ranked itself."""
    tau: float
    """Kendall's tau between the LLM's and the prior's order of those ids (0 when fewer than 3)."""
    threshold: float
    """tau an uninformative order exceeds with probability 5% (at z = 1.645)."""

    def as_dict(self) -> dict[str, float | int]:
        return {"weight": self.weight, "valid": self.valid, "tau": self.tau, "threshold": self.threshold}


def valid_ids(ranking: Sequence[str], candidates: Sequence[str]) -> list[str]:
    """The distinct candidate ids of ``ranking``, in its order (hallucinations and repeats dropped)."""
    allowed = set(candidates)
    seen: set[str] = set()
    kept: list[str] = []
    for raw in ranking:
        item = str(raw).strip()
        if item in allowed and item not in seen:
            seen.add(item)
            kept.append(item)
    return kept


def kendall_tau(order: Sequence[str], reference: Sequence[str]) -> float:
    """Kendall's tau-a between ``order`` and ``reference`` restricted to ``order``'s items (no ties)."""
    position = {item: index for index, item in enumerate(reference)}
    ranks = [position[item] for item in order if item in position]
    m = len(ranks)
    if m < 2:
        return 0.0
    concordant = discordant = 0
    for i in range(m):
        for j in range(i + 1, m):
            if ranks[i] < ranks[j]:
                concordant += 1
            else:
                discordant += 1
    return (concordant - discordant) / (m * (m - 1) / 2)


def chance_threshold(m: int, z: float = DEFAULT_Z) -> float:
    """The tau a random order of m items exceeds with the one-sided probability z stands for."""
    if m < 3:
        return 1.0
    return z * math.sqrt(2 * (2 * m + 5) / (9 * m * (m - 1)))


def agreement_fusion(
    llm_ranking: Sequence[str],
    prior: Sequence[str],
    *,
    prior_scores: Mapping[str, float] | None = None,
    max_weight: float = DEFAULT_MAX_WEIGHT,
    z: float = DEFAULT_Z,
    near_tie: float = DEFAULT_NEAR_TIE,
) -> FusionResult:
    """Fuse ``llm_ranking`` (raw, may be invalid) into ``prior`` (a full order of the candidates).

    ``prior_scores``: the prior's scores (higher is better); they decide which candidates the
    evidence separates clearly (never reordered) and weigh the prior's points.
    """
    if not 0.0 <= max_weight <= 1.0:
        raise ValueError(f"max_weight must be in [0, 1], got {max_weight}")
    if len(set(prior)) != len(prior):
        raise ValueError("agreement_fusion: the prior repeats a candidate; pass each candidate once")
    n = len(prior)
    if n == 0:
        return FusionResult([], 0.0, 0, 0.0, 1.0)
    valid = valid_ids(llm_ranking, prior)
    m = len(valid)
    tau = kendall_tau(valid, prior) if m >= 3 else 0.0
    threshold = chance_threshold(m, z)
    trust = 0.0 if threshold >= 1.0 else min(max((tau - threshold) / (1.0 - threshold), 0.0), 1.0)
    weight = max_weight * (m / n) * trust
    repaired, _ = repair_ranking(valid, prior, fallback=prior)
    prior_points = {item: (n - index) / n for index, item in enumerate(prior)}
    best = max((prior_scores or {}).values(), default=0.0)
    normalised: dict[str, float] | None = None
    if prior_scores is not None and best > 0:
        normalised = {item: max(prior_scores.get(item, 0.0), 0.0) / best for item in prior}
        prior_points = {item: 0.5 * points + 0.5 * normalised[item] for item, points in prior_points.items()}
    llm_points = {item: (n - index) / n for index, item in enumerate(repaired)}
    position = {item: index for index, item in enumerate(prior)}

    def fused_key(item: str) -> tuple[float, int]:
        return (-((1.0 - weight) * prior_points[item] + weight * llm_points[item]), position[item])

    fused: list[str] = []
    for run in near_tie_runs(prior, normalised, near_tie):
        fused.extend(sorted(run, key=fused_key))
    return FusionResult(fused, weight, m, tau, threshold)


def near_tie_runs(
    prior: Sequence[str], normalised: Mapping[str, float] | None, near_tie: float
) -> list[list[str]]:
    """The prior cut wherever neighbours' normalised scores differ by more than ``near_tie``.

    Without scores the whole prior is one run (Borda points alone then bound the LLM's moves).
    """
    if normalised is None or not prior:
        return [list(prior)]
    runs: list[list[str]] = [[prior[0]]]
    for previous, item in itertools.pairwise(prior):
        if normalised[previous] - normalised[item] > near_tie:
            runs.append([])
        runs[-1].append(item)
    return runs


def prior_points(prior: Sequence[str], prior_scores: Mapping[str, float] | None = None) -> dict[str, float]:
    """A prior's points in [0, 1]: Borda ``(n - position) / n``, averaged with score / best score when
    scores are given (the prior points of :func:`agreement_fusion`)."""
    n = len(prior)
    points = {item: (n - index) / n for index, item in enumerate(prior)}
    best = max((prior_scores or {}).values(), default=0.0)
    if prior_scores is not None and best > 0:
        points = {
            item: 0.5 * value + 0.5 * max(prior_scores.get(item, 0.0), 0.0) / best
            for item, value in points.items()
        }
    return points


def value_prior(
    prior: Sequence[str],
    affinity: Mapping[str, float],
    weight: float,
    prior_scores: Mapping[str, float] | None = None,
) -> tuple[list[str], dict[str, float]]:
    """Blend a prior order with user-item value affinity (ZOOM values, docs/values.md).

    Each candidate scores ``(1 - weight) * prior points + weight * (affinity + 1) / 2`` (affinity
    in [-1, 1], a candidate without one counts 0); candidates are ordered by that score, ties in
    prior order. Returns the order and the blended scores (in [0, 1], usable as ``prior_scores``).
    ``weight`` 0 returns the prior order unchanged (and its points).
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"value weight must be in [0, 1], got {weight}")
    points = prior_points(prior, prior_scores)
    if weight == 0.0:
        return list(prior), points
    blended = {
        item: (1.0 - weight) * points[item] + weight * (_clip(affinity.get(item, 0.0)) + 1.0) / 2
        for item in prior
    }
    position = {item: index for index, item in enumerate(prior)}
    return sorted(prior, key=lambda item: (-blended[item], position[item])), blended


def _clip(value: float) -> float:
    return min(max(value, -1.0), 1.0)
