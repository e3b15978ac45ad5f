"""``run_pipeline``: the stages in order, each skipped when its output exists, timed and recorded.

Rules (docs/pipeline.md):

1. a stage whose output exists is skipped and its result read back;
2. once a stage has run in this invocation, every later stage runs too (its input changed); the
   ``serve`` check never makes anything stale, ``planner-sft`` only ``eval`` (nothing else reads
   it), and ``eval`` recomputes only the row groups that depend on a stage that ran;
3. ``from_stage`` redoes that stage and every later one; ``only`` redoes that stage alone. Redone,
   ``eval`` still measures only the row groups that are missing, were measured with other settings,
   or are built on a stage that ran (delete ``eval/rows-<group>.json`` to measure a group again).

``data`` and ``teach`` never discard anything: redone, they only add what is missing. A stage a
config switch turns off (``planner-sft`` with ``eval.mars_planner: false``) is recorded as ``off``
and never runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from starrec.pipeline.config import STAGES, PipelineConfig
from starrec.pipeline.evaluation import eval_stage
from starrec.pipeline.layout import WorkLayout
from starrec.pipeline.stages import (
    PipelineRun,
    check_tasks,
    data_done,
    data_result,
    filter_stage,
    grpo_result,
    grpo_stage,
    planner_sft_enabled,
    planner_sft_stage,
    prepare_data,
    read_json,
    rl_data_stage,
    serve_stage,
    sft_stage,
    teach_done,
    teach_result,
    teach_stage,
    write_json,
)


@dataclass(frozen=True)
class Stage:
    """One step: how to run it, how to tell it is done, how to read its result back."""

    name: str
    run: Callable[[PipelineRun, frozenset[str]], dict[str, Any]]
    """(run, stages that ran earlier in this invocation) -> result."""
    done: Callable[[PipelineRun], bool] | None
    """None: always runs (a check that writes nothing later stages read)."""
    result: Callable[[PipelineRun], dict[str, Any]]
    output: str
    """What marks it done, for messages and docs."""
    enabled: Callable[[PipelineConfig], bool] | None = None
    """None: always part of the pipeline; else the config switch that turns it off."""


def _plain(
    stage: Callable[[PipelineRun], dict[str, Any]],
) -> Callable[[PipelineRun, frozenset[str]], Any]:
    return lambda run, ran: stage(run)


def _marker(relative: Callable[[WorkLayout], Any]) -> Callable[[PipelineRun], bool]:
    return lambda run: relative(run.layout).exists()


def _json(relative: Callable[[WorkLayout], Any]) -> Callable[[PipelineRun], dict[str, Any]]:
    return lambda run: read_json(relative(run.layout))


STAGE_LIST: tuple[Stage, ...] = (
    Stage(
        "data", _plain(prepare_data), data_done, data_result, "tasks-test/, tasks-train/, <dataset>-train/"
    ),
    Stage(
        "teach",
        _plain(teach_stage),
        teach_done,
        teach_result,
        "teacher-runs/runs.jsonl with a finished run per (task, pass)",
    ),
    Stage(
        "filter",
        _plain(filter_stage),
        _marker(lambda w: w.filter_report),
        _json(lambda w: w.filter_report),
        "filter.json",
    ),
    Stage(
        "planner-sft",
        _plain(planner_sft_stage),
        _marker(lambda w: w.planner_sft / "config.json"),
        _json(lambda w: w.planner_sft / "sft_metrics.json"),
        "planner-sft/config.json",
        enabled=planner_sft_enabled,
    ),
    Stage(
        "sft",
        _plain(sft_stage),
        _marker(lambda w: w.sft / "config.json"),
        _json(lambda w: w.sft / "sft_metrics.json"),
        "star-sft/config.json",
    ),
    Stage(
        "rl-data",
        _plain(rl_data_stage),
        _marker(lambda w: w.rl_data / "rl_data.json"),
        _json(lambda w: w.rl_data / "rl_data.json"),
        "star-rl/rl_data.json",
    ),
    Stage(
        "grpo",
        _plain(grpo_stage),
        _marker(lambda w: w.grpo / "config.json"),
        grpo_result,
        "star-grpo/config.json",
    ),
    Stage(
        "serve", _plain(serve_stage), None, _json(lambda w: w.serve_plan), "serve.json (always re-checked)"
    ),
    Stage(
        "eval",
        eval_stage,
        _marker(lambda w: w.results),
        _json(lambda w: w.results),
        "eval/results.json",
    ),
)
if tuple(stage.name for stage in STAGE_LIST) != STAGES:
    raise RuntimeError("starrec.pipeline.runner.STAGE_LIST must list the stages of config.STAGES, in order")
CHECK_ONLY = frozenset({"serve"})
"""Stages whose running makes nothing after them stale."""
EVAL_ONLY = frozenset({"planner-sft"})
"""Stages whose output only ``eval`` reads: their running makes only ``eval`` stale."""


def stale_before(stage: str, ran: frozenset[str]) -> bool:
    """Whether ``stage``'s output is out of date because of the stages that ran before it (rule 2)."""
    return bool(ran - CHECK_ONLY - (EVAL_ONLY if stage != "eval" else frozenset()))


def select_stages(from_stage: str | None = None, only: str | None = None) -> list[tuple[Stage, bool]]:
    """(stage, forced) in order: all stages; or ``from_stage`` and later, forced; or ``only``, forced."""
    if from_stage is not None and only is not None:
        raise ValueError("give --from STAGE or --only STAGE, not both")
    for value, flag in ((from_stage, "--from"), (only, "--only")):
        if value is not None and value not in STAGES:
            raise ValueError(f"{flag} {value!r}: unknown stage; stages are {', '.join(STAGES)}")
    if only is not None:
        return [(stage, True) for stage in STAGE_LIST if stage.name == only]
    if from_stage is not None:
        start = STAGES.index(from_stage)
        return [(stage, True) for stage in STAGE_LIST[start:]]
    return [(stage, False) for stage in STAGE_LIST]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def run_pipeline(
    config: PipelineConfig,
    *,
    from_stage: str | None = None,
    only: str | None = None,
    teacher_model: Any = None,
    planner_model: Any = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run the selected stages and return ``{"work", "stages": {name: {status, seconds, result}}}``.

    ``teacher_model`` (a LangChain chat model) stands in for the configured teacher in ``teach`` and
    the MARS rows; ``planner_model`` for the ``planner-sft`` checkpoint in the MARS-Planner row. The
    config, and every stage's status, seconds and result, go to ``pipeline.json`` in the work folder
    after each stage.
    """
    selected = select_stages(from_stage, only)
    layout = WorkLayout.of(config)
    run = PipelineRun(config, layout, console or Console(), teacher_model, planner_model)
    layout.work.mkdir(parents=True, exist_ok=True)
    check_tasks(run)
    record = read_json(layout.record) if layout.record.exists() else {}
    record["config"] = config.to_dict()
    stages_record: dict[str, Any] = record.setdefault("stages", {})
    invocation = {"started": _now(), "from": from_stage, "only": only}
    record.setdefault("invocations", []).append(invocation)
    started = time.perf_counter()
    ran: set[str] = set()
    outcome: dict[str, Any] = {}
    for stage, forced in selected:
        stale = forced or stale_before(stage.name, frozenset(ran))
        if stage.enabled is not None and not stage.enabled(config):
            entry = {"status": "off", "result": {}}
            run.console.print(f"[dim]{stage.name}: off in this config, skipped[/dim]")
        elif not stale and stage.done is not None and stage.done(run):
            entry = {**stages_record.get(stage.name, {}), "status": "skipped", "result": stage.result(run)}
            run.console.print(f"[dim]{stage.name}: done ({stage.output}), skipped[/dim]")
        else:
            run.console.rule(f"[bold]{stage.name}")
            began = time.perf_counter()
            result = stage.run(run, frozenset(ran))
            seconds = round(time.perf_counter() - began, 1)
            entry = {"status": "ran", "seconds": seconds, "finished": _now(), "result": result}
            run.console.print(f"{stage.name}: {seconds:.0f} s")
            ran.add(stage.name)
        stages_record[stage.name] = entry
        outcome[stage.name] = entry
        invocation["seconds"] = round(time.perf_counter() - started, 1)
        write_json(layout.record, record)
    if only in EVAL_ONLY:
        if outcome[only]["status"] == "ran":
            run.console.print(
                f"[yellow]--only {only}: eval was not redone; --from eval measures the rows built on "
                "it again (only those)[/yellow]"
            )
    elif only is not None and only != STAGES[-1] and only not in CHECK_ONLY:
        later = STAGES[STAGES.index(only) + 1 :]
        run.console.print(
            f"[yellow]--only {only}: the later stages ({', '.join(later)}) were not redone; "
            f"--from {later[0]} brings them up to date[/yellow]"
        )
    return {"work": str(layout.work), "record": str(layout.record), "stages": outcome}
