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

SEARCH_SPACES: dict[str, dict[str, list[Any]]] = {
    "itemknn": {"window": [5, 10, 50], "decay": [0.7, 0.9], "shrink": [0.0, 20.0]},
    "bpr": {
        "embedding_dim": [64, 32, 128],
        "learning_rate": [5e-3, 2e-3, 1e-2],
        "reg": [1e-4, 1e-5, 1e-3],
        "negatives_per_positive": [1, 4],
    },
    "lightgcn": {
        "layers": [3, 1, 2],
        "embedding_dim": [64, 128],
        "reg": [1e-4, 1e-3],
        "negatives_per_positive": [1, 4],
    },
    "sasrec": {"dropout": [0.2, 0.5]},
}
"""Per model, the values tried for each knob (keys are config fields, as ``--option key=value``
would set them; the first value is the starting point). :func:`tune` searches them one knob at a
time: every value of a knob is tried with the best values found so far for the others, and the
best is kept before the next knob (coordinate ascent), so the cost is the sum of the list
lengths, not their product. Epochs are not a knob: early stopping on a hold-out of the fit view
chooses them for every trial. SASRec's space is the smallest because one fit costs minutes on
two CPU cores (its other knobs keep the defaults of :class:`~starrec.baselines.sasrec.SASRecConfig`)."""


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


def coordinate_points(space: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """The starting point of a search space: every knob at its first value."""
    return {knob: values[0] for knob, values in space.items()}


def tune(
    method: str,
    split: ValidationSplit,
    *,
    seed: int = 0,
    grid: Sequence[Mapping[str, Any]] | None = None,
    space: Mapping[str, Sequence[Any]] | None = None,
) -> TuningResult:
    """Pick ``method``'s configuration by validation HR_avg on ``split.tasks``.

    With ``grid``, every listed point is tried; otherwise ``space`` (default
    ``SEARCH_SPACES[method]``) is searched one knob at a time as described there. Every trial
    is fitted on ``split.fit_view``. Ties keep the earlier (listed first) point.
    """
    if grid is not None and not grid:
        raise ValueError(f"empty search grid for {method!r}")
    space = space if space is not None else SEARCH_SPACES.get(method, {})
    if grid is None and not space:
        raise ValueError(f"empty search space for {method!r}")
    started = time.perf_counter()
    trials: dict[tuple[tuple[str, Any], ...], Trial] = {}

    def trial(params: Mapping[str, Any]) -> Trial:
        key = tuple(sorted(params.items()))
        if key not in trials:
            recommender = make_method(method, MethodOptions(seed=seed, extra=dict(params)))
            report = evaluate(
                recommender, split.tasks, split.train, seed=seed, progress=False, include_per_task=False
            )
            metrics = {name: report[name] for name in METRIC_KEYS}
            trials[key] = Trial(dict(params), metrics, report["method_stats"]["fit_seconds"])
            progress.update(bar, advance=1)
        return trials[key]

    total = len(grid) if grid is not None else sum(len(values) for values in space.values()) - len(space) + 1
    with Progress(transient=True, disable=not Console().is_terminal) as progress:
        bar = progress.add_task(f"tuning {method}", total=total)
        if grid is not None:
            best = max((trial(point) for point in grid), key=lambda t: t.metrics["hr_avg"])
        else:
            best = trial(coordinate_points(space))
            for knob, values in space.items():
                for value in values:
                    candidate = trial({**best.params, knob: value})
                    if candidate.metrics["hr_avg"] > best.metrics["hr_avg"]:
                        best = candidate
    ordered = list(trials.values())
    return TuningResult(
        method, best.params, best.metrics, ordered, len(split.tasks), time.perf_counter() - started
    )
