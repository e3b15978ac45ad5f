"""Historical-interest agent: stable long-term interests with noise filtered out."""

from __future__ import annotations

from collections import Counter

from starrec.agents.base import UserView

NAME = "historical_interest"


def focus(view: UserView) -> str:
    """Category counts over the items the agent can see (recurring = stable, singletons = noise)."""
    counts = Counter(label for entry in view.recent for label in entry.get("categories", []))
    if not counts:
        return ""
    common = ", ".join(f"{name} x{n}" for name, n in counts.most_common(6))
    return f"Category counts in the recent items: {common}. Compare them with the long-term summary."
