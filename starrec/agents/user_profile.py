"""User-profile agent: persona dimensions the data supports (age, occupation, spending, style...)."""

from __future__ import annotations

from statistics import mean

from starrec.agents.base import UserView

NAME = "user_profile"


def focus(view: UserView) -> str:
    """Rating habits: how generous and how selective the user is (decision style, spending)."""
    stars = [float(e["stars"]) for e in view.recent if e.get("stars") is not None]
    if not stars:
        return "No ratings are available."
    high = sum(s >= 4 for s in stars) / len(stars)
    return (
        f"Rating habits over the recent items: mean {mean(stars):.1f} stars, "
        f"{high:.0%} rated 4 or more, lowest {min(stars):g}."
    )
