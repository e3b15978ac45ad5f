"""Recent-interest agent: short-term shifts and new needs in the latest behaviours."""

from __future__ import annotations

from starrec.agents.base import UserView, format_entries

NAME = "recent_interest"
LATEST = 3


def focus(view: UserView) -> str:
    """The very latest items, singled out: they say most about what comes next."""
    latest = view.recent[-LATEST:]
    return f"The {len(latest)} latest, newest last:\n{format_entries(latest)}" if latest else ""
