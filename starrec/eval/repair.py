"""Turn whatever a method returned into a valid permutation of the candidates, and say what was fixed.

Shared by the evaluation harness, the MARS ranker and the STAR inference loop so that every
method is repaired by the same rule and every repair is counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(slots=True)
class RankingRepair:
    """What :func:`repair_ranking` changed; all zero means the ranking was already valid."""

    hallucinated: list[str] = field(default_factory=list)
    """Returned ids that are not candidates (dropped)."""
    duplicates: list[str] = field(default_factory=list)
    """Candidates returned more than once (later copies dropped)."""
    missing: list[str] = field(default_factory=list)
    """Candidates never returned (appended in fallback order)."""

    @property
    def needed(self) -> bool:
        return bool(self.hallucinated or self.duplicates or self.missing)

    def counts(self) -> dict[str, int]:
        return {
            "hallucinated": len(self.hallucinated),
            "duplicates": len(self.duplicates),
            "missing": len(self.missing),
        }


def repair_ranking(
    ranking: Sequence[str], candidates: Sequence[str], fallback: Sequence[str] | None = None
) -> tuple[list[str], RankingRepair]:
    """Return a permutation of ``candidates`` that keeps ``ranking``'s valid order.

    Missing candidates are appended in ``fallback`` order (default: the order the candidates
    were presented in, which the harness has already shuffled, so the fallback is uninformative
    rather than a leak).
    """
    allowed = set(candidates)
    repair = RankingRepair()
    seen: set[str] = set()
    repaired: list[str] = []
    for raw in ranking:
        item = str(raw).strip()
        if item not in allowed:
            repair.hallucinated.append(item)
        elif item in seen:
            repair.duplicates.append(item)
        else:
            seen.add(item)
            repaired.append(item)
    order = list(fallback) if fallback is not None else list(candidates)
    listed = set(order)  # built once: rebuilt per candidate it made a full-catalogue repair quadratic
    order += [item for item in candidates if item not in listed]
    for item in order:
        if item in allowed and item not in seen:
            repair.missing.append(item)
            seen.add(item)
            repaired.append(item)
    return repaired, repair
