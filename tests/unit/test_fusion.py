"""Agreement fusion on fixed cases: each uninformative model leaves the prior as it is."""

from __future__ import annotations

import random

import pytest

from starrec.eval.fusion import agreement_fusion, chance_threshold, kendall_tau, valid_ids

PRIOR = [f"c{i}" for i in range(20)]
SCORES = {item: 1.0 - 0.04 * index for index, item in enumerate(PRIOR)}


def test_kendall_tau_on_hand_cases() -> None:
    assert kendall_tau(["a", "b", "c"], ["a", "b", "c"]) == 1.0
    assert kendall_tau(["c", "b", "a"], ["a", "b", "c"]) == -1.0
    assert kendall_tau(["b", "a", "c"], ["a", "b", "c"]) == pytest.approx(1 / 3)


def test_chance_threshold_is_the_one_sided_5_percent_point() -> None:
    # n = 20: sd = sqrt(2 * 45 / (9 * 20 * 19)) = 0.1622; 1.645 sd = 0.267.
    assert chance_threshold(20) == pytest.approx(0.2668, abs=1e-4)
    assert chance_threshold(2) == 1.0


def test_a_echo_of_the_shown_prior_order_reproduces_the_prior() -> None:
    result = agreement_fusion(list(PRIOR), PRIOR, prior_scores=SCORES)
    assert result.ranking == PRIOR and result.tau == 1.0


def test_b_prose_without_ids_gets_no_weight() -> None:
    result = agreement_fusion([], PRIOR, prior_scores=SCORES)
    assert result.weight == 0.0 and result.valid == 0 and result.ranking == PRIOR


def test_c_hallucinated_and_duplicate_ids_get_no_weight() -> None:
    raw = ["x1", "c7", "x2", "c7", "c7", "c3", "m999"]
    assert valid_ids(raw, PRIOR) == ["c7", "c3"]
    result = agreement_fusion(raw, PRIOR, prior_scores=SCORES)
    assert result.weight == 0.0 and result.valid == 2 and result.ranking == PRIOR


def test_d_random_permutations_get_no_weight_on_average() -> None:
    rng = random.Random(0)
    weights, moved = [], 0
    for _ in range(2000):
        order = list(PRIOR)
        rng.shuffle(order)
        result = agreement_fusion(order, PRIOR, prior_scores=SCORES)
        weights.append(result.weight)
        moved += result.ranking[:5] != PRIOR[:5]
    share_weighted = sum(w > 0 for w in weights) / len(weights)
    assert 0.02 < share_weighted < 0.08  # the 5% a chance order exceeds the threshold
    assert sum(weights) / len(weights) < 0.01
    assert moved / len(weights) < 0.05


def test_an_order_that_agrees_beyond_chance_may_swap_near_ties() -> None:
    scores = dict(SCORES)
    scores["c1"] = scores["c0"] - 1e-6  # the evidence barely separates c0 and c1
    llm = ["c1", "c0", *PRIOR[2:]]
    result = agreement_fusion(llm, PRIOR, prior_scores=scores)
    assert result.weight > 0.4 and result.ranking[:2] == ["c1", "c0"]
    # ... but not candidates the evidence clearly separates.
    far = ["c10", *[item for item in PRIOR if item != "c10"]]
    assert agreement_fusion(far, PRIOR, prior_scores=SCORES).ranking[:1] == ["c0"]


def test_weight_is_bounded_and_checked() -> None:
    assert agreement_fusion(list(PRIOR), PRIOR, max_weight=0.0).weight == 0.0
    with pytest.raises(ValueError, match="max_weight"):
        agreement_fusion(PRIOR, PRIOR, max_weight=1.5)


def test_a_clearly_separated_top_candidate_is_never_demoted() -> None:
    scores = {item: (1.0 if item == "c0" else 0.2) for item in PRIOR}
    demoting = [*PRIOR[1:], "c0"]  # agrees with the prior everywhere else, so tau is high
    result = agreement_fusion(demoting, PRIOR, prior_scores=scores)
    assert result.weight > 0.3
    assert result.ranking[0] == "c0"


def test_a_prior_with_repeats_is_refused() -> None:
    with pytest.raises(ValueError, match="repeats a candidate"):
        agreement_fusion(["a"], ["b", "a", "a"])
