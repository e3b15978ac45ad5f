"""The learned baselines recover a planted cluster signal, are deterministic, and count fallbacks."""

from __future__ import annotations

import numpy as np
import pytest
from baselines_fixtures import planted_clusters, requests_for

from starrec.baselines.bpr import make_bpr
from starrec.baselines.interactions import InteractionIndex
from starrec.baselines.itemknn import make_itemknn
from starrec.baselines.lightgcn import make_lightgcn
from starrec.baselines.training import draw_uniform_negatives
from starrec.data.schema import Dataset, Interaction, RankRequest, Task
from starrec.eval.methods import MethodOptions, config_with_overrides, make_method
from starrec.eval.metrics import hit_rate_at_k
from starrec.eval.recommender import Recommender

FAST_OPTIONS = {
    "itemknn": {},
    "bpr": {
        "max_epochs": 30,
        "early_stopping": False,
        "embedding_dim": 16,
        "batch_size": 256,
        "learning_rate": 0.02,
    },
    "lightgcn": {
        "max_epochs": 30,
        "early_stopping": False,
        "embedding_dim": 16,
        "batch_size": 512,
        "learning_rate": 0.02,
        "layers": 2,
    },
}


def fitted(name: str, train: Dataset, seed: int = 0) -> Recommender:
    method = make_method(name, MethodOptions(seed=seed, extra=dict(FAST_OPTIONS[name])))
    method.fit(train)
    return method


@pytest.fixture(scope="module")
def planted() -> tuple[Dataset, list[Task]]:
    dataset, tasks = planted_clusters()
    return dataset.hide_from(tasks), tasks


@pytest.mark.parametrize("name", ["itemknn", "bpr", "lightgcn"])
def test_model_recovers_planted_clusters(name: str, planted: tuple[Dataset, list[Task]]) -> None:
    train, tasks = planted
    method = fitted(name, train)
    rankings = [list(method.rank(request)) for request in requests_for(tasks, train)]
    truths = [task.ground_truth for task in tasks]
    # Chance is 5/20 = 0.25; the cluster signal puts the truth first among 1 in-cluster candidate.
    assert hit_rate_at_k(rankings, truths, 5) >= 0.9
    assert hit_rate_at_k(rankings, truths, 1) >= 0.7
    assert all(
        sorted(r) == sorted(req.candidates)
        for r, req in zip(rankings, requests_for(tasks, train), strict=True)
    )
    assert method.stats()["fallbacks"]["unknown_user"] == 0


@pytest.mark.parametrize("name", ["bpr", "lightgcn"])
def test_training_is_deterministic_under_a_seed(name: str, planted: tuple[Dataset, list[Task]]) -> None:
    train, tasks = planted
    requests = requests_for(tasks, train)[:20]
    short = {**FAST_OPTIONS[name], "max_epochs": 5}

    def run(seed: int) -> tuple[list[list[str]], float]:
        method = make_method(name, MethodOptions(seed=seed, extra=short))
        method.fit(train)
        return [list(method.rank(r)) for r in requests], method.stats()["final_loss"]

    first, second, other = run(3), run(3), run(4)
    assert first == second
    assert other[1] != first[1]


@pytest.mark.parametrize("name", ["itemknn", "bpr", "lightgcn"])
def test_unknown_user_and_cold_items_fall_back_to_popularity(name: str) -> None:
    # Popularity: a (3 users) > b (2) > c (1); "zz" never occurs in training.
    events = [("u1", "a"), ("u2", "a"), ("u3", "a"), ("u1", "b"), ("u2", "b"), ("u1", "c"), ("u3", "d")]
    interactions = [Interaction(u, i, float(t)) for t, (u, i) in enumerate(events)]
    train = Dataset({u: {} for u in ("u1", "u2", "u3")}, {i: {} for i in "abcd"}, interactions)
    options = dict(FAST_OPTIONS[name])
    if name != "itemknn":
        options.update(max_epochs=2, batch_size=4)
    method = make_method(name, MethodOptions(extra=options))
    method.fit(train)
    ranking = list(method.rank(RankRequest("t", "stranger", ("zz", "c", "a", "b"))))
    assert ranking == ["a", "b", "c", "zz"]
    fallbacks = method.stats()["fallbacks"]
    assert fallbacks == {"requests": 1, "unknown_user": 1, "cold_candidates": 1, "popularity_ties": 0}
    method.rank(RankRequest("t2", "u2", ("zz", "c", "d"), history=tuple(train.history("u2"))))
    fallbacks = method.stats()["fallbacks"]
    assert fallbacks["requests"] == 2 and fallbacks["unknown_user"] == 1 and fallbacks["cold_candidates"] == 2


def test_rank_before_fit_is_a_clear_error() -> None:
    for factory in (make_itemknn, make_bpr, make_lightgcn):
        with pytest.raises(RuntimeError, match="before fit"):
            factory(MethodOptions()).rank(RankRequest("t", "u", ("a", "b")))


def test_options_override_config_fields_with_type_conversion() -> None:
    method = make_lightgcn(
        MethodOptions(seed=5, extra={"max_epochs": "7", "learning_rate": "0.01", "layers": "1"})
    )
    assert (
        method.config.max_epochs,
        method.config.learning_rate,
        method.config.layers,
        method.config.seed,
    ) == (
        7,
        0.01,
        1,
        5,
    )
    with pytest.raises(ValueError, match=r"unknown option 'epoch'.*valid options: .*max_epochs"):
        make_bpr(MethodOptions(extra={"epoch": "3"}))
    with pytest.raises(ValueError, match="max_epochs='many' is not a valid int"):
        make_bpr(MethodOptions(extra={"max_epochs": "many"}))
    knn = make_itemknn(MethodOptions(extra={"window": "5", "decay": "1"}))
    assert knn.config.window == 5 and knn.config.decay == 1.0
    # Values the CLI already parsed: ints widen to float fields, fractional floats never truncate.
    parsed = make_itemknn(MethodOptions(extra={"window": 20.0, "decay": 1}))
    assert parsed.config.window == 20 and isinstance(parsed.config.decay, float)
    with pytest.raises(ValueError, match=r"window=2\.5 is not a valid int"):
        make_itemknn(MethodOptions(extra={"window": 2.5}))
    assert config_with_overrides(knn.config, {}) == knn.config


def test_uniform_negatives_are_never_positives_and_saturated_users_are_named() -> None:
    events = [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u2", "c"), ("u3", "c")]
    train = Dataset({}, {}, [Interaction(u, i, float(t)) for t, (u, i) in enumerate(events)])
    index = InteractionIndex.from_dataset(train)
    users = np.array([index.user_index["u1"], index.user_index["u3"]] * 500)
    negatives = draw_uniform_negatives(index, users, np.random.default_rng(0))
    assert not index.matrix[users, negatives].any()
    u1_negatives = set(negatives[users == index.user_index["u1"]].tolist())
    assert u1_negatives == {index.item_index["c"]}
    with pytest.raises(ValueError, match="user 'u2' interacted with every item"):
        draw_uniform_negatives(index, np.array([index.user_index["u2"]]), np.random.default_rng(0))


def drifting_user() -> tuple[Dataset, RankRequest]:
    """Planted clusters plus one user who watched cluster 0 for long and cluster 1 just now.

    Their user vector points at cluster 0; only the recent history says the next item is cluster 1's.
    """
    dataset, _ = planted_clusters()
    old = [f"i0_{j}" for j in range(12)]
    recent = [f"i1_{j}" for j in range(4)]
    drift = [Interaction("drifter", item, float(t), 5.0) for t, item in enumerate(old + recent)]
    train = Dataset({**dataset.users, "drifter": {}}, dataset.items, [*dataset.interactions, *drift],
                    domain="item", name="drift")  # fmt: skip
    candidates = ("i0_20", "i1_20", "i2_20", "i3_20")
    request = RankRequest("t_drift", "drifter", candidates, history=tuple(train.history("drifter")))
    return train, request


@pytest.mark.parametrize("name", ["bpr", "lightgcn"])
def test_the_recent_term_follows_a_drifting_user(name: str) -> None:
    train, request = drifting_user()

    def first(recent_weight: float) -> str:
        options = {**FAST_OPTIONS[name], "recent_weight": recent_weight}
        method = make_method(name, MethodOptions(seed=0, extra=options))
        method.fit(train)
        return next(iter(method.rank(request)))

    assert first(0.0) == "i0_20"  # the plain dot product: the long-term taste
    assert first(0.75) == "i1_20"  # the short-term term: the cluster of the last four items


def test_recent_term_knobs_are_checked() -> None:
    with pytest.raises(ValueError, match=r"recent_weight must be in \[0, 1\], got 1.5"):
        config_with_overrides(make_bpr(MethodOptions()).config, {"recent_weight": "1.5"})
    with pytest.raises(ValueError, match=r"recent_decay must be in \(0, 1\], got 0.0"):
        config_with_overrides(make_bpr(MethodOptions()).config, {"recent_decay": "0"})
    with pytest.raises(ValueError, match="recent_window must be >= 1, got 0"):
        config_with_overrides(make_bpr(MethodOptions()).config, {"recent_window": "0"})
