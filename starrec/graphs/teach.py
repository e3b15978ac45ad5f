"""``starrec teach``: MARS over a task folder, K passes, resumable, one JSON line per run.

A run that errored is not finished: the next ``teach`` on the same folder runs it again and its
new line supersedes the failure (readers keep the last line per (task, pass)). One ``teach`` at a
time may write a run folder: a second one stops with a message naming the holder.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from starrec.contract.runs_file import RunsFile
from starrec.contract.trajectory import Trajectory
from starrec.graphs.context import Context
from starrec.graphs.display import NodeProgress
from starrec.graphs.graph import build_mars_graph
from starrec.graphs.runner import BatchSummary, RunJob, latest_runs, run_batch, summarise_runs

LOCK_NAME = "teach.lock"


class RunFolderBusyError(RuntimeError):
    """Another ``starrec teach`` holds the run folder."""


@contextmanager
def run_folder_lock(out: Path) -> Iterator[None]:
    """Exclusive lock on a run folder for the life of one ``teach`` (released even if it crashes)."""
    from filelock import FileLock, Timeout

    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = path.with_suffix(".holder")
        who = holder.read_text(encoding="utf-8").strip() if holder.exists() else "another process"
        raise RunFolderBusyError(
            f"{out} is being written by {who}; wait for it to finish or use another --out"
        ) from None
    holder = path.with_suffix(".holder")
    holder.write_text(f"starrec teach (pid {os.getpid()}, host {socket.gethostname()})\n", encoding="utf-8")
    try:
        yield
    finally:
        holder.unlink(missing_ok=True)
        lock.release()


def finished_runs(records: list[dict[str, Any]]) -> set[tuple[str, int]]:
    """(task, pass) pairs whose latest recorded run has no error: only these are skipped on resume."""
    latest: dict[tuple[str, int], bool] = {}
    for record in records:
        latest[(str(record["task_id"]), int(record.get("pass", 0)))] = not record.get("error")
    return {key for key, ok in latest.items() if ok}


DEFAULT_SAMPLE_TEMPERATURE = 0.7
"""Temperature of every pass when ``teach`` runs K > 1 passes (the paper samples at 0.7)."""


def pass_contexts(context: Context, passes: int, sample_temperature: float) -> list[Context]:
    """One context per pass: one pass runs ``context`` as given; K > 1 passes are K samples
    (``sample_temperature``, seed ``context.seed + pass``), so outcome filtering and the RL buckets
    see different trajectories instead of K copies of one greedy run."""
    if passes == 1:
        return [context]
    if sample_temperature <= 0:
        raise ValueError(
            f"--sample-temperature {sample_temperature:g}: K > 1 passes must sample (> 0), else every pass "
            "repeats the same run"
        )
    return [context.for_pass(pass_, sample_temperature) for pass_ in range(passes)]


def plan_jobs(
    tasks: list[Any],
    requests: list[Any],
    passes: int,
    finished: set[tuple[str, int]],
    contexts: list[Context] | None = None,
) -> list[RunJob]:
    """Every (task, pass) not yet recorded, pass-major so pass 0 of every task comes first."""
    return [
        RunJob(request, pass_, task.ground_truth, contexts[pass_] if contexts else None)
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
    sample_temperature: float = DEFAULT_SAMPLE_TEMPERATURE,
) -> BatchSummary:
    """Record MARS runs; re-running skips runs that finished without error. Returns the summary of all runs.

    Raises :class:`RunFolderBusyError` when another ``teach`` is writing ``out``.
    """
    with run_folder_lock(Path(out)):
        return _teach(
            data, tasks_dir, out, context, passes=passes, concurrency=concurrency, limit=limit, seed=seed,
            timeout_s=timeout_s, console=console, chat_model=chat_model, evidence=evidence,
            show_nodes=show_nodes, sample_temperature=sample_temperature,
        )  # fmt: skip


def _teach(
    data: Path,
    tasks_dir: Path,
    out: Path,
    context: Context,
    *,
    passes: int,
    concurrency: int,
    limit: int | None,
    seed: int,
    timeout_s: float | None,
    console: Console | None,
    chat_model: Any,
    evidence: Any,
    show_nodes: bool,
    sample_temperature: float,
) -> BatchSummary:
    from starrec.data.agentsociety import load_dataset
    from starrec.data.tasks import read_tasks, warn_unknown_ids
    from starrec.eval.harness import build_requests

    console = console or Console(stderr=True)
    contexts = pass_contexts(context, passes, sample_temperature)
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
    records = runs.records()
    finished = finished_runs(records)
    jobs = plan_jobs(tasks, requests, passes, finished, contexts)
    skipped = len(tasks) * passes - len(jobs)
    retried = len({(str(r["task_id"]), int(r.get("pass", 0))) for r in records if r.get("error")}
                  - finished)  # fmt: skip
    if skipped or retried:
        console.print(
            f"resuming: {skipped} finished run(s) in {runs.path} are kept, {len(jobs)} to do"
            + (f" ({retried} of them errored before and are retried)" if retried else "")
        )
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
            runs.append(trajectory.to_line())
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
    return summarise_runs(latest_runs(recorded))
