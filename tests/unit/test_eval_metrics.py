"""Every metric against values computed by hand."""

from __future__ import annotations

import math

import pytest

from starrec.eval.metrics import hit_rate_at_k, hr_avg, ndcg_at_k, rank_of, summarize

# Three tasks; the ground truth sits at rank 1, 3 and 6 respectively.
RANKINGS = [
    ["a", "b", "c", "d", "e", "f"],
    ["b", "c", "a", "d", "e", "f"],
    ["b", "c", "d", "e", "f", "a"],
]
TRUTHS = ["a", "a", "a"]


def test_hit_rate_hand_computed() -> None:
    assert hit_rate_at_k(RANKINGS, TRUTHS, 1) == pytest.approx(1 / 3)
    assert hit_rate_at_k(RANKINGS, TRUTHS, 3) == pytest.approx(2 / 3)
    assert hit_rate_at_k(RANKINGS, TRUTHS, 5) == pytest.approx(2 / 3)
    assert hit_rate_at_k(RANKINGS, TRUTHS, 6) == pytest.approx(1.0)


def test_hr_avg_is_mean_of_hr_1_3_5() -> None:
    assert hr_avg(RANKINGS, TRUTHS) == pytest.approx((1 / 3 + 2 / 3 + 2 / 3) / 3)
    assert hr_avg(RANKINGS, TRUTHS, ks=(1,)) == pytest.approx(1 / 3)


def test_ndcg_hand_computed() -> None:
    # rank 1 -> 1/log2(2) = 1; rank 3 -> 1/log2(4) = 0.5; rank 6 -> outside the top 5 -> 0.
    assert ndcg_at_k(RANKINGS, TRUTHS, 5) == pytest.approx((1 + 0.5 + 0) / 3)
    assert ndcg_at_k([["x", "a"]], ["a"], 5) == pytest.approx(1 / math.log2(3))


def test_rank_of() -> None:
    assert [rank_of(ranking, "a") for ranking in RANKINGS] == [1, 3, 6]
    assert rank_of(["b"], "a") is None


def test_summarize_keys_and_values() -> None:
    report = summarize(RANKINGS, TRUTHS)
    assert set(report) == {"hr@1", "hr@3", "hr@5", "hr_avg", "ndcg@5"}
    assert report["hr@3"] == pytest.approx(2 / 3) and report["ndcg@5"] == pytest.approx(0.5)


def test_uniform_random_expectation() -> None:
    # With 20 candidates, HR@k of a uniformly placed truth is k/20, so HR_avg = (1+3+5)/60 = 0.15.
    rankings = [[f"c{(j + shift) % 20}" for j in range(20)] for shift in range(20)]
    truths = ["c0"] * 20
    assert hr_avg(rankings, truths) == pytest.approx(0.15)


def test_inputs_are_validated_not_truncated() -> None:
    with pytest.raises(ValueError, match="2 rankings but 1 ground truths"):
        hit_rate_at_k([["a"], ["b"]], ["a"], 1)
    with pytest.raises(ValueError, match="k must be >= 1"):
        ndcg_at_k([["a"]], ["a"], 0)
    assert hit_rate_at_k([], [], 1) == 0.0
