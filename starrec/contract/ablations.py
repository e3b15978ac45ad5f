"""The MARS ablations: each switches one component off, for the teacher and the student alike."""

from __future__ import annotations

from typing import Literal, get_args

Ablation = Literal["no_tools", "no_planner", "no_reflector", "no_values"]
ABLATIONS: tuple[Ablation, ...] = get_args(Ablation)

ABLATION_SWITCHES: dict[Ablation, str] = {
    "no_tools": "use_tools",
    "no_planner": "use_planner",
    "no_reflector": "use_reflector",
    "no_values": "use_values",
}
"""Ablation -> the boolean run setting (a ``Context`` field) it turns off; recorded in every trajectory."""

ABLATION_CHOICES = " | ".join(ABLATIONS)
"""For help texts: ``no_tools | no_planner | no_reflector | no_values``."""


def check_ablation(ablation: str | None) -> Ablation | None:
    """Validate an ablation name (None = the full method)."""
    if ablation is not None and ablation not in ABLATIONS:
        raise ValueError(f"unknown ablation {ablation!r}; choose one of: {', '.join(ABLATIONS)} (or none)")
    return ablation  # type: ignore[return-value]
