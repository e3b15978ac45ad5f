"""The full-corpus protocol: metrics by hand, retrieval without training items, the leakage guard."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from starrec.data.schema import Dataset, Interaction, RankRequest, Task
from starrec.eval.full_corpus import catalogue_request, evaluate_full
from starrec.eval.metrics import (
    expected_sampled_hr_avg,
    mean_reciprocal_rank,
    per_task_full_scores,
    recall_at_k,
    summarize_full,
)
from starrec.eval.recommender import Recommender

# Ground truth "a" at rank 1, 3, 12 and absent.
RANKINGS = [
    ["a", "b", "c"],
    ["b", "c", "a"],
    [f"x{i}" for i in range(11)] + ["a"],
    ["b", "c"],
]
TRUTHS = ["a"] * 4


def test_full_metrics_hand_computed() -> None:
    report = summarize_full(RANKINGS, TRUTHS, k=10)
    assert report["hr@10"] == pytest.approx(2 / 4)
    assert report["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4)) / 4)
    assert report["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 12 + 0) / 4)
    per_task = per_task_full_scores(RANKINGS, TRUTHS, k=10)
    assert per_task["mrr"] == pytest.approx([1, 1 / 3, 1 / 12, 0])
    assert sum(per_task["ndcg@10"]) / 4 == pytest.approx(report["ndcg@10"])


def test_mrr_is_cut_at_k_and_recall_reads_the_retrieved_list() -> None:
    assert mean_reciprocal_rank(RANKINGS, TRUTHS, 3) == pytest.approx((1 + 1 / 3) / 4)
    assert recall_at_k(RANKINGS, TRUTHS, 12) == pytest.approx(3 / 4)
    with pytest.raises(ValueError, match="2 rankings but 1"):
        mean_reciprocal_rank([["a"], ["a"]], ["a"], 1)


def test_expected_sampled_hr_avg_matches_its_extremes() -> None:
    # Nothing above the truth: always rank 1; everything above it with 19 negatives from 19: rank 20.
    assert expected_sampled_hr_avg([0], [100]) == pytest.approx(1.0)
    assert expected_sampled_hr_avg([19], [19]) == pytest.approx(0.0)
    # One item above out of 19 drawn from 19: rank 2 surely -> HR@1 0, HR@3 1, HR@5 1.
    assert expected_sampled_hr_avg([1], [19]) == pytest.approx(2 / 3)


def dataset() -> tuple[Dataset, list[Task]]:
    """Users u0..u3 watch i0..i3 in order; each task's truth is the user's last item (i3)."""
    items = {f"i{j}": {} for j in range(8)}
    events = [Interaction(f"u{u}", f"i{j}", float(10 * j + u)) for u in range(4) for j in range(4)]
    events += [Interaction("u9", f"i{j}", float(j)) for j in range(8)]
    tasks = [Task(f"t{u}", f"u{u}", ("i3",), "i3") for u in range(4)]
    return Dataset({f"u{u}": {} for u in (0, 1, 2, 3, 9)}, items, events, name="chain"), tasks


class Recorder(Recommender):
    """Ranks by a fixed preference and records what it was shown."""

    name = "recorder"

    def __init__(self, order: Sequence[str]) -> None:
        self.order = list(order)
        self.seen: list[RankRequest] = []
        self.train: Dataset | None = None

    def fit(self, train: Dataset) -> None:
        self.train = train

    def rank(self, request: RankRequest) -> list[str]:
        self.seen.append(request)
        return sorted(request.candidates, key=self.order.index)


def test_retrieval_excludes_training_items_and_never_sees_the_answer_in_history() -> None:
    data, tasks = dataset()
    retriever = Recorder([f"i{j}" for j in (7, 3, 6, 5, 4, 2, 1, 0)])
    report = evaluate_full(retriever, tasks, data, retrieve_n=2, k=1, progress=False)
    for request in retriever.seen:
        assert set(request.candidates) == {"i3", "i4", "i5", "i6", "i7"}  # i0..i2 are training items
        assert all(event.item_id != "i3" for event in request.history)
    assert retriever.train is not None and all(
        event.item_id != "i3" for event in retriever.train.interactions if event.user_id != "u9"
    )
    # i7 first, i3 second: Recall@2 = 1, HR@1 = 0, MRR = 1/2.
    assert report["recall@2"] == 1.0 and report["hr@1"] == 0.0 and report["mrr"] == pytest.approx(0.5)
    assert report["catalogue_size"] == 8 and report["protocol"] == "full"


def test_reranker_sees_only_the_retrieved_n_and_decides_the_final_order() -> None:
    data, tasks = dataset()
    retriever = Recorder([f"i{j}" for j in (7, 6, 3, 5, 4, 2, 1, 0)])
    reranker = Recorder(["i3", "i7", "i6", "i5", "i4", "i2", "i1", "i0"])
    report = evaluate_full(retriever, tasks, data, reranker, retrieve_n=3, k=1, progress=False)
    assert all(set(request.candidates) == {"i7", "i6", "i3"} for request in reranker.seen)
    assert report["hr@1"] == 1.0 and report["recall@3"] == 1.0
    dropped = evaluate_full(retriever, tasks, data, reranker, retrieve_n=2, k=1, progress=False)
    assert dropped["recall@2"] == 0.0 and dropped["hr@1"] == 0.0 and dropped["mrr"] == 0.0


def test_leakage_guard_refuses_a_view_that_still_holds_the_answer() -> None:
    data, _ = dataset()
    leaky = [Task("t0", "u9", ("i3",), "i3")]  # u9's i3 is followed by i4..i7, all hidden, i3 too
    report = evaluate_full(Recorder([f"i{j}" for j in range(8)]), leaky, data, progress=False)
    assert report["n_tasks"] == 1
    request = catalogue_request("t", "u9", data, ["i0", "i1", "i8"], seed=0)
    assert request.candidates == ("i8",)
    with pytest.raises(ValueError, match="not in the dataset's catalogue"):
        evaluate_full(Recorder([]), [Task("t", "u0", ("zz",), "zz")], data, progress=False)
    with pytest.raises(ValueError, match="no ground truth"):
        evaluate_full(Recorder([]), [Task("t", "u0", ("i3",), None)], data, progress=False)
