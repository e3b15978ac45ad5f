"""Recent-interest agent: short-term shifts and new needs in the latest behaviours."""

from __future__ import annotations

from typing import Any

from starrec.agents.analyst import Analysis, analyse
from starrec.agents.base import AgentEnv, Counters, UserView, format_entries

NAME = "recent_interest"
LATEST = 3


def focus(view: UserView) -> str:
    """The very latest items, singled out: they say most about what comes next."""
    latest = view.recent[-LATEST:]
    return f"The {len(latest)} latest, newest last:\n{format_entries(latest)}" if latest else ""


async def run(
    env: AgentEnv,
    view: UserView,
    counters: Counters,
    correction: str | None = None,
    previous: dict[str, Any] | None = None,
) -> Analysis:
    return await analyse(env, NAME, view, counters, focus(view), correction, previous)
