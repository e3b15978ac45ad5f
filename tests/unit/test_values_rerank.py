"""``values-rerank``: a base recommender's order re-ranked by value affinity (fake embedder)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from values_fixtures import FakeValueEmbedder, build_value_dataset, hub_tasks, value_item

from starrec.baselines.values_rerank import ValuesRerankRecommender, make_values_rerank
from starrec.contract.values import SCHWARTZ_VALUES
from starrec.eval.harness import build_requests, evaluate
from starrec.eval.methods import METHOD_FACTORIES, MethodOptions, make_method


def fitted(weight: float, base: str = "pop", **extra: str) -> tuple[ValuesRerankRecommender, list]:
    dataset = build_value_dataset()
    tasks = hub_tasks(dataset)
    train = dataset.hide_from(tasks)
    options = MethodOptions(extra={"weight": str(weight), "base": base, **extra})
    method = make_values_rerank(options, embedder=FakeValueEmbedder())
    method.fit(train)
    return method, build_requests(tasks, train, seed=0)


def test_it_is_a_registered_method_with_checked_options() -> None:
    assert METHOD_FACTORIES["values-rerank"].endswith(":make_values_rerank")
    with pytest.raises(ValueError, match=r"weight must be in \[0, 1\], got 2.0"):
        make_method("values-rerank", MethodOptions(extra={"weight": "2"}))
    with pytest.raises(ValueError, match="unknown values-rerank option 'wieght'"):
        make_method("values-rerank", MethodOptions(extra={"wieght": "0.1"}))
    with pytest.raises(ValueError, match="unknown option 'nope' for ItemKNNConfig"):
        make_method("values-rerank", MethodOptions(extra={"base.nope": "1"}))


def test_weight_zero_is_exactly_the_base_order() -> None:
    method, requests = fitted(0.0)
    base = make_method("pop")
    base.fit(method._train)
    for request in requests:
        assert method.rank(request) == list(base.rank(request))
    assert method.stats()["reordered_requests"] == 0


def test_a_positive_weight_lifts_the_candidate_that_shares_the_users_values() -> None:
    method, requests = fitted(0.8)
    for request, value in zip(requests, SCHWARTZ_VALUES, strict=True):
        assert request.user_id == f"u_{value}"
        assert method.rank(request)[0] == value_item(value, 3)
    assert method.stats()["reordered_requests"] >= len(requests) - 1  # pop may already put it first
    assert method.stats()["base"]["name"] == "pop" and method.stats()["embedder"] == "fake-values"


def test_base_options_reach_the_base_method() -> None:
    method, _ = fitted(0.3, base="itemknn", **{"base.window": "2"})
    assert method.base.config.window == 2


def test_only_the_training_view_is_read() -> None:
    """The answer (hub, a power item) is in the full data only: the view's history cannot favour it."""
    dataset = build_value_dataset()
    tasks = hub_tasks(dataset)
    options = MethodOptions(extra={"weight": "1.0", "base": "pop"})
    method = make_values_rerank(options, embedder=FakeValueEmbedder())
    report = evaluate(method, tasks, dataset, progress=False, include_per_task=True)
    ranks = {row["task_id"]: row["rank"] for row in report["per_task"]}
    leaky = make_values_rerank(options, embedder=FakeValueEmbedder())
    leaky.fit(dataset)  # what a leak would look like: the answer in the history
    requests = build_requests(tasks, dataset.hide_from(tasks), 0)
    request = next(r for r in requests if r.user_id == "u_benevolence")
    blind = replace(request, history=())  # rank() then reads the fitted data's history
    assert leaky.rank(blind).index("hub") < method.rank(blind).index("hub")
    assert ranks["t_benevolence"] == method.rank(request).index("hub") + 1
