"""Torch-free pieces every learned baseline shares (ItemKNN imports only these).

The id index and binary user x item matrix of the leakage-free training view, candidate
ordering with a popularity fallback, and the fallback counters reported in ``stats()``.
(``--option key=value`` overrides of config dataclasses: :func:`starrec.eval.methods.config_with_overrides`.)
"""

from __future__ import annotations

import dataclasses
import time
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from starrec.data.schema import Dataset
from starrec.eval.recommender import Recommender


def config_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as a plain, JSON-serialisable dict."""
    return dataclasses.asdict(config)


@dataclass(frozen=True)
class InteractionIndex:
    """Contiguous integer ids and the binary user x item matrix of a training view.

    Only users and items that occur in at least one training interaction are indexed: an
    id outside the index has nothing to learn from and gets the popularity fallback.
    """

    user_ids: tuple[str, ...]
    item_ids: tuple[str, ...]
    user_index: dict[str, int]
    item_index: dict[str, int]
    matrix: sp.csr_matrix
    """users x items, 1.0 where the user interacted with the item at least once."""
    popularity: np.ndarray
    """Number of distinct training users per item (the ``pop`` signal)."""

    @classmethod
    def from_dataset(cls, train: Dataset) -> InteractionIndex:
        if not train.interactions:
            raise ValueError(f"training view of dataset {train.name!r} has no interactions; nothing to fit")
        user_ids = tuple(sorted(train.by_user))
        item_ids = tuple(sorted(train.by_item))
        user_index = {user: position for position, user in enumerate(user_ids)}
        item_index = {item: position for position, item in enumerate(item_ids)}
        rows = np.fromiter((user_index[e.user_id] for e in train.interactions), dtype=np.int64)
        cols = np.fromiter((item_index[e.item_id] for e in train.interactions), dtype=np.int64)
        matrix = sp.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(user_ids), len(item_ids))
        )
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        popularity = np.asarray(matrix.sum(axis=0)).ravel().astype(np.float64)
        return cls(user_ids, item_ids, user_index, item_index, matrix, popularity)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)


@dataclass(frozen=True)
class Ranked:
    """A candidate ordering and how many candidates fell back to popularity / were cold."""

    ranking: list[str]
    unscored: int
    cold: int


@dataclass
class FallbackCounts:
    """How often a baseline could not use what it learned (merged into the eval report)."""

    requests: int = 0
    unknown_user: int = 0
    """Requests whose user has no training interactions (ItemKNN: no known history item):
    ranked by popularity alone."""
    cold_candidates: int = 0
    """Candidates with no training interactions: ranked after every known candidate."""
    popularity_ties: int = 0
    """Known candidates of a known user without a model score (e.g. no similarity to the
    history), ordered by popularity."""

    def record(self, ranked: Ranked, *, unknown_user: bool = False) -> list[str]:
        """Count one request's fallbacks and return its ranking."""
        self.requests += 1
        self.cold_candidates += ranked.cold
        if unknown_user:
            self.unknown_user += 1
        else:
            self.popularity_ties += ranked.unscored
        return ranked.ranking

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def rank_candidates(
    candidates: Sequence[str], scores: Mapping[str, float], index: InteractionIndex
) -> Ranked:
    """Order candidates by score, then popularity, then the (already shuffled) given order.

    Known items missing from ``scores`` have no model score and are ordered by popularity
    after every scored one; unknown (cold) items go last.
    """
    keyed: list[tuple[int, float, float, int, str]] = []
    unscored = cold = 0
    for position, item in enumerate(candidates):
        column = index.item_index.get(item)
        popularity = float(index.popularity[column]) if column is not None else 0.0
        if column is None:
            cold += 1
            keyed.append((2, 0.0, 0.0, position, item))
        elif item in scores:
            keyed.append((0, -scores[item], -popularity, position, item))
        else:
            unscored += 1
            keyed.append((1, 0.0, -popularity, position, item))
    return Ranked([entry[-1] for entry in sorted(keyed)], unscored, cold)


class IndexedRecommender(Recommender):
    """What every learned baseline keeps: its config, the training index, fallback counts, fit time."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.counts = FallbackCounts()
        self.fit_seconds = 0.0
        self.fit_cpu_seconds = 0.0
        self._index: InteractionIndex | None = None

    @abstractmethod
    def learn(self, train: Dataset, index: InteractionIndex) -> None:
        """Method-specific fitting on the training view and its index."""

    def fit(self, train: Dataset) -> None:
        started, cpu_started = time.perf_counter(), time.process_time()
        index = InteractionIndex.from_dataset(train)
        self.learn(train, index)
        self._index = index
        self.fit_seconds = time.perf_counter() - started
        self.fit_cpu_seconds = time.process_time() - cpu_started

    def require_index(self) -> InteractionIndex:
        if self._index is None:
            raise RuntimeError(f"{self.name}: rank() called before fit(); fit it on the training view first")
        return self._index

    def stats(self) -> dict[str, Any]:
        return {
            "fallbacks": self.counts.as_dict(),
            "config": config_dict(self.config),
            "fit_seconds": round(self.fit_seconds, 3),
            "fit_cpu_seconds": round(self.fit_cpu_seconds, 3),
        }
