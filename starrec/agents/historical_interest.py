"""Historical-interest agent: stable long-term interests with noise filtered out."""

from __future__ import annotations

from collections import Counter
from typing import Any

from starrec.agents.analyst import Analysis, analyse
from starrec.agents.base import AgentEnv, Counters, UserView

NAME = "historical_interest"


def focus(view: UserView) -> str:
    """Category counts over the items the agent can see (recurring = stable, singletons = noise)."""
    counts = Counter(label for entry in view.recent for label in entry.get("categories", []))
    if not counts:
        return ""
    common = ", ".join(f"{name} x{n}" for name, n in counts.most_common(6))
    return f"Category counts in the recent items: {common}. Compare them with the long-term summary."


async def run(
    env: AgentEnv,
    view: UserView,
    counters: Counters,
    correction: str | None = None,
    previous: dict[str, Any] | None = None,
) -> Analysis:
    return await analyse(env, NAME, view, counters, focus(view), correction, previous)
