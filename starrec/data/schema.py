"""Canonical in-memory dataset: users, items and time-ordered interactions.

Every loader (AgentSociety JSON lines, MovieLens) produces a :class:`Dataset`; every
method, graph and evidence builder consumes one. Leakage control lives here too
(:meth:`Dataset.hide_from`), so there is exactly one definition of "what a method may see".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any


@dataclass(frozen=True, slots=True)
class Interaction:
    """One user-item event (a review, rating or visit)."""

    user_id: str
    item_id: str
    timestamp: float
    """Seconds since the Unix epoch (UTC); the sort key for histories."""
    stars: float | None = None
    text: str = ""
    review_id: str = ""


@dataclass(frozen=True, slots=True)
class Task:
    """One AgentRecBench ranking task: rank 20 candidates for a user.

    ``ground_truth`` is ``None`` when the task is served without its answer.
    """

    task_id: str
    user_id: str
    candidates: tuple[str, ...]
    ground_truth: str | None = None
    category: str = ""
    scenario: str = ""
    loc: tuple[float, float] = (-1.0, -1.0)

    def without_answer(self) -> Task:
        return Task(self.task_id, self.user_id, self.candidates, None, self.category, self.scenario, self.loc)


@dataclass
class Dataset:
    """Users, items (free-form metadata dicts) and interactions sorted by time.

    ``domain`` names what items are ("movie", "book", "product", "business") so prompts and
    verbalisers can speak the right language. (No ``slots``: the indices are cached properties.)
    """

    users: dict[str, dict[str, Any]]
    items: dict[str, dict[str, Any]]
    interactions: list[Interaction]
    domain: str = "item"
    name: str = ""

    def __post_init__(self) -> None:
        self.interactions = sorted(self.interactions, key=lambda x: (x.timestamp, x.user_id, x.item_id))

    @cached_property
    def by_user(self) -> dict[str, list[Interaction]]:
        """Each user's interactions, oldest first."""
        index: dict[str, list[Interaction]] = {}
        for event in self.interactions:
            index.setdefault(event.user_id, []).append(event)
        return index

    @cached_property
    def by_item(self) -> dict[str, list[Interaction]]:
        """Each item's interactions, oldest first."""
        index: dict[str, list[Interaction]] = {}
        for event in self.interactions:
            index.setdefault(event.item_id, []).append(event)
        return index

    def history(self, user_id: str) -> list[Interaction]:
        """The user's interactions, oldest first (empty for unknown users)."""
        return self.by_user.get(user_id, [])

    def item_title(self, item_id: str) -> str:
        """A human-readable name for an item, falling back to its id (memoised like the categories)."""
        title = self._title_memo.get(item_id)
        if title is None:
            title = self._title_memo[item_id] = self._find_title(item_id)
        return title

    @cached_property
    def _title_memo(self) -> dict[str, str]:
        return {}

    def _find_title(self, item_id: str) -> str:
        meta = self.items.get(item_id, {})
        for key in ("title", "name", "title_without_series"):
            value = meta.get(key)
            if value:
                return str(value)
        return item_id

    def item_categories(self, item_id: str) -> list[str]:
        """Category/genre labels of an item, whatever field the source used (a fresh list).

        Memoised per item: every run renders the user's whole history through this.
        """
        labels = self._category_memo.get(item_id)
        if labels is None:
            labels = self._category_memo[item_id] = self._parse_categories(item_id)
        return list(labels)

    @cached_property
    def _category_memo(self) -> dict[str, list[str]]:
        return {}

    def _parse_categories(self, item_id: str) -> list[str]:
        meta = self.items.get(item_id, {})
        labels: list[str] = []
        for key in ("genres", "categories", "category", "main_category", "popular_shelves"):
            value = meta.get(key)
            if isinstance(value, str):
                labels.extend(part.strip() for part in value.split(",") if part.strip())
            elif isinstance(value, list | tuple):
                for entry in value:
                    if isinstance(entry, Mapping):
                        name = entry.get("name")
                        if name:
                            labels.append(str(name))
                    elif entry:
                        labels.append(str(entry))
        return labels

    def hide_from(self, tasks: Iterable[Task]) -> Dataset:
        """The leakage-free view for these tasks.

        For each task with a ground truth, the task user's interactions with the ground-truth
        item *and everything dated at or after the first of them* are removed. Users whose
        ground truth never occurs in the data keep their full history. Everything a method,
        graph or evidence builder sees must come from this view.
        """
        cutoffs: dict[str, float] = {}
        hidden_items: dict[str, set[str]] = {}
        for task in tasks:
            if task.ground_truth is None:
                continue
            hidden_items.setdefault(task.user_id, set()).add(task.ground_truth)
            for event in self.by_user.get(task.user_id, []):
                if event.item_id == task.ground_truth:
                    previous = cutoffs.get(task.user_id)
                    cutoffs[task.user_id] = (
                        event.timestamp if previous is None else min(previous, event.timestamp)
                    )
                    break
        kept = [
            event
            for event in self.interactions
            if not (
                event.user_id in hidden_items
                and (
                    event.item_id in hidden_items[event.user_id]
                    or event.timestamp >= cutoffs.get(event.user_id, float("inf"))
                )
            )
        ]
        return Dataset(self.users, self.items, kept, domain=self.domain, name=self.name)

    def stats(self) -> dict[str, int]:
        return {"users": len(self.users), "items": len(self.items), "interactions": len(self.interactions)}


@dataclass(frozen=True, slots=True)
class RankRequest:
    """What a method sees for one task: never the ground truth, candidates already shuffled."""

    task_id: str
    user_id: str
    candidates: tuple[str, ...]
    category: str = ""
    scenario: str = ""
    history: tuple[Interaction, ...] = field(default_factory=tuple)
