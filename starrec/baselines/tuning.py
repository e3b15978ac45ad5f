"""Honest hyper-parameter selection: a validation split carved from the training view only.

Each (sampled) training user's last training interaction becomes a validation target with 19
negatives the user never touched; every grid point is evaluated by the same harness as the
test tasks (so it is fitted on the training view with the validation targets hidden), averaged
over a few training seeds, and a configuration wins only by more than one standard error of its
paired gain (:data:`SELECTION_RULE`). Test tasks are never read: callers pass a view from which every
test task has already been hidden.
"""

from __future__ import annotations

import dataclasses
import math
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
from starrec.eval.metrics import per_task_scores

VALIDATION_SCENARIO = "validation"
METRIC_KEYS = ("hr@1", "hr@3", "hr@5", "hr_avg", "ndcg@5")

SEARCH_SPACES: dict[str, dict[str, list[Any]]] = {
    "itemknn": {"window": [5, 10, 50], "decay": [0.7, 0.9], "shrink": [0.0, 20.0]},
    "bpr": {
        "recent_weight": [0.0, 0.25, 0.5, 0.75],
        "embedding_dim": [64, 32, 128],
        "learning_rate": [5e-3, 2e-3, 1e-2],
        "reg": [1e-4, 1e-5, 1e-3],
        "negatives_per_positive": [1, 4],
    },
    "lightgcn": {
        "recent_weight": [0.0, 0.25, 0.5, 0.75],
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
winner by :data:`SELECTION_RULE` is kept before the next knob (coordinate ascent), so the cost
is the sum of the list lengths, not their product. Epochs are not a knob: early stopping on a
hold-out of the fit view chooses them for every trial. SASRec's space is the smallest because one
fit costs minutes on two CPU cores (its other knobs keep the defaults of
:class:`~starrec.baselines.sasrec.SASRecConfig`)."""


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


SELECTION_RULE = "one-se"
"""How a trial wins (recorded with every tuning result, so a checkpoint made by another rule is
not silently reused): a candidate replaces the running best only when its paired per-task gain
in validation HR_avg exceeds one standard error of that gain (the one-standard-error rule).
On ~800 validation tasks one SE is about 0.01; smaller differences are noise between fits, and
the previous rule (best mean of one fit) moved the learned models off their defaults on such
noise and lost test HR_avg doing so."""

TUNING_SEEDS: dict[str, int] = {"bpr": 3, "lightgcn": 3}
"""Training seeds averaged per trial (default 1). BPR and LightGCN fits differ by about as much
between seeds as between neighbouring configurations, so each trial is the per-task mean of three
fits; ItemKNN is deterministic, and one SASRec fit already costs minutes on two cores."""


@dataclass
class Trial:
    params: dict[str, Any]
    metrics: dict[str, float]
    fit_seconds: float
    per_task: list[float] = field(default_factory=list, repr=False)
    """Validation HR_avg of each task, averaged over the training seeds (in split order)."""
    gain: float | None = None
    """Mean paired HR_avg gain over the running best it was compared with (None for the first)."""
    gain_se: float | None = None
    """Standard error of that gain."""


def paired_gain(candidate: Sequence[float], incumbent: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the per-task difference ``candidate - incumbent``."""
    if len(candidate) != len(incumbent) or not candidate:
        raise ValueError(f"cannot pair {len(candidate)} with {len(incumbent)} per-task scores")
    differences = [a - b for a, b in zip(candidate, incumbent, strict=True)]
    mean = sum(differences) / len(differences)
    if len(differences) < 2:
        return mean, 0.0
    variance = sum((d - mean) ** 2 for d in differences) / (len(differences) - 1)
    return mean, math.sqrt(variance / len(differences))


def beats(candidate: Trial, incumbent: Trial) -> bool:
    """The one-SE rule of :data:`SELECTION_RULE`; records the gain and its SE on ``candidate``."""
    gain, se = paired_gain(candidate.per_task, incumbent.per_task)
    candidate.gain, candidate.gain_se = gain, se
    return gain > se


@dataclass
class TuningResult:
    method: str
    best_params: dict[str, Any]
    best_metrics: dict[str, float]
    trials: list[Trial] = field(default_factory=list)
    n_validation_tasks: int = 0
    seconds: float = 0.0
    seeds: int = 1
    selection: str = SELECTION_RULE
    search_space: dict[str, list[Any]] = field(default_factory=dict)
    """The knob values searched (empty for an explicit grid), so a result of another space is not reused."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "search_space": self.search_space,
            "best_params": self.best_params,
            "best_validation": self.best_metrics,
            "n_validation_tasks": self.n_validation_tasks,
            "seconds": round(self.seconds, 2),
            "seeds": self.seeds,
            "selection": self.selection,
            "trials": [
                {
                    "params": t.params,
                    "validation": t.metrics,
                    "fit_seconds": round(t.fit_seconds, 2),
                    "gain_over_best": None if t.gain is None else round(t.gain, 4),
                    "gain_se": None if t.gain_se is None else round(t.gain_se, 4),
                }
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
    seeds: int | None = None,
    grid: Sequence[Mapping[str, Any]] | None = None,
    space: Mapping[str, Sequence[Any]] | None = None,
) -> TuningResult:
    """Pick ``method``'s configuration on ``split.tasks`` by the rule of :data:`SELECTION_RULE`.

    With ``grid``, the points are compared in order against the running best (the first point
    starts); otherwise ``space`` (default ``SEARCH_SPACES[method]``) is searched one knob at a
    time as described there, starting from the defaults. Every trial is fitted on
    ``split.fit_view`` with the training seeds ``seed, seed + 1, ...`` (``seeds``, default
    ``TUNING_SEEDS[method]`` or 1); the candidate shuffle always uses ``seed``.
    """
    if grid is not None and not grid:
        raise ValueError(f"empty search grid for {method!r}")
    space = space if space is not None else SEARCH_SPACES.get(method, {})
    if grid is None and not space:
        raise ValueError(f"empty search space for {method!r}")
    n_seeds = seeds if seeds is not None else TUNING_SEEDS.get(method, 1)
    if n_seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {n_seeds}")
    truths = [task.ground_truth or "" for task in split.tasks]
    started = time.perf_counter()
    trials: dict[tuple[tuple[str, Any], ...], Trial] = {}

    def trial(params: Mapping[str, Any]) -> Trial:
        key = tuple(sorted(params.items()))
        if key not in trials:
            fit_seconds, per_task = 0.0, [0.0] * len(truths)
            metrics = dict.fromkeys(METRIC_KEYS, 0.0)
            for offset in range(n_seeds):
                recommender = make_method(method, MethodOptions(seed=seed + offset, extra=dict(params)))
                report = evaluate(recommender, split.tasks, split.train, seed=seed, progress=False)
                rankings = [entry["ranking"] for entry in report["per_task"]]
                scores = per_task_scores(rankings, truths)["hr_avg"]
                per_task = [total + score / n_seeds for total, score in zip(per_task, scores, strict=True)]
                fit_seconds += report["method_stats"]["fit_seconds"]
                metrics = {name: metrics[name] + report[name] / n_seeds for name in METRIC_KEYS}
            trials[key] = Trial(dict(params), metrics, fit_seconds, per_task)
            progress.update(bar, advance=1)
        return trials[key]

    total = len(grid) if grid is not None else sum(len(values) for values in space.values()) - len(space) + 1
    with Progress(transient=True, disable=not Console().is_terminal) as progress:
        bar = progress.add_task(f"tuning {method}", total=total)
        points = list(grid) if grid is not None else [coordinate_points(space)]
        best = trial(points[0])
        for point in points[1:]:
            candidate = trial(point)
            if candidate is not best and beats(candidate, best):
                best = candidate
        if grid is None:
            for knob, values in space.items():
                for value in values:
                    candidate = trial({**best.params, knob: value})
                    if candidate is not best and beats(candidate, best):
                        best = candidate
    ordered = list(trials.values())
    return TuningResult(
        method,
        best.params,
        best.metrics,
        ordered,
        len(split.tasks),
        time.perf_counter() - started,
        seeds=n_seeds,
        search_space={} if grid is not None else {knob: list(values) for knob, values in space.items()},
    )
