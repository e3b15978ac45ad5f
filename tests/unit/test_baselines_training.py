"""Early stopping, refit, the hold-out it validates on, and SASRec."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from baselines_fixtures import planted_clusters, requests_for

from starrec.baselines.bpr import make_bpr
from starrec.baselines.sasrec import make_sasrec, windows
from starrec.baselines.training import Holdout, TrainingCurve
from starrec.data.schema import Dataset, Interaction, Task
from starrec.eval.methods import MethodOptions
from starrec.eval.metrics import hit_rate_at_k

BPR_FAST = {"embedding_dim": 16, "batch_size": 256, "learning_rate": 0.02}


@pytest.fixture(scope="module")
def planted() -> tuple[Dataset, list[Task]]:
    dataset, tasks = planted_clusters()
    return dataset.hide_from(tasks), tasks


def cycle_dataset(
    seed: int = 3, users: int = 60, items: int = 30, length: int = 14
) -> tuple[Dataset, list[Task]]:
    """Every user walks the same item cycle from a random start: the next item is the successor."""
    rng = random.Random(seed)
    names = [f"i{j}" for j in range(items)]
    interactions: list[Interaction] = []
    tasks: list[Task] = []
    for u in range(users):
        start = rng.randrange(items)
        walk = [names[(start + step) % items] for step in range(length + 1)]
        interactions += [Interaction(f"u{u}", item, float(t)) for t, item in enumerate(walk)]
        negatives = rng.sample([name for name in names if name not in walk], 15)
        tasks.append(Task(f"t{u}", f"u{u}", (walk[-1], *negatives), walk[-1]))
    dataset = Dataset({f"u{u}": {} for u in range(users)}, {n: {} for n in names}, interactions, name="cycle")
    return dataset, tasks


def test_holdout_hides_each_held_out_users_last_interaction(planted: tuple[Dataset, list[Task]]) -> None:
    train, _ = planted
    holdout = Holdout.carve(train, users=25, seed=1)
    assert len(holdout.tasks) == 25
    for task in holdout.tasks:
        history = train.history(task.user_id)
        assert task.ground_truth == history[-1].item_id and task.ground_truth in task.candidates
        assert holdout.fit_view.history(task.user_id) == history[:-1]
    assert len(holdout.fit_view.interactions) == len(train.interactions) - 25
    assert Holdout.carve(train, users=25, seed=1).tasks == holdout.tasks


def test_holdout_without_eligible_users_names_the_fix() -> None:
    tiny = Dataset({}, {}, [Interaction("u", "a", 0.0), Interaction("u", "b", 1.0)], name="tiny")
    with pytest.raises(ValueError, match="set early_stopping=false"):
        Holdout.carve(tiny, users=5, seed=0)


def test_early_stopping_stops_and_refits_for_the_best_epoch(planted: tuple[Dataset, list[Task]]) -> None:
    train, tasks = planted
    method = make_bpr(
        MethodOptions(
            extra={**BPR_FAST, "max_epochs": 200, "eval_every": 1, "patience": 2, "validation_users": 40}
        )
    )
    method.fit(train)
    curve: TrainingCurve = method.curve
    assert curve.stopped_early and len(curve.losses) < 200
    assert curve.best_epoch == max(curve.validation, key=lambda v: v["mrr"])["epoch"]
    assert len(curve.refit_losses) == curve.best_epoch
    assert len(curve.losses) - curve.best_epoch == 2  # patience evaluations after the best one
    assert method.stats()["training"]["refit_epochs"] == curve.best_epoch
    rankings = [list(method.rank(r)) for r in requests_for(tasks, train)]
    assert hit_rate_at_k(rankings, [t.ground_truth for t in tasks], 5) >= 0.9


def test_without_refit_the_best_snapshot_ranks(planted: tuple[Dataset, list[Task]]) -> None:
    train, tasks = planted
    options = {**BPR_FAST, "max_epochs": 40, "eval_every": 2, "patience": 2, "validation_users": 40}
    kept = make_bpr(MethodOptions(extra={**options, "refit": False}))
    kept.fit(train)
    assert kept.curve.refit_losses == [] and kept.stats()["training"]["refit_epochs"] == 0
    rankings = [list(kept.rank(r)) for r in requests_for(tasks, train)]
    assert hit_rate_at_k(rankings, [t.ground_truth for t in tasks], 5) >= 0.9


def test_more_negatives_per_positive_means_more_training_pairs(planted: tuple[Dataset, list[Task]]) -> None:
    train, _ = planted
    one = make_bpr(MethodOptions(extra={**BPR_FAST, "max_epochs": 1, "early_stopping": False}))
    three = make_bpr(
        MethodOptions(
            extra={**BPR_FAST, "max_epochs": 1, "early_stopping": False, "negatives_per_positive": 3}
        )
    )
    one.fit(train)
    three.fit(train)
    assert len(three._trainer.users) == 3 * len(one._trainer.users) == 3 * len(train.interactions)
    with pytest.raises(ValueError, match="negatives_per_positive must be >= 1"):
        make_bpr(MethodOptions(extra={"negatives_per_positive": 0, "early_stopping": False})).fit(train)


def test_windows_cover_every_transition_once() -> None:
    sequence = list(range(1, 13))
    cut = windows(sequence, max_length=4)
    assert all(len(w) <= 5 for w in cut)
    transitions = {(w[i], w[i + 1]) for w in cut for i in range(len(w) - 1)}
    assert transitions == {(a, a + 1) for a in range(1, 12)}
    assert sum(len(w) - 1 for w in cut) == 11
    assert windows([7], max_length=4) == []


def test_sasrec_learns_the_next_item_of_a_sequence() -> None:
    dataset, tasks = cycle_dataset()
    train = dataset.hide_from(tasks)
    options = {
        "embedding_dim": 32,
        "max_length": 10,
        "max_epochs": 60,
        "early_stopping": False,
        "learning_rate": 5e-3,
        "batch_size": 32,
        "dropout": 0.1,
    }
    sasrec = make_sasrec(MethodOptions(seed=0, extra=options))
    sasrec.fit(train)
    requests = requests_for(tasks, train)
    truths = [t.ground_truth for t in tasks]
    sequential = hit_rate_at_k([list(sasrec.rank(r)) for r in requests], truths, 1)
    assert sequential >= 0.9
    assert sasrec.stats()["fallbacks"]["unknown_user"] == 0


def test_sasrec_is_deterministic_and_validates_its_config() -> None:
    dataset, tasks = cycle_dataset(users=20)
    train = dataset.hide_from(tasks)
    options = {"embedding_dim": 16, "max_length": 8, "max_epochs": 3, "early_stopping": False}

    def run() -> list[list[str]]:
        method = make_sasrec(MethodOptions(seed=2, extra=options))
        method.fit(train)
        return [list(method.rank(r)) for r in requests_for(tasks, train)]

    assert run() == run()
    with pytest.raises(ValueError, match="divisible by heads"):
        make_sasrec(MethodOptions(extra={"embedding_dim": 10, "heads": 3}))


def test_sasrec_early_stopping_refits(planted: tuple[Dataset, list[Task]]) -> None:
    train, _ = planted
    options = {"embedding_dim": 16, "max_length": 8, "max_epochs": 6, "eval_every": 2, "validation_users": 20}
    method = make_sasrec(MethodOptions(seed=0, extra=options))
    method.fit(train)
    training = method.stats()["training"]
    assert training["validation_tasks"] == 20 and training["refit_epochs"] == training["best_epoch"] > 0


def test_contrastive_value_term_aligns_users_who_share_values(planted: tuple[Dataset, list[Task]]) -> None:
    import numpy as np
    import torch

    from starrec.baselines.bpr import BPRConfig, BPRRecommender, info_nce

    train, tasks = planted

    def cluster_values(view: Dataset, user_ids: Sequence[str]) -> np.ndarray:
        # A user's "values" are their cluster, one-hot: what the contrastive term should align with.
        return np.eye(4, dtype=np.float32)[[int(user[1]) for user in user_ids]]

    def same_cluster_margin(method: BPRRecommender) -> float:
        users, _ = method._trainer.vectors()
        index = method._trainer.index
        unit = users / np.linalg.norm(users, axis=1, keepdims=True)
        clusters = np.array([int(user[1]) for user in index.user_ids])
        similarity = unit @ unit.T
        same = clusters[:, None] == clusters[None, :]
        return float(similarity[same].mean() - similarity[~same].mean())

    options = dict(embedding_dim=16, batch_size=256, learning_rate=0.02, max_epochs=8, early_stopping=False)
    plain = BPRRecommender(BPRConfig(**options))
    valued = BPRRecommender(BPRConfig(**options, value_weight=1.0), cluster_values)
    plain.fit(train)
    valued.fit(train)
    assert same_cluster_margin(valued) > same_cluster_margin(plain) + 0.1
    # No contrastive collapse: the users do not fold onto one direction (all cosines near 1).
    users, _ = valued._trainer.vectors()
    unit = users / np.linalg.norm(users, axis=1, keepdims=True)
    off_diagonal = (unit @ unit.T)[~np.eye(len(unit), dtype=bool)]
    assert float(off_diagonal.mean()) < 0.5
    rankings = [list(valued.rank(r)) for r in requests_for(tasks, train)]
    assert hit_rate_at_k(rankings, [t.ground_truth for t in tasks], 5) >= 0.9
    aligned = torch.eye(3)
    assert float(info_nce(aligned, aligned, 0.1)) < float(info_nce(aligned, aligned.flip(0), 0.1))
    with pytest.raises(ValueError, match="needs a source of user value vectors"):
        BPRRecommender(BPRConfig(value_weight=0.5))
