"""The user-values vocabulary (ZOOM, arXiv 2505.00981): Schwartz's ten basic human values.

One definition, shared by the miner (evaluators and supervisors), the graph store (a profile on the
``User`` node), the ``user_values`` agent, the student chain and the value-aware prior. A profile
gives every value a weight in [0, 1], a one-line reason and the ids of the items it cites.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

SchwartzValue = Literal[
    "self_direction",
    "stimulation",
    "hedonism",
    "achievement",
    "power",
    "security",
    "conformity",
    "tradition",
    "benevolence",
    "universalism",
]
SCHWARTZ_VALUES: tuple[SchwartzValue, ...] = get_args(SchwartzValue)

VALUE_DESCRIPTIONS: dict[SchwartzValue, str] = {
    "self_direction": "independent thought and action: choosing, creating, exploring",
    "stimulation": "excitement, novelty and challenge in life",
    "hedonism": "pleasure and sensuous gratification for oneself",
    "achievement": "personal success through demonstrating competence by social standards",
    "power": "social status and prestige, control or dominance over people and resources",
    "security": "safety, harmony and stability of society, of relationships and of self",
    "conformity": "restraint of actions that might upset others or violate social norms",
    "tradition": "respect for and acceptance of the customs and ideas of one's culture or religion",
    "benevolence": "preserving and enhancing the welfare of the people one is close to",
    "universalism": "understanding, tolerance and protection of the welfare of all people and of nature",
}
"""Schwartz's definition of each value, shortened; the text agents and embeddings are given."""


@dataclass(frozen=True)
class ValueScore:
    """One value of a profile: how much it drives the user, why, and the items that show it."""

    value: SchwartzValue
    weight: float
    reason: str = ""
    item_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class ValueProfile:
    """A user's mined values: one :class:`ValueScore` per Schwartz value, in vocabulary order."""

    user_id: str
    scores: tuple[ValueScore, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = tuple(score.value for score in self.scores)
        if names != SCHWARTZ_VALUES:
            raise ValueError(
                f"value profile of user {self.user_id!r} must score each Schwartz value once, in order "
                f"({', '.join(SCHWARTZ_VALUES)}); got {', '.join(names) or 'none'}"
            )
        for score in self.scores:
            if not 0.0 <= score.weight <= 1.0:
                raise ValueError(
                    f"value profile of user {self.user_id!r}: weight of {score.value} is {score.weight}, "
                    "outside [0, 1]"
                )

    def weights(self) -> dict[SchwartzValue, float]:
        """Value -> weight."""
        return {score.value: score.weight for score in self.scores}

    def top(self, n: int = 3) -> list[ValueScore]:
        """The n strongest values, strongest first (ties in vocabulary order)."""
        return sorted(self.scores, key=lambda s: -s.weight)[:n]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored on the graph's ``User`` node and in files."""
        return {
            "user_id": self.user_id,
            "values": [
                {"value": s.value, "weight": s.weight, "reason": s.reason, "item_ids": list(s.item_ids)}
                for s in self.scores
            ],
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> ValueProfile:
        """Read :meth:`to_dict`'s form back; a missing value or a bad weight is a one-line error."""
        by_name = {entry["value"]: entry for entry in payload.get("values", [])}
        unknown = sorted(set(by_name) - set(SCHWARTZ_VALUES))
        if unknown:
            raise ValueError(f"value profile of user {payload.get('user_id')!r}: unknown values {unknown}")
        scores = tuple(
            ValueScore(
                value=name,
                weight=float(by_name[name]["weight"]) if name in by_name else 0.0,
                reason=str(by_name.get(name, {}).get("reason", "")),
                item_ids=tuple(str(i) for i in by_name.get(name, {}).get("item_ids", ())),
            )
            for name in SCHWARTZ_VALUES
        )
        return cls(user_id=str(payload["user_id"]), scores=scores, meta=dict(payload.get("meta", {})))


def uniform_profile(user_id: str, weight: float = 0.5, meta: Mapping[str, Any] | None = None) -> ValueProfile:
    """A profile that says nothing (every value at the same weight): the fallback when mining fails."""
    return ValueProfile(
        user_id=user_id,
        scores=tuple(ValueScore(value=name, weight=weight) for name in SCHWARTZ_VALUES),
        meta=dict(meta or {}),
    )


def profile_from_weights(
    user_id: str,
    weights: Mapping[str, float],
    reasons: Mapping[str, str] | None = None,
    item_ids: Mapping[str, Sequence[str]] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> ValueProfile:
    """Build a profile from partial maps (missing values weigh 0); weights are clipped into [0, 1]."""
    reasons = reasons or {}
    item_ids = item_ids or {}
    return ValueProfile(
        user_id=user_id,
        scores=tuple(
            ValueScore(
                value=name,
                weight=min(1.0, max(0.0, float(weights.get(name, 0.0)))),
                reason=reasons.get(name, ""),
                item_ids=tuple(item_ids.get(name, ())),
            )
            for name in SCHWARTZ_VALUES
        ),
        meta=dict(meta or {}),
    )
