"""The harness: shuffling, the leakage trap, repair and error accounting, simple baselines, the CLI."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from starrec.baselines.simple import IdentityRecommender, PopRecommender, RandomRecommender
from starrec.cli import app
from starrec.data.schema import Dataset, Interaction, RankRequest, Task
from starrec.eval.harness import evaluate, shuffle_candidates
from starrec.eval.methods import MethodOptions, make_method
from starrec.eval.recommender import Recommender

DAY = 86_400.0


def make_task(index: int, truth_position: int = 0, user: str | None = None) -> Task:
    candidates = tuple(f"t{index}-c{j}" for j in range(20))
    return Task(str(index), user or f"u{index}", candidates, candidates[truth_position])


# ---------------------------------------------------------------- shuffling


def test_shuffle_is_deterministic_permutation_and_seeded() -> None:
    task = make_task(0)
    first = shuffle_candidates(task, seed=0)
    assert first == shuffle_candidates(task, seed=0)
    assert sorted(first) == sorted(task.candidates) and first != task.candidates
    assert first != shuffle_candidates(task, seed=1)


def test_shuffle_differs_per_task() -> None:
    orders = {tuple(c.split("-")[1] for c in shuffle_candidates(make_task(i), 0)) for i in range(50)}
    assert len(orders) == 50


def test_ground_truth_position_uniform_after_shuffle() -> None:
    # Every file puts the truth first (worst-case position leak); after shuffling each of the
    # 20 positions should hold it about 5% of the time (4000 tasks: sd ~0.34 points).
    tasks = [make_task(i, truth_position=0) for i in range(4000)]
    positions = Counter(shuffle_candidates(task, 3).index(task.ground_truth) for task in tasks)
    assert len(positions) == 20
    assert all(0.035 < count / len(tasks) < 0.065 for count in positions.values())


def test_identity_scores_random_level_only_when_shuffled() -> None:
    tasks = [make_task(i, truth_position=i % 2) for i in range(600)]
    shuffled = evaluate(IdentityRecommender(), tasks, None, seed=0, progress=False)
    leaked = evaluate(IdentityRecommender(), tasks, None, seed=0, progress=False, shuffle=False)
    assert leaked["hr@1"] == pytest.approx(0.5) and leaked["hr@3"] == 1.0
    assert abs(shuffled["hr_avg"] - 0.15) < 0.04 and shuffled["shuffled"] is True


# ---------------------------------------------------------------- leakage trap


def trap_dataset() -> tuple[Dataset, list[Task]]:
    """Task users u0..u9 all hold out item G, each with a telltale 'later' item after it.

    In the full data G is the most popular item (10 users) and every task user's later
    item L<k> appears only after G. A method that saw the full data would rank G first; the
    leakage-free view has no interaction with G at all and none after each cutoff.
    """
    interactions: list[Interaction] = []
    negatives = [f"n{j}" for j in range(19)]
    for j, item in enumerate(negatives):  # each negative: one interaction by a bystander
        interactions.append(Interaction(f"b{j}", item, 1 * DAY))
    tasks = []
    for k in range(10):
        user = f"u{k}"
        interactions += [
            Interaction(user, f"h{k}", 2 * DAY),
            Interaction(user, "G", 5 * DAY, stars=5.0, text="the answer"),
            Interaction(user, f"L{k}", 6 * DAY, text="after the answer"),
            Interaction(user, "G", 7 * DAY, text="again the answer"),
        ]
        tasks.append(Task(str(k), user, ("G", *negatives), "G"))
    items = {item: {"item_id": item} for item in {e.item_id for e in interactions}}
    users = {user: {"user_id": user} for user in {e.user_id for e in interactions}}
    return Dataset(users, items, interactions, name="trap"), tasks


class SpyRecommender(Recommender):
    """Records everything it is shown and ranks items it has seen the user touch first (a cheat)."""

    name = "spy"

    def __init__(self) -> None:
        self.train: Dataset | None = None
        self.requests: list[RankRequest] = []

    def fit(self, train: Dataset) -> None:
        self.train = train

    def rank(self, request: RankRequest) -> list[str]:
        self.requests.append(request)
        assert self.train is not None
        seen = {event.item_id for event in self.train.interactions if event.user_id == request.user_id}
        seen |= {event.item_id for event in request.history}
        return sorted(request.candidates, key=lambda item: item not in seen)


def test_a_report_records_the_load_its_elapsed_time_was_measured_under(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    from starrec.eval.timing import load_average

    monkeypatch.setattr(os, "getloadavg", lambda: (1.234, 0.5, 0.25))
    report = evaluate(IdentityRecommender(), [make_task(i) for i in range(3)], None, seed=0, progress=False)
    assert report["elapsed_s"] >= 0 and report["load_average"] == [1.23, 0.5, 0.25]

    def unavailable() -> tuple[float, float, float]:
        raise OSError("no load average here")

    monkeypatch.setattr(os, "getloadavg", unavailable)
    assert load_average() == []
    monkeypatch.delattr(os, "getloadavg")  # Windows has none
    assert load_average() == []


def test_hide_from_removes_truth_and_everything_after() -> None:
    dataset, tasks = trap_dataset()
    train = dataset.hide_from(tasks)
    assert "G" not in train.by_item
    for k in range(10):
        assert [e.item_id for e in train.history(f"u{k}")] == [f"h{k}"]
    assert len(train.interactions) == 19 + 10


def test_trap_full_data_would_leak_but_harness_does_not() -> None:
    dataset, tasks = trap_dataset()
    cheating_pop = PopRecommender(seed=0)
    cheating_pop.fit(dataset)  # what pop would do if handed the full data
    assert all(cheating_pop.rank(RankRequest(t.task_id, t.user_id, t.candidates))[0] == "G" for t in tasks)

    report = evaluate(PopRecommender(seed=0), tasks, dataset, seed=0, progress=False)
    assert report["hr@5"] == 0.0  # G has no training interactions: ranked after every negative
    spy = SpyRecommender()
    report = evaluate(spy, tasks, dataset, seed=0, progress=False)
    assert report["hr@1"] < 0.5
    assert spy.train is not None and "G" not in spy.train.by_item
    assert {e.item_id for e in spy.train.interactions} & {f"L{k}" for k in range(10)} == set()
    for request in spy.requests:
        assert not hasattr(request, "ground_truth")
        assert [e.item_id for e in request.history] == [f"h{request.user_id[1:]}"]
        assert all(e.timestamp < 5 * DAY for e in request.history)


# ---------------------------------------------------------------- repair and errors


class ScriptedRecommender(Recommender):
    """Returns a scripted answer per task id: a list, or an exception to raise."""

    name = "scripted"
    needs_data = False

    def __init__(self, answers: Callable[[RankRequest], Sequence[str]]) -> None:
        self.answers = answers

    def rank(self, request: RankRequest) -> Sequence[str]:
        return self.answers(request)


def test_invalid_rankings_are_repaired_and_counted() -> None:
    tasks = [make_task(i) for i in range(4)]

    def answer(request: RankRequest) -> list[str]:
        truth = f"t{request.task_id}-c0"
        others = [c for c in request.candidates if c != truth]
        return {
            "0": [truth, *others],  # valid
            "1": [truth, "made-up", *others],  # one hallucinated id
            "2": [truth, truth, *others[:10]],  # one duplicate, nine missing
            "3": ["nonsense"],  # nothing usable: all 20 missing
        }[request.task_id]

    report = evaluate(ScriptedRecommender(answer), tasks, None, seed=0, progress=False)
    assert report["invalid"] == {
        "repaired_tasks": 3,
        "hallucinated": 2,
        "duplicates": 1,
        "missing": 29,
        "errors": 0,
    }
    assert report["hr@1"] == pytest.approx(3 / 4)  # repairs keep the valid prefix
    per_task = {entry["task_id"]: entry for entry in report["per_task"]}
    assert per_task["2"]["repair"] == {"hallucinated": 0, "duplicates": 1, "missing": 9}
    assert sorted(per_task["3"]["ranking"]) == sorted(tasks[3].candidates)


def test_raising_method_is_counted_not_silently_scored() -> None:
    tasks = [make_task(i) for i in range(10)]

    def answer(request: RankRequest) -> list[str]:
        if int(request.task_id) % 2:
            raise RuntimeError(f"backend down for task {request.task_id}")
        truth = f"t{request.task_id}-c0"
        return [truth, *(c for c in request.candidates if c != truth)]

    report = evaluate(ScriptedRecommender(answer), tasks, None, seed=0, progress=False)
    assert report["invalid"]["errors"] == 5
    successful = {key: value for key, value in report["successful"].items() if key != "ci95"}
    assert successful == {"n_tasks": 5, "hr@1": 1.0, "hr@3": 1.0, "hr@5": 1.0, "hr_avg": 1.0, "ndcg@5": 1.0}
    assert report["successful"]["ci95"]["hr_avg"] == [1.0, 1.0]
    failed = [entry for entry in report["per_task"] if entry["error"]]
    assert len(failed) == 5 and "RuntimeError: backend down for task 1" in failed[0]["error"]
    assert failed[0]["ranking"] == list(shuffle_candidates(tasks[1], 0))


def test_missing_ground_truth_and_missing_data_are_errors(tiny_dataset: Dataset) -> None:
    with pytest.raises(ValueError, match=r"1 task\(s\) have no ground truth \(task ids 1\)"):
        evaluate(IdentityRecommender(), [make_task(0), make_task(1).without_answer()], None, progress=False)
    with pytest.raises(ValueError, match="pass the dataset"):
        evaluate(PopRecommender(), [make_task(0)], None, progress=False)


def test_tasks_the_dataset_does_not_know_are_warned_and_counted(tiny_dataset: Dataset) -> None:
    from starrec.data.tasks import UnknownIdsWarning

    items = sorted(tiny_dataset.items)
    user = sorted(tiny_dataset.users)[0]
    tasks = [
        Task("0", user, (*items[:3], "ghost-item"), items[0]),
        Task("1", "ghost-user", tuple(items[:4]), items[1]),
    ]
    with pytest.warns(UnknownIdsWarning, match=r"2 tasks: 1 user\(s\) \[ghost-user\] and 1 candidate"):
        report = evaluate(PopRecommender(), tasks, tiny_dataset, progress=False)
    assert report["coverage"]["unknown_users"] == 1 and report["coverage"]["unknown_candidates"] == 1
    assert report["n_tasks"] == 2  # a warning, not an error: both tasks are still scored


# ---------------------------------------------------------------- simple baselines


def test_pop_ranks_by_distinct_users_with_seeded_ties(tiny_dataset: Dataset) -> None:
    pop = PopRecommender(seed=4)
    pop.fit(tiny_dataset)
    request = RankRequest("0", "nobody", ("i8", "i6", "i1", "i2", "i7", "unknown"))
    ranking = pop.rank(request)
    assert ranking[:3] == ["i1", "i2", "i6"]  # 5, 3 and 2 distinct users
    assert ranking == pop.rank(RankRequest("0", "nobody", tuple(reversed(request.candidates))))
    assert pop.stats() == {
        "requests": 2,
        "unknown_users": 2,
        "unseen_candidates": 4,
        "all_candidates_unseen": 0,
    }


def test_random_is_seeded_and_presentation_independent() -> None:
    request = RankRequest("5", "u", tuple(f"c{j}" for j in range(20)))
    flipped = RankRequest("5", "u", tuple(reversed(request.candidates)))
    assert RandomRecommender(1).rank(request) == RandomRecommender(1).rank(flipped)
    assert RandomRecommender(1).rank(request) != RandomRecommender(2).rank(request)


def test_make_method_names() -> None:
    assert make_method("pop", MethodOptions(seed=3)).seed == 3  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        make_method("nope")


# ---------------------------------------------------------------- CLI and acceptance


def test_cli_identity_on_official_amazon(official_tasks_dir: Callable[[str], Path], tmp_path: Path) -> None:
    runner = CliRunner()
    tasks = official_tasks_dir("amazon")
    out = tmp_path / "identity.json"
    result = runner.invoke(app, ["eval", "--tasks", str(tasks), "--method", "identity", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["n_tasks"] == 388 and abs(report["hr_avg"] - 0.15) < 0.05
    assert set(report) >= {"method", "n_tasks", "hr@1", "hr@3", "hr@5", "hr_avg", "ndcg@5", "invalid"}
    leaked = runner.invoke(
        app, ["eval", "--tasks", str(tasks), "--method", "identity", "--no-shuffle", "--json", str(out)]
    )
    assert leaked.exit_code == 0, leaked.output
    assert json.loads(out.read_text())["hr_avg"] == pytest.approx(0.4115, abs=0.001)


def test_cli_build_then_pop_far_above_random(ml100k_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    tasks = tmp_path / "classic"
    built = runner.invoke(
        app,
        [
            "tasks",
            "build",
            "--data",
            str(ml100k_dir),
            "--out",
            str(tasks),
            "--scenario",
            "classic",
            "--n",
            "150",
            "--seed",
            "0",
        ],
    )
    assert built.exit_code == 0, built.output
    assert json.loads((tasks / "manifest.json").read_text())["n_tasks"] == 150
    scores = {}
    for method in ("pop", "random"):
        out = tmp_path / f"{method}.json"
        result = runner.invoke(
            app,
            [
                "eval",
                "--data",
                str(ml100k_dir),
                "--tasks",
                str(tasks),
                "--method",
                method,
                "--json",
                str(out),
            ],
        )
        assert result.exit_code == 0, result.output
        scores[method] = json.loads(out.read_text())["hr_avg"]
    assert scores["pop"] > 2 * scores["random"] and scores["pop"] > 0.3
    refused = runner.invoke(app, ["eval", "--tasks", str(tasks), "--method", "pop"])
    assert refused.exit_code != 0 and "pass --data" in refused.output
