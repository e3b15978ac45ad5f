"""``starrec teach``: MARS over a task folder, K passes, resumable, one JSON line per run."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from starrec.distill.trajectory import Trajectory
from starrec.graphs.context import Context
from starrec.graphs.display import NodeProgress
from starrec.graphs.graph import build_mars_graph
from starrec.graphs.recording import RunsFile, run_line
from starrec.graphs.runner import BatchSummary, RunJob, run_batch, summarise_runs


def plan_jobs(
    tasks: list[Any], requests: list[Any], passes: int, finished: set[tuple[str, int]]
) -> list[RunJob]:
    """Every (task, pass) not yet recorded, pass-major so pass 0 of every task comes first."""
    return [
        RunJob(request, pass_, task.ground_truth)
        for pass_ in range(passes)
        for task, request in zip(tasks, requests, strict=True)
        if (task.task_id, pass_) not in finished
    ]


def teach(
    data: Path,
    tasks_dir: Path,
    out: Path,
    context: Context,
    *,
    passes: int = 1,
    concurrency: int = 1,
    limit: int | None = None,
    seed: int = 0,
    timeout_s: float | None = None,
    console: Console | None = None,
    chat_model: Any = None,
    evidence: Any = None,
    show_nodes: bool = False,
) -> BatchSummary:
    """Record MARS runs; re-running skips finished (task, pass) pairs. Returns the summary of all runs."""
    from starrec.data.agentsociety import load_dataset
    from starrec.data.tasks import read_tasks, warn_unknown_ids
    from starrec.eval.harness import build_requests

    console = console or Console(stderr=True)
    all_tasks = read_tasks(tasks_dir)
    if not all_tasks:
        raise ValueError(f"no tasks in {tasks_dir}")
    dataset = load_dataset(data)
    warn_unknown_ids(all_tasks, dataset, str(tasks_dir))
    # Hide every task's answer (not only the first N): the same graph serves any --limit.
    train = dataset.hide_from(all_tasks)
    tasks = all_tasks[:limit] if limit is not None else all_tasks
    requests = build_requests(tasks, train, seed)
    if evidence is None and context.use_tools:
        from starrec.tools.toolkit import open_toolkit

        with console.status("building or opening the interaction graph and its evidence"):
            evidence = open_toolkit(data, tasks=all_tasks, show_progress=False)
    runs = RunsFile(out)
    if runs.repair_torn_tail():
        console.print(f"[yellow]{runs.path}: cut a torn last line (a killed run); it will be redone[/yellow]")
    jobs = plan_jobs(tasks, requests, passes, runs.finished())
    skipped = len(tasks) * passes - len(jobs)
    if skipped:
        console.print(f"resuming: {skipped} finished run(s) in {runs.path} are kept, {len(jobs)} to do")
    graph = build_mars_graph(context, chat_model=chat_model, evidence=evidence)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("errors {task.fields[errors]}"),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        tracker = bar.add_task("MARS runs", total=len(jobs), errors=0)
        errors = 0

        def record(trajectory: Trajectory) -> None:
            nonlocal errors
            runs.append(run_line(trajectory))
            errors += trajectory.error is not None
            bar.update(tracker, advance=1, errors=errors)

        asyncio.run(
            run_batch(
                graph,
                jobs,
                train,
                context,
                concurrency=concurrency,
                model_name=context.llm,
                timeout_s=timeout_s,
                on_done=record,
                callbacks=[NodeProgress(console)] if show_nodes else (),
            )
        )
    wanted = {(task.task_id, p) for task in tasks for p in range(passes)}
    recorded = [
        Trajectory.model_validate(line)
        for line in runs.records()
        if (str(line["task_id"]), int(line.get("pass", 0))) in wanted
    ]
    return summarise_runs(recorded)
