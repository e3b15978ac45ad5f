"""Outcome filtering: keep the teacher runs whose answer was right .

The teacher runs each task several times (``starrec teach --passes K``); a run survives when the
ground truth is in its top-k (k = 1 in the paper), it finished without error, and it is not
*empty*: a run whose ranker named no valid candidate (the ranking is all repair) or whose agents
all fell back teaches the student nothing but the fallback, so it is dropped and counted. A run
retried after an error supersedes the failure (the last line per (task, pass) counts). The
report counts all of it per scenario, so a thin scenario is visible before training.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from starrec.contract.ablations import ABLATION_SWITCHES, check_ablation
from starrec.contract.roster import FIXED_NODES
from starrec.contract.trajectory import Trajectory, hit_at_k
from starrec.distill.chain import run_label


def run_ablation(trajectory: Trajectory) -> str | None:
    """The ablation a run was recorded with, read from its context settings."""
    settings = trajectory.settings
    switched_off = [name for name, key in ABLATION_SWITCHES.items() if settings.get(key) is False]
    if len(switched_off) > 1:
        raise ValueError(
            f"{run_label(trajectory)} has several ablations at once ({switched_off}); "
            "STAR ablations use one switch per run"
        )
    return switched_off[0] if switched_off else None


def empty_reason(trajectory: Trajectory) -> str | None:
    """Why a finished run carries no teacher signal (None when it does)."""
    candidates = len(trajectory.candidates) or len(trajectory.ranking)
    if candidates and trajectory.repairs.get("ranking_missing", 0) >= candidates:
        return "ranking fully repaired"
    agent_steps = [step for step in trajectory.steps if step.node not in FIXED_NODES]
    if agent_steps and all(step.repairs.get("fallback") for step in agent_steps):
        return "every agent fell back"
    return None


def latest_per_run(trajectories: Iterable[Trajectory]) -> tuple[list[Trajectory], int]:
    """The last line per (task, pass) (a retried run replaces its failure), and how many were superseded."""
    latest: dict[tuple[str, int], Trajectory] = {}
    total = 0
    for trajectory in trajectories:
        total += 1
        latest[(trajectory.task_id, trajectory.pass_)] = trajectory
    return list(latest.values()), total - len(latest)


@dataclass(slots=True)
class ScenarioCount:
    runs: int = 0
    tasks: int = 0
    errored: int = 0
    empty: int = 0
    """Finished runs dropped because the ranking was fully repaired or every agent fell back."""
    kept_runs: int = 0
    kept_tasks: int = 0


@dataclass(slots=True)
class FilterReport:
    top_k: int
    ablation: str | None
    scenarios: dict[str, ScenarioCount] = field(default_factory=dict)
    superseded: int = 0
    """Earlier lines of a (task, pass) that was recorded again (errored runs retried)."""

    def total(self) -> ScenarioCount:
        total = ScenarioCount()
        for count in self.scenarios.values():
            for name in ("runs", "tasks", "errored", "empty", "kept_runs", "kept_tasks"):
                setattr(total, name, getattr(total, name) + getattr(count, name))
        return total

    def to_dict(self) -> dict[str, object]:
        rows = {name: asdict(count) for name, count in sorted(self.scenarios.items())}
        return {
            "top_k": self.top_k,
            "ablation": self.ablation,
            "scenarios": rows,
            "total": asdict(self.total()),
            "superseded": self.superseded,
        }


def outcome_filter(
    trajectories: Iterable[Trajectory], top_k: int = 1, ablation: str | None = None
) -> tuple[list[Trajectory], FilterReport]:
    """Runs that finished and ranked the ground truth in their top-k, plus per-scenario counts.

    Every run must have been recorded with ``ablation`` (None = the full teacher): mixing ablation
    settings in one training set is an error, not a silent filter.
    """
    check_ablation(ablation)
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    report = FilterReport(top_k=top_k, ablation=ablation)
    trajectories, report.superseded = latest_per_run(trajectories)
    seen_tasks: dict[str, set[str]] = {}
    kept_tasks: dict[str, set[str]] = {}
    kept: list[Trajectory] = []
    for trajectory in trajectories:
        recorded = run_ablation(trajectory)
        if recorded != ablation:
            raise ValueError(
                f"{run_label(trajectory)} was recorded with ablation {recorded or 'none'}, "
                f"but {ablation or 'none'} was asked for; filter runs of one setting at a time"
            )
        scenario = trajectory.scenario or "unknown"
        count = report.scenarios.setdefault(scenario, ScenarioCount())
        count.runs += 1
        seen_tasks.setdefault(scenario, set()).add(trajectory.task_id)
        if trajectory.error:
            count.errored += 1
            continue
        if empty_reason(trajectory) is not None:
            count.empty += 1
            continue
        if hit_at_k(trajectory.ranking, trajectory.ground_truth, top_k):
            count.kept_runs += 1
            kept_tasks.setdefault(scenario, set()).add(trajectory.task_id)
            kept.append(trajectory)
    for scenario, count in report.scenarios.items():
        count.tasks = len(seen_tasks.get(scenario, ()))
        count.kept_tasks = len(kept_tasks.get(scenario, ()))
    return kept, report
