"""Synthetic data for the baseline tests: a planted cluster structure that only a model of
co-interaction can recover (popularity is flat inside and across clusters)."""

from __future__ import annotations

import random

from starrec.data.schema import Dataset, Interaction, RankRequest, Task

CLUSTERS = 4
USERS_PER_CLUSTER = 30
ITEMS_PER_CLUSTER = 25
HISTORY = 10


def planted_clusters(seed: int = 7) -> tuple[Dataset, list[Task]]:
    """Users of cluster c interact only with items of cluster c (uniform popularity inside a cluster).

    Each user's last interaction is the ground truth; the 19 negatives come from other
    clusters, so popularity is uninformative and only the cluster structure helps.
    """
    rng = random.Random(seed)
    items = {
        f"i{c}_{j}": {"title": f"item {c}/{j}"} for c in range(CLUSTERS) for j in range(ITEMS_PER_CLUSTER)
    }
    users: dict[str, dict[str, str]] = {}
    interactions: list[Interaction] = []
    tasks: list[Task] = []
    for c in range(CLUSTERS):
        own = [f"i{c}_{j}" for j in range(ITEMS_PER_CLUSTER)]
        others = [item for item in items if not item.startswith(f"i{c}_")]
        for u in range(USERS_PER_CLUSTER):
            user = f"u{c}_{u}"
            users[user] = {}
            chosen = rng.sample(own, HISTORY + 1)
            for t, item in enumerate(chosen):
                interactions.append(Interaction(user, item, float(1000 * t + rng.random()), 5.0))
            negatives = rng.sample(others, 19)
            tasks.append(Task(f"t_{user}", user, tuple([chosen[-1], *negatives]), chosen[-1]))
    return Dataset(users, items, interactions, domain="item", name="planted"), tasks


def requests_for(tasks: list[Task], train: Dataset, seed: int = 0) -> list[RankRequest]:
    rng = random.Random(seed)
    out = []
    for task in tasks:
        candidates = list(task.candidates)
        rng.shuffle(candidates)
        out.append(
            RankRequest(
                task.task_id, task.user_id, tuple(candidates), history=tuple(train.history(task.user_id))
            )
        )
    return out
