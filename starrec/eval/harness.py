"""The AgentRecBench evaluation loop: shuffle, hide, fit, rank, repair, score, account.

Order of operations, each a guard against a way peers' numbers were fooled:

1. candidates are shuffled per task with a stable seed before any method sees them (the
   published task files leak the answer through position);
2. the method is fitted on ``dataset.hide_from(tasks)`` and every request carries only that
   view's history (the ground truth and everything after it never reach the method);
3. every returned ranking goes through :func:`repair_ranking`, and each repair is counted;
4. a method that raises is counted as an error: its task is scored with the shuffled order and
   flagged, and the report also gives the metrics over the successful tasks alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from starrec.data.agentsociety import DOMAINS
from starrec.data.schema import Dataset, RankRequest, Task
from starrec.data.seeding import seeded_rng
from starrec.data.tasks import warn_unknown_ids
from starrec.eval.metrics import bootstrap_interval, confidence_intervals, per_task_scores, rank_of, summarize
from starrec.eval.recommender import Recommender
from starrec.eval.repair import repair_ranking
from starrec.eval.timing import load_average
from starrec.llm.redact import redact

EvalReport = dict[str, Any]
"""``{"method", "n_tasks", "hr@1", "hr@3", "hr@5", "hr_avg", "ndcg@5", "ci95", "invalid", "successful",
"coverage", "seed", "shuffled", "method_stats", "elapsed_s", "load_average", "per_task"}`` (+ ``"prior"`` and
``"llm_contribution"`` for methods that start from a collaborative prior, + ``"cost_usd"`` and
``"cost_usd_per_task"`` for methods that call an LLM; None = unknown, an unpriced hosted model)."""

CI_SEED = 0
"""Bootstrap seed: the same rankings always get the same interval."""
CI_RESAMPLES = 2000

INVALID_KEYS = ("repaired_tasks", "hallucinated", "duplicates", "missing", "errors")


def shuffle_candidates(task: Task, seed: int) -> tuple[str, ...]:
    """The task's candidates in a seeded order that differs per task but never between runs."""
    order = list(task.candidates)
    seeded_rng(seed, "shuffle", task.task_id, task.user_id).shuffle(order)
    return tuple(order)


def check_ground_truths(tasks: Sequence[Task]) -> None:
    """Evaluation needs every answer; name the tasks that lack one."""
    missing = [task.task_id for task in tasks if task.ground_truth is None]
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise ValueError(
            f"{len(missing)} task(s) have no ground truth (task ids {shown}); evaluation needs "
            "groundtruth/groundtruth_<i>.json for every task"
        )
    outside = [task.task_id for task in tasks if task.ground_truth not in task.candidates]
    if outside:
        raise ValueError(f"ground truth is not among the candidates of task(s) {', '.join(outside[:10])}")


def empty_dataset(tasks: Sequence[Task]) -> Dataset:
    """The training view for methods that need no data (random, identity)."""
    category = tasks[0].category if tasks else ""
    domain = next((name for name in DOMAINS if category.startswith(name)), "item")
    return Dataset({}, {}, [], domain=domain, name="no-data")


def build_requests(
    tasks: Sequence[Task], train: Dataset, seed: int, shuffle: bool = True
) -> list[RankRequest]:
    """What the method sees: shuffled candidates, no answer, history from the leakage-free view only."""
    return [
        RankRequest(
            task_id=task.task_id,
            user_id=task.user_id,
            candidates=shuffle_candidates(task, seed) if shuffle else task.candidates,
            category=task.category,
            scenario=task.scenario,
            history=tuple(train.history(task.user_id)),
        )
        for task in tasks
    ]


@dataclass(slots=True)
class TaskOutcome:
    """One scored task: the final ranking and what had to be fixed to get it."""

    task: Task
    ranking: list[str]
    repair_counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def repaired(self) -> bool:
        return any(self.repair_counts.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task.task_id,
            "user_id": self.task.user_id,
            "ground_truth": self.task.ground_truth,
            "rank": rank_of(self.ranking, self.task.ground_truth or ""),
            "ranking": self.ranking,
            "repair": self.repair_counts,
            "error": self.error,
        }


def score_result(task: Task, request: RankRequest, result: Sequence[str] | BaseException) -> TaskOutcome:
    """Repair a returned ranking (or fall back to the shuffled order on an exception) and record why."""
    if isinstance(result, BaseException):
        error = redact(f"{type(result).__name__}: {result}")
        return TaskOutcome(task, list(request.candidates), error=error)
    if isinstance(result, str):
        result = [result]  # a bare string is one (probably invalid) id, not 20 characters
    ranking, repair = repair_ranking(list(result), request.candidates)
    return TaskOutcome(task, ranking, repair.counts())


def _chunks(items: Sequence[RankRequest], size: int) -> Iterator[Sequence[RankRequest]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def rank_all(
    method: Recommender, requests: Sequence[RankRequest], batch_size: int, progress: bool
) -> list[Sequence[str] | BaseException]:
    """``method.rank_batch`` over all requests in chunks, with a progress bar."""
    results: list[Sequence[str] | BaseException] = []
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not progress, transient=True) as bar:
        tracker = bar.add_task(f"ranking with {method.name}", total=len(requests))
        for chunk in _chunks(requests, batch_size):
            answers = list(method.rank_batch(chunk))
            if len(answers) != len(chunk):
                raise RuntimeError(
                    f"{method.name}.rank_batch returned {len(answers)} results for {len(chunk)} requests"
                )
            results.extend(answers)
            bar.advance(tracker, len(chunk))
    return results


def summarize_outcomes(outcomes: Sequence[TaskOutcome]) -> dict[str, float]:
    return summarize(
        [outcome.ranking for outcome in outcomes], [outcome.task.ground_truth or "" for outcome in outcomes]
    )


def intervals(outcomes: Sequence[TaskOutcome]) -> dict[str, list[float]]:
    """95% bootstrap interval of every metric over these outcomes."""
    found = confidence_intervals(
        [outcome.ranking for outcome in outcomes],
        [outcome.task.ground_truth or "" for outcome in outcomes],
        resamples=CI_RESAMPLES,
        seed=CI_SEED,
    )
    return {name: [round(low, 4), round(high, 4)] for name, (low, high) in found.items()}


def llm_contribution(outcomes: Sequence[TaskOutcome], priors: dict[str, list[str]]) -> dict[str, Any] | None:
    """The method's HR_avg minus its own prior order's, on the successful tasks that recorded a prior.

    The interval is a paired bootstrap of the per-task differences.
    """
    paired = [o for o in outcomes if o.error is None and priors.get(o.task.task_id)]
    if not paired:
        return None
    truths = [o.task.ground_truth or "" for o in paired]
    own = per_task_scores([o.ranking for o in paired], truths)
    prior = per_task_scores([priors[o.task.task_id] for o in paired], truths)
    deltas = [a - b for a, b in zip(own["hr_avg"], prior["hr_avg"], strict=True)]
    low, high = bootstrap_interval(deltas, resamples=CI_RESAMPLES, seed=CI_SEED)
    return {
        "n_tasks": len(paired),
        "hr_avg": sum(own["hr_avg"]) / len(paired),
        "prior_hr_avg": sum(prior["hr_avg"]) / len(paired),
        "delta_hr_avg": sum(deltas) / len(paired),
        "ci95": [round(low, 4), round(high, 4)],
        "tasks_changed": sum(o.ranking != priors[o.task.task_id] for o in paired),
    }


def invalid_counts(outcomes: Sequence[TaskOutcome]) -> dict[str, int]:
    counts = dict.fromkeys(INVALID_KEYS, 0)
    for outcome in outcomes:
        counts["errors"] += outcome.error is not None
        counts["repaired_tasks"] += outcome.repaired
        for key, value in outcome.repair_counts.items():
            counts[key] += value
    return counts


def evaluate(
    method: Recommender,
    tasks: Sequence[Task],
    dataset: Dataset | None,
    seed: int = 0,
    limit: int | None = None,
    progress: bool = True,
    shuffle: bool = True,
    batch_size: int = 64,
    include_per_task: bool = True,
) -> EvalReport:
    """Fit ``method`` on the leakage-free view, rank every task and return the report.

    ``shuffle=False`` presents candidates in file order; it exists only to measure the
    position bias of the published task files and must not be used to report results.
    """
    tasks = list(tasks)[:limit] if limit is not None else list(tasks)
    if not tasks:
        raise ValueError("no tasks to evaluate")
    check_ground_truths(tasks)
    if dataset is None and method.needs_data:
        raise ValueError(f"method {method.name!r} learns from interactions; pass the dataset (--data DIR)")
    unknown = warn_unknown_ids(tasks, dataset, f"{len(tasks)} tasks") if dataset is not None else {}
    started = time.perf_counter()
    train = dataset.hide_from(tasks) if dataset is not None else empty_dataset(tasks)
    method.fit(train)
    requests = build_requests(tasks, train, seed, shuffle)
    results = rank_all(method, requests, batch_size, progress)
    outcomes = [
        score_result(task, request, result)
        for task, request, result in zip(tasks, requests, results, strict=True)
    ]
    successful = [outcome for outcome in outcomes if outcome.error is None]
    report: EvalReport = {
        "method": method.name,
        "n_tasks": len(outcomes),
        **summarize_outcomes(outcomes),
        "ci95": intervals(outcomes),
        "invalid": invalid_counts(outcomes),
        "successful": {
            "n_tasks": len(successful),
            **summarize_outcomes(successful),
            "ci95": intervals(successful) if successful else {},
        },
        "coverage": {
            "users_without_history": sum(not request.history for request in requests),
            "candidates_unseen_in_training": sum(
                item not in train.by_item for request in requests for item in request.candidates
            ),
            **unknown,
        },
        "seed": seed,
        "shuffled": shuffle,
        "method_stats": method.stats(),
        "elapsed_s": round(time.perf_counter() - started, 3),
        "load_average": load_average(),
    }
    if "cost_usd" in report["method_stats"]:
        cost = report["method_stats"]["cost_usd"]
        report["cost_usd"] = cost
        report["cost_usd_per_task"] = None if cost is None else cost / len(outcomes)
    priors = method.prior_orders()
    contribution = llm_contribution(outcomes, priors)
    if contribution is not None:
        paired = [o for o in outcomes if o.error is None and priors.get(o.task.task_id)]
        prior_outcomes = [TaskOutcome(o.task, priors[o.task.task_id]) for o in paired]
        report["prior"] = {
            "n_tasks": len(paired),
            "ci95": intervals(prior_outcomes),
            **summarize(
                [priors[o.task.task_id] for o in paired], [o.task.ground_truth or "" for o in paired]
            ),
        }
        report["llm_contribution"] = contribution
    if include_per_task:
        report["per_task"] = [outcome.as_dict() for outcome in outcomes]
    return report
