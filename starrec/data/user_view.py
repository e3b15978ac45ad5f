"""What the agents and the student see of a user: history entries, candidates and their prompt text.

A request's history and candidates become plain JSON entries (:func:`history_entries`,
:func:`candidate_entries`), each rendered as one compact line (:func:`format_entry`); the same
lines reach the MARS agents (through :class:`UserView`) and the STAR student (through
``Trajectory.prompt``), so teacher and student read the same words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from typing_extensions import TypedDict  # pydantic (Studio's schemas) needs it on Python < 3.12

from starrec.data.schema import Dataset, RankRequest


class HistoryEntry(TypedDict, total=False):
    """One past behaviour as the agents see it."""

    item_id: str
    title: str
    categories: list[str]
    stars: float | None
    date: str
    review: str


class Candidate(TypedDict, total=False):
    id: str
    title: str
    categories: list[str]


@lru_cache(maxsize=65536)
def _date(timestamp: float) -> str:
    """The UTC day of a timestamp; cached, as a user's history is rendered once per run."""
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d")


def history_entries(request: RankRequest, dataset: Dataset, review_chars: int = 160) -> list[HistoryEntry]:
    """The request's history as agent-readable entries (titles and categories from the dataset)."""
    entries: list[HistoryEntry] = []
    title, categories = dataset.item_title, dataset.item_categories
    for event in request.history:
        item = event.item_id
        entry: HistoryEntry = {
            "item_id": item,
            "title": title(item),
            "categories": categories(item)[:4],
            "stars": event.stars,
            "date": _date(event.timestamp),
        }
        if event.text:
            entry["review"] = event.text[:review_chars]
        entries.append(entry)
    return entries


def candidate_entries(candidates: Sequence[str], dataset: Dataset) -> list[Candidate]:
    return [
        {"id": item, "title": dataset.item_title(item), "categories": dataset.item_categories(item)[:4]}
        for item in candidates
    ]


DOMAIN_WORDS: dict[str, dict[str, str]] = {
    "movie": {"item": "movie", "items": "movies", "verb": "watched", "user": "viewer", "users": "viewers"},
    "book": {"item": "book", "items": "books", "verb": "read", "user": "reader", "users": "readers"},
    "product": {
        "item": "product",
        "items": "products",
        "verb": "bought",
        "user": "shopper",
        "users": "shoppers",
    },
    "business": {
        "item": "business",
        "items": "businesses",
        "verb": "visited",
        "user": "customer",
        "users": "customers",
    },
    "item": {"item": "item", "items": "items", "verb": "interacted with", "user": "user", "users": "users"},
}
"""How prompts talk about each domain (movies are watched, businesses visited, ...)."""


def domain_words(domain: str) -> dict[str, str]:
    key = domain.lower().rstrip("s") if domain else "item"
    if key == "busines":
        key = "business"
    return DOMAIN_WORDS.get(key, DOMAIN_WORDS["item"])


def format_entry(entry: dict[str, Any]) -> str:
    """One history item or candidate as a compact line: ``[id] Title | genres | 4 stars | date``."""
    get = entry.get
    item = get("item_id")
    if item is None:
        item = get("id", "")
    line = f"[{item}] {get('title', item)}"
    categories = get("categories")
    if categories:
        line += " | " + ", ".join(categories[:3])
    stars = get("stars")
    if stars is not None:
        line += f" | {stars:g} stars"
    date = get("date")
    if date:
        line += f" | {date}"
    review = get("review")
    if review:
        line += f' | "{review}"'
    return line


def format_entries(entries: Sequence[dict[str, Any]]) -> str:
    return "\n".join(f"- {format_entry(entry)}" for entry in entries) or "- (none)"


@dataclass
class UserView:
    """What the agents know about the request, rendered once into prompt text."""

    user_id: str
    domain: str
    summary: str
    recent: list[dict[str, Any]]
    candidates: list[dict[str, Any]]

    def history_text(self) -> str:
        words = domain_words(self.domain)
        parts = [f"User: {self.user_id}"]
        if self.summary:
            parts.append(f"Long-term summary of earlier {words['items']}:\n{self.summary}")
        parts.append(
            f"Most recent {words['items']} {words['verb']} (oldest first):\n{format_entries(self.recent)}"
        )
        return "\n\n".join(parts)

    def candidates_text(self) -> str:
        return format_entries(self.candidates)
