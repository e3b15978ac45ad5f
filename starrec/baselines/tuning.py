"""Honest hyper-parameter selection: a validation split carved from the training view only.

Each (sampled) training user's last training interaction becomes a validation target with 19
negatives the user never touched; every grid point is evaluated by the same harness as the
test tasks (so it is fitted on the training view with the validation targets hidden) and the
best validation HR_avg wins. Test tasks are never read: callers pass a view from which every
test task has already been hidden.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import Progress

from starrec.data.scenarios import build_tasks
from starrec.data.schema import Dataset, Task
from starrec.eval.harness import evaluate
from starrec.eval.methods import MethodOptions, make_method

VALIDATION_SCENARIO = "validation"
METRIC_KEYS = ("hr@1", "hr@3", "hr@5", "hr_avg", "ndcg@5")

SEARCH_SPACES: dict[str, list[dict[str, Any]]] = {
    "itemknn": [
        {"window": window, "decay": decay, "shrink": shrink}
        for window in (5, 10, 50)
        for decay in (0.7, 0.9)
        for shrink in (0.0, 20.0)
    ],
    "bpr": [
        {"embedding_dim": 64, "epochs": 30, "learning_rate": 1e-2, "batch_size": 4096, "reg": reg}
        for reg in (1e-5, 1e-4, 1e-3)
    ],
    "lightgcn": [
        {
            "embedding_dim": 64,
            "epochs": 40,
            "learning_rate": 5e-2,
            "batch_size": 16384,
            "reg": reg,
            "layers": layers,
        }
        for layers in (1, 3)
        for reg in (1e-4, 1e-3)
    ],
}
"""Small grids per model (keys are config fields, as ``--option key=value`` would set them)."""


@dataclass(frozen=True)
class ValidationSplit:
    train: Dataset
    """The training view the split was carved from (test tasks already hidden)."""
    tasks: list[Task]
    """Validation tasks: a training user's last training interaction + 19 unseen negatives."""

    @property
    def fit_view(self) -> Dataset:
        """What a candidate configuration is fitted on: ``train`` with every validation target hidden."""
        return self.train.hide_from(self.tasks)


def validation_split(train: Dataset, *, seed: int = 0, max_users: int = 1000) -> ValidationSplit:
    """Hold out the last training interaction of up to ``max_users`` training users.

    The held-out tasks are built by the ``classic`` scenario rule (last interaction, visible
    history >= 5, 19 uniform never-seen negatives) applied to the training view, so validation
    and test tasks are drawn the same way, while test data stays out of reach.
    """
    built = build_tasks(train, "classic", max_users, seed)
    tasks = [
        dataclasses.replace(task, task_id=f"val_{task.task_id}", scenario=VALIDATION_SCENARIO)
        for task in built.tasks
    ]
    return ValidationSplit(train, tasks)


@dataclass
class Trial:
    params: dict[str, Any]
    metrics: dict[str, float]
    fit_seconds: float


@dataclass
class TuningResult:
    method: str
    best_params: dict[str, Any]
    best_metrics: dict[str, float]
    trials: list[Trial] = field(default_factory=list)
    n_validation_tasks: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "best_params": self.best_params,
            "best_validation": self.best_metrics,
            "n_validation_tasks": self.n_validation_tasks,
            "seconds": round(self.seconds, 2),
            "trials": [
                {"params": t.params, "validation": t.metrics, "fit_seconds": round(t.fit_seconds, 2)}
                for t in self.trials
            ],
        }


def tune(
    method: str,
    split: ValidationSplit,
    *,
    seed: int = 0,
    grid: Sequence[Mapping[str, Any]] | None = None,
) -> TuningResult:
    """Fit every grid point on ``split.fit_view``, score it on ``split.tasks``, keep the best HR_avg.

    Ties keep the earlier (listed first, cheaper) grid point.
    """
    points = list(grid if grid is not None else SEARCH_SPACES[method])
    if not points:
        raise ValueError(f"empty search grid for {method!r}")
    started = time.perf_counter()
    trials: list[Trial] = []
    with Progress(transient=True, disable=not Console().is_terminal) as progress:
        bar = progress.add_task(f"tuning {method}", total=len(points))
        for params in points:
            recommender = make_method(method, MethodOptions(seed=seed, extra=dict(params)))
            report = evaluate(
                recommender, split.tasks, split.train, seed=seed, progress=False, include_per_task=False
            )
            metrics = {key: report[key] for key in METRIC_KEYS}
            trials.append(Trial(dict(params), metrics, report["method_stats"]["fit_seconds"]))
            progress.update(bar, advance=1)
    best = max(trials, key=lambda trial: trial.metrics["hr_avg"])
    return TuningResult(
        method, best.params, best.metrics, trials, len(split.tasks), time.perf_counter() - started
    )
