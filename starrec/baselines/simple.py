"""Reference points every result is read against: random order, the given order, popularity.

``identity`` returns the candidates exactly as the harness presented them; after the seeded
shuffle it must score like ``random`` (about 0.15 HR_avg with 20 candidates), which is the
check that the shuffle removed the position signal of the published task files.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from starrec.data.schema import Dataset, RankRequest
from starrec.data.seeding import seeded_rng, stable_fraction
from starrec.eval.methods import MethodOptions
from starrec.eval.recommender import Recommender


class RandomRecommender(Recommender):
    """A seeded random permutation per task (independent of the presented order)."""

    name = "random"
    needs_data = False

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def rank(self, request: RankRequest) -> list[str]:
        order = sorted(request.candidates)
        seeded_rng(self.seed, "random-ranker", request.task_id, request.user_id).shuffle(order)
        return order


class IdentityRecommender(Recommender):
    """The candidates in the order given: measures position bias in what the method is shown."""

    name = "identity"
    needs_data = False

    def rank(self, request: RankRequest) -> list[str]:
        return list(request.candidates)


class PopRecommender(Recommender):
    """Most popular first: number of distinct users per item in the training view.

    Ties (including items never seen in training) are broken by a seeded per-item key, never
    by the presented order, so the result is independent of candidate position.
    """

    name = "pop"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.popularity: Counter[str] = Counter()
        self._known_users: set[str] = set()
        self.requests = 0
        self.unknown_users = 0
        self.unseen_candidates = 0
        self.all_unseen_requests = 0

    def fit(self, train: Dataset) -> None:
        self.popularity = Counter(
            {item: len({event.user_id for event in events}) for item, events in train.by_item.items()}
        )
        self._known_users = set(train.by_user)

    def rank(self, request: RankRequest) -> list[str]:
        self.requests += 1
        self.unknown_users += request.user_id not in self._known_users
        unseen = sum(item not in self.popularity for item in request.candidates)
        self.unseen_candidates += unseen
        self.all_unseen_requests += unseen == len(request.candidates)
        return sorted(
            request.candidates,
            key=lambda item: (-self.popularity[item], stable_fraction(self.seed, "pop-tie", item)),
        )

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "unknown_users": self.unknown_users,
            "unseen_candidates": self.unseen_candidates,
            "all_candidates_unseen": self.all_unseen_requests,
        }


def make_random(options: MethodOptions) -> Recommender:
    return RandomRecommender(options.seed)


def make_identity(options: MethodOptions) -> Recommender:
    return IdentityRecommender()


def make_pop(options: MethodOptions) -> Recommender:
    return PopRecommender(options.seed)
