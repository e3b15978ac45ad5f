"""Tuning is honest: the validation split comes from the training view only, and the grid search
keeps the configuration that validates best."""

from __future__ import annotations

import pytest
from baselines_fixtures import planted_clusters

from starrec.baselines.tuning import (
    SELECTION_RULE,
    VALIDATION_SCENARIO,
    Trial,
    beats,
    paired_gain,
    tune,
    validation_split,
)
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
    # The winner is the trained model; embedding_dim=8 replaces 16 only by more than one SE.
    assert result.best_params["max_epochs"] == 25
    last = result.trials[2]
    assert last.gain is not None and last.gain_se is not None
    assert (result.best_params == tried[2]) == (last.gain > last.gain_se)
    with pytest.raises(ValueError, match="empty search space"):
        tune("bpr", split, space={})


def test_paired_gain_is_the_mean_difference_with_its_standard_error() -> None:
    gain, se = paired_gain([1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0])
    assert gain == pytest.approx(0.5)
    # differences 1, 0, 0, 1: sample SD sqrt(1/3), SE sqrt(1/3) / 2
    assert se == pytest.approx((1 / 3) ** 0.5 / 2)
    with pytest.raises(ValueError, match="cannot pair"):
        paired_gain([1.0], [1.0, 0.0])


def test_a_gain_within_one_standard_error_keeps_the_incumbent() -> None:
    incumbent = Trial({"a": 1}, {"hr_avg": 0.5}, 0.0, [1.0, 0.0] * 50)
    # Two tasks better and one worse out of 100: gain 0.01, SE 0.017 -> not beyond one SE.
    noise = Trial({"a": 2}, {"hr_avg": 0.51}, 0.0, [1.0, 1.0, 1.0, 1.0, 0.0, 0.0] + [1.0, 0.0] * 47)
    assert not beats(noise, incumbent)
    assert noise.gain == pytest.approx(0.01) and noise.gain_se == pytest.approx(0.0174, abs=1e-4)
    real = Trial({"a": 3}, {"hr_avg": 0.6}, 0.0, [1.0, 1.0] * 10 + [1.0, 0.0] * 40)
    assert beats(real, incumbent)


def test_grid_points_must_win_beyond_noise_and_trials_average_seeds(
    trap: tuple[Dataset, list[Task], Dataset],
) -> None:
    _, _, train = trap
    split = validation_split(train, seed=0, max_users=40)
    point = {"max_epochs": 20, "early_stopping": False, "embedding_dim": 8, "batch_size": 256}
    same = {**point, "batch_size": 255}  # a different key, an (almost) identical fit
    one = tune("bpr", split, seed=0, grid=[point], seeds=1)
    two = tune("bpr", split, seed=0, grid=[point, same], seeds=2)
    assert two.seeds == 2 and two.as_dict()["selection"] == SELECTION_RULE
    first = two.trials[0]
    assert len(first.per_task) == 40
    assert sum(first.per_task) / 40 == pytest.approx(first.metrics["hr_avg"])
    # Two seeds are not one: the averaged trial differs from the single fit on some task.
    assert first.per_task != one.trials[0].per_task
    # A near-copy of the first point cannot displace it on noise.
    assert two.best_params == point
    with pytest.raises(ValueError, match="seeds must be"):
        tune("bpr", split, grid=[point], seeds=0)
