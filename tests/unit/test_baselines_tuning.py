"""Tuning is honest: the validation split comes from the training view only, and the grid search
keeps the configuration that validates best."""

from __future__ import annotations

import pytest
from baselines_fixtures import planted_clusters

from starrec.baselines.tuning import VALIDATION_SCENARIO, tune, validation_split
from starrec.data.schema import Dataset, Task

TRUTH_POSITION = 7
"""Test ground truth = each user's 8th of 11 interactions, so later events exist to leak."""


@pytest.fixture(scope="module")
def trap() -> tuple[Dataset, list[Task], Dataset]:
    """(full dataset, test tasks in the middle of each history, leakage-free training view)."""
    dataset, cluster_tasks = planted_clusters()
    tasks = []
    for task in cluster_tasks:
        truth = dataset.history(task.user_id)[TRUTH_POSITION].item_id
        negatives = [item for item in task.candidates if item != task.ground_truth][:19]
        tasks.append(Task(task.task_id, task.user_id, (truth, *negatives), truth, scenario="classic"))
    return dataset, tasks, dataset.hide_from(tasks)


def test_validation_split_never_touches_test_task_data(trap: tuple[Dataset, list[Task], Dataset]) -> None:
    dataset, tasks, train = trap
    split = validation_split(train, seed=1)
    assert split.tasks and all(task.scenario == VALIDATION_SCENARIO for task in split.tasks)
    forbidden = {
        (event.user_id, event.item_id)
        for task in tasks
        for event in dataset.history(task.user_id)[TRUTH_POSITION:]
    }
    train_pairs = {(event.user_id, event.item_id) for event in train.interactions}
    fit_pairs = {(event.user_id, event.item_id) for event in split.fit_view.interactions}
    assert forbidden and not forbidden & train_pairs
    for task in split.tasks:
        assert (task.user_id, task.ground_truth) in train_pairs
        assert (task.user_id, task.ground_truth) not in forbidden
        assert (task.user_id, task.ground_truth) not in fit_pairs
        # The target is the user's last *training* interaction, i.e. the one just before the test truth.
        assert task.ground_truth == dataset.history(task.user_id)[TRUTH_POSITION - 1].item_id
        assert len(set(task.candidates)) == 20
        # Negatives are unseen *in the training view*: the split cannot know the hidden future.
        seen = {event.item_id for event in train.history(task.user_id)}
        assert not seen & (set(task.candidates) - {task.ground_truth})
    assert fit_pairs <= train_pairs


def test_validation_split_is_seeded_and_capped(trap: tuple[Dataset, list[Task], Dataset]) -> None:
    _, _, train = trap
    first = validation_split(train, seed=3, max_users=10)
    again = validation_split(train, seed=3, max_users=10)
    assert len(first.tasks) == 10 and first.tasks == again.tasks
    assert validation_split(train, seed=4, max_users=10).tasks != first.tasks


def test_tune_keeps_the_best_validating_config(trap: tuple[Dataset, list[Task], Dataset]) -> None:
    _, _, train = trap
    split = validation_split(train, seed=0, max_users=60)
    untrained = {"max_epochs": 0, "embedding_dim": 16}
    trained = {
        "max_epochs": 30,
        "early_stopping": False,
        "embedding_dim": 16,
        "batch_size": 256,
        "learning_rate": 0.02,
    }
    result = tune("bpr", split, seed=0, grid=[untrained, trained])
    assert result.best_params == trained
    assert [trial.params for trial in result.trials] == [untrained, trained]
    assert result.trials[1].metrics["hr_avg"] > result.trials[0].metrics["hr_avg"] + 0.3
    assert result.as_dict()["best_validation"]["hr_avg"] == result.trials[1].metrics["hr_avg"]
    assert result.n_validation_tasks == 60


def test_tune_rejects_an_empty_grid(trap: tuple[Dataset, list[Task], Dataset]) -> None:
    _, _, train = trap
    with pytest.raises(ValueError, match="empty search grid"):
        tune("itemknn", validation_split(train, max_users=5), grid=[])


def test_coordinate_search_tries_each_knob_with_the_best_of_the_others(
    trap: tuple[Dataset, list[Task], Dataset],
) -> None:
    _, _, train = trap
    split = validation_split(train, seed=0, max_users=40)
    space = {"max_epochs": [0, 25], "embedding_dim": [16, 8], "early_stopping": [False]}
    result = tune("bpr", split, seed=0, space=space)
    tried = [trial.params for trial in result.trials]
    assert len(tried) == 3  # 2 + 2 + 1 values, minus the 2 repeats of the running best
    assert tried[0] == {"max_epochs": 0, "embedding_dim": 16, "early_stopping": False}
    # max_epochs=25 beats an untrained model, so the embedding_dim knob is searched with it.
    assert tried[1]["max_epochs"] == 25 and tried[2] == {**tried[1], "embedding_dim": 8}
    assert result.best_metrics["hr_avg"] == max(t.metrics["hr_avg"] for t in result.trials)
    with pytest.raises(ValueError, match="empty search space"):
        tune("bpr", split, space={})
