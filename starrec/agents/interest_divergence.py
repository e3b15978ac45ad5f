"""Interest-divergence agent: plausible new directions (association, scenario, group commonality)."""

from __future__ import annotations

from collections import Counter

from starrec.agents.base import UserView

NAME = "interest_divergence"


def focus(view: UserView) -> str:
    """Categories the candidates offer that the user's recent items lack: candidate new directions."""
    seen = {label for entry in view.recent for label in entry.get("categories", [])}
    offered = Counter(label for entry in view.candidates for label in entry.get("categories", []))
    new = [name for name, _ in offered.most_common() if name not in seen][:6]
    return f"Categories among the candidates that are new for this user: {', '.join(new)}." if new else ""
