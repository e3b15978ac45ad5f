"""Build AgentRecBench tasks from a dataset: five scenarios, seeded negatives, a manifest that says how.

A task holds out one interaction ``e`` of a user (the ground truth). What the user "had" at that
point is the *visible history*: their interactions dated strictly before ``e`` (exactly what
:meth:`Dataset.hide_from` leaves them). Every scenario below is a rule for choosing ``e``; the
thresholds live in :class:`ScenarioConfig`, each with its reason, and are written to the manifest.

Rules common to all scenarios:

* ``e`` must be the user's first interaction with its item (otherwise hiding the ground truth
  would cut the history at the earlier copy and the task would not be what it claims).
* one task per user; users are drawn uniformly without replacement among eligible users.
* 19 negatives are items the user never interacted with (at any time), drawn from the catalogue
  (every item with at least one interaction) uniformly or in proportion to interaction count.
* the written candidate list is shuffled with the seed, so the files carry no position signal.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from starrec.data.agentsociety import ITEM_FILE, REVIEW_FILE, USER_FILE
from starrec.data.schema import Dataset, Interaction, Task
from starrec.data.seeding import seeded_rng

SCENARIOS = ("classic", "cold_user", "cold_item", "evolving_long", "evolving_short")
NEGATIVE_SAMPLING = ("uniform", "popularity")


@dataclass(frozen=True, slots=True)
class ScenarioConfig:
    """Thresholds of the five scenarios (defaults are the documented benchmark settings)."""

    min_history: int = field(
        default=5,
        metadata={"help": "classic/cold_item: the visible history has at least this many interactions, "
                          "enough for a profile; also the line below which a user counts as cold."},
    )
    cold_user_min_history: int = field(
        default=1,
        metadata={"help": "cold_user: at least one visible interaction, so 'cold' means sparse, not empty "
                          "(an empty history can only be answered by popularity)."},
    )
    cold_user_max_history: int = field(
        default=4,
        metadata={"help": "cold_user: at most this many visible interactions (= min_history - 1, so cold "
                          "and warm users never overlap). MovieLens users all have >= 20 ratings, so cold "
                          "users are users observed early in their history."},
    )
    cold_item_max_interactions: int = field(
        default=5,
        metadata={"help": "cold_item: the ground-truth item has at most this many interactions by other "
                          "users in the whole dataset, hence at most this many in any training view."},
    )
    evolving_min_history: int = field(
        default=10,
        metadata={"help": "evolving_*: a long-term majority needs a longer history than a profile does."},
    )
    recent_window: int = field(
        default=5,
        metadata={"help": "evolving_short: 'recent' = the last this-many visible interactions."},
    )
    negatives: int = field(default=19, metadata={"help": "Negatives per task (AgentRecBench: 19)."})


SCENARIO_DEFINITIONS: dict[str, str] = {
    "classic": "ground truth = the user's last interaction; visible history >= {min_history}.",
    "cold_user": "ground truth = an interaction drawn uniformly (seeded) among those whose visible history "
                 "has {cold_user_min_history}..{cold_user_max_history} interactions.",
    "cold_item": "ground truth = the user's latest interaction with an item that has at most "
                 "{cold_item_max_interactions} interactions by other users in the whole dataset; visible "
                 "history >= {min_history}.",
    "evolving_long": "ground truth = the user's latest interaction whose item carries the long-term majority "
                     "category (most frequent category over the whole visible history, ties by name); "
                     "visible history >= {evolving_min_history}.",
    "evolving_short": "ground truth = the user's latest interaction whose item carries the recent majority "
                      "category (most frequent over the last {recent_window} visible interactions) and NOT "
                      "the long-term majority category, the two majorities differing; visible history >= "
                      "{evolving_min_history}.",
}


@dataclass(frozen=True, slots=True)
class Candidate:
    """A possible ground truth: the event and the user's visible history before it."""

    event: Interaction
    history: Sequence[Interaction]


def _candidates_for_user(events: Sequence[Interaction]) -> list[Candidate]:
    """Every first-time interaction with its visible history (events strictly earlier), oldest first."""
    seen: set[str] = set()
    result: list[Candidate] = []
    earlier = 0
    for event in events:
        while events[earlier].timestamp < event.timestamp:
            earlier += 1
        if event.item_id not in seen:
            result.append(Candidate(event, events[:earlier]))
        seen.add(event.item_id)
    return result


def majority_category(dataset: Dataset, history: Sequence[Interaction]) -> str | None:
    """Most frequent category label over the history's items (ties broken by name), or None."""
    return _majority(Counter(label for event in history for label in _labels(dataset, event.item_id)))


NON_TOPICAL_LABELS = frozenset({
    "to-read", "currently-reading", "read", "favorites", "favourites", "owned", "books-i-own", "owned-books",
    "default", "wish-list", "wishlist", "library", "kindle", "ebook", "ebooks", "audiobook", "audiobooks",
    "to-buy", "did-not-finish", "dnf", "unknown",
})
"""Goodreads shelves that say what the reader did, not what the book is about; every book carries
them, so they would be every user's "majority category"."""


def _labels(dataset: Dataset, item_id: str) -> tuple[str, ...]:
    labels = dict.fromkeys(dataset.item_categories(item_id))
    return tuple(label for label in labels if label.lower() not in NON_TOPICAL_LABELS)


def _majority(counts: Counter[str]) -> str | None:
    positive = [(label, count) for label, count in counts.items() if count > 0]
    return min(positive, key=lambda pair: (-pair[1], pair[0]))[0] if positive else None


@dataclass(slots=True)
class ScenarioContext:
    """What a chooser needs besides the user's options, with per-build caches."""

    dataset: Dataset
    config: ScenarioConfig
    seed: int
    label_cache: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def labels(self, item_id: str) -> tuple[str, ...]:
        if item_id not in self.label_cache:
            self.label_cache[item_id] = _labels(self.dataset, item_id)
        return self.label_cache[item_id]


Chooser = Callable[[ScenarioContext, str, list[Candidate]], Candidate | None]


def _classic(context: ScenarioContext, user: str, options: list[Candidate]) -> Candidate | None:
    last = context.dataset.history(user)[-1]
    chosen = options[-1] if options and options[-1].event is last else None
    return chosen if chosen and len(chosen.history) >= context.config.min_history else None


def _cold_user(context: ScenarioContext, user: str, options: list[Candidate]) -> Candidate | None:
    low, high = context.config.cold_user_min_history, context.config.cold_user_max_history
    eligible = [option for option in options if low <= len(option.history) <= high]
    return seeded_rng(context.seed, "cold_user", user).choice(eligible) if eligible else None


def _cold_item(context: ScenarioContext, user: str, options: list[Candidate]) -> Candidate | None:
    own = Counter(event.item_id for event in context.dataset.history(user))
    for option in reversed(options):
        if len(option.history) < context.config.min_history:
            return None
        item = option.event.item_id
        if len(context.dataset.by_item[item]) - own[item] <= context.config.cold_item_max_interactions:
            return option
    return None


def _evolving(short: bool) -> Chooser:
    """Latest option matching the long-term (or, if ``short``, a diverging recent) majority.

    Walks options newest first, keeping the history's category counts up to date by removing
    events as the history shrinks, so a user costs O(history) rather than O(history^2).
    """

    def choose(context: ScenarioContext, user: str, options: list[Candidate]) -> Candidate | None:
        config = context.config
        if not options:
            return None
        counts: Counter[str] = Counter()
        history = options[-1].history
        for event in history:
            counts.update(context.labels(event.item_id))
        size = len(history)
        for option in reversed(options):
            while size > len(option.history):
                size -= 1
                counts.subtract(context.labels(history[size].item_id))
            if size < config.evolving_min_history:
                return None
            long_term = _majority(counts)
            labels = context.labels(option.event.item_id)
            if long_term is None:
                continue
            if not short and long_term in labels:
                return option
            if short and long_term not in labels:
                recent = majority_category(context.dataset, option.history[-config.recent_window:])
                if recent is not None and recent != long_term and recent in labels:
                    return option
        return None

    return choose


CHOOSERS: dict[str, Chooser] = {
    "classic": _classic,
    "cold_user": _cold_user,
    "cold_item": _cold_item,
    "evolving_long": _evolving(short=False),
    "evolving_short": _evolving(short=True),
}


def sample_negatives(
    dataset: Dataset, user: str, count: int, sampling: str, rng: random.Random, catalogue: Sequence[str]
) -> list[str]:
    """``count`` distinct items the user never interacted with, uniform or popularity-weighted."""
    touched = {event.item_id for event in dataset.history(user)}
    pool = [item for item in catalogue if item not in touched]
    if len(pool) < count:
        raise ValueError(f"user {user!r}: only {len(pool)} never-seen items, need {count} negatives")
    if sampling == "uniform":
        return rng.sample(pool, count)
    weights = [len(dataset.by_item[item]) for item in pool]
    # Weighted sampling without replacement (Efraimidis-Spirakis keys): top-k of u^(1/w).
    keys = [(rng.random() ** (1.0 / weight), item) for item, weight in zip(pool, weights, strict=True)]
    keyed = sorted(keys, reverse=True)
    return [item for _, item in keyed[:count]]


def data_files_fingerprint(directory: Path) -> str:
    """SHA-256 over the three data files, so a manifest pins the exact data it was built from."""
    digest = hashlib.sha256()
    for name in (ITEM_FILE, USER_FILE, REVIEW_FILE):
        path = Path(directory) / name
        digest.update(name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@dataclass(slots=True)
class BuiltTasks:
    tasks: list[Task]
    manifest: dict[str, Any]


def build_tasks(
    dataset: Dataset,
    scenario: str,
    n: int,
    seed: int,
    negatives: str = "uniform",
    config: ScenarioConfig | None = None,
    fingerprint: str | None = None,
) -> BuiltTasks:
    """Select up to ``n`` users eligible for ``scenario`` and build one task each."""
    if scenario not in CHOOSERS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    if negatives not in NEGATIVE_SAMPLING:
        raise ValueError(
            f"unknown negative sampling {negatives!r}; choose one of {', '.join(NEGATIVE_SAMPLING)}"
        )
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    config = config or ScenarioConfig()
    choose = CHOOSERS[scenario]
    catalogue = sorted(dataset.by_item)
    context = ScenarioContext(dataset, config, seed)
    eligible: dict[str, Candidate] = {}
    too_few_negatives = 0
    for user in sorted(dataset.by_user):
        chosen = choose(context, user, _candidates_for_user(dataset.history(user)))
        if chosen is None:
            continue
        if len(catalogue) - len({event.item_id for event in dataset.history(user)}) < config.negatives:
            too_few_negatives += 1  # the user has seen almost the whole catalogue
            continue
        eligible[user] = chosen
    if not eligible:
        definition = SCENARIO_DEFINITIONS[scenario].format(**asdict(config))
        raise ValueError(
            f"no user of {dataset.name or 'the dataset'} is eligible for {scenario!r} ({definition}); "
            f"{too_few_negatives} excluded for having fewer than {config.negatives} unseen items"
        )
    rng = seeded_rng(seed, "tasks", scenario)
    selected = rng.sample(sorted(eligible), min(n, len(eligible)))
    tasks = []
    for index, user in enumerate(selected):
        truth = eligible[user].event.item_id
        picked = sample_negatives(dataset, user, config.negatives, negatives, rng, catalogue)
        candidates = [truth, *picked]
        rng.shuffle(candidates)
        tasks.append(Task(str(index), user, tuple(candidates), truth, dataset.domain, scenario))
    history_lengths = [len(eligible[user].history) for user in selected]
    manifest = {
        "format": "agentsociety-recommendation-tasks",
        "scenario": scenario,
        "definition": SCENARIO_DEFINITIONS[scenario].format(**asdict(config)),
        "common_rules": [
            "visible history = the user's interactions dated strictly before the ground truth "
            "(what Dataset.hide_from leaves)",
            "the ground truth is the user's first interaction with that item",
            "one task per user; users drawn uniformly without replacement among eligible users",
            "negatives: items the user never interacted with, drawn from the catalogue of items "
            "with >= 1 interaction",
            "candidate lists are shuffled with the seed",
        ],
        "thresholds": asdict(config),
        "seed": seed,
        "negatives": {
            "count": config.negatives,
            "sampling": negatives,
            "weights": "interaction count in the full dataset" if negatives == "popularity" else "equal",
        },
        "n_requested": n,
        "n_tasks": len(tasks),
        "n_eligible_users": len(eligible),
        "n_excluded_too_few_negatives": too_few_negatives,
        "history_length": {"min": min(history_lengths, default=0), "max": max(history_lengths, default=0),
                           "mean": sum(history_lengths) / len(history_lengths) if history_lengths else 0.0},
        "dataset": {"name": dataset.name, "domain": dataset.domain, **dataset.stats(),
                    "fingerprint_sha256": fingerprint},
    }
    return BuiltTasks(tasks, manifest)
