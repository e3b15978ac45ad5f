"""``starrec teach``: MARS over a task folder, K passes, resumable, one JSON line per run.

A run that errored is not finished: the next ``teach`` on the same folder runs it again and its
new line supersedes the failure (readers keep the last line per (task, pass)). One ``teach`` at a
time may write a run folder: a second one stops with a message naming the holder.

Several machines split one task set with ``--shard I/N``: shard I takes the tasks whose SHA-1 of
the task id is I modulo N (stable across machines and Python versions, unlike ``hash()``), and
writes its own run folder (``--out``, one per shard, marked by ``shard.json``), so shards share no
file and each resumes alone. :func:`merge_runs` concatenates the shard folders into one run folder
for ``starrec distill``; shards never hold the same (task, pass), and the merge checks that.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from starrec.contract.runs_file import RunsFile
from starrec.contract.trajectory import Trajectory
from starrec.graphs.context import Context
from starrec.graphs.display import NodeProgress
from starrec.graphs.graph import build_mars_graph
from starrec.graphs.runner import BatchSummary, RunJob, latest_runs, run_batch, summarise_runs

if TYPE_CHECKING:
    from starrec.tools.toolkit import StoreName

LOCK_NAME = "teach.lock"
SHARD_FILE = "shard.json"


def shard_of(task_id: str, count: int) -> int:
    """The shard (0..count-1) a task belongs to: SHA-1 of its id, modulo ``count``."""
    return int.from_bytes(hashlib.sha1(task_id.encode("utf-8")).digest()[:8], "big") % count


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (``--shard I/N``)."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"I/N"`` with 0 <= I < N; a one-line error otherwise."""
        index, sep, count = text.strip().partition("/")
        if not sep or not index.isdigit() or not count.isdigit() or not 0 <= int(index) < int(count):
            raise ValueError(f"--shard {text!r}: expected I/N with 0 <= I < N (0/4 ... 3/4 on 4 machines)")
        return cls(int(index), int(count))

    def owns(self, task_id: str) -> bool:
        return shard_of(task_id, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def claim_shard_folder(out: Path, shard: Shard, tasks_dir: Path) -> None:
    """Mark ``out`` as shard ``shard``'s folder; refuse a folder that holds another shard's runs."""
    path = out / SHARD_FILE
    if path.exists():
        recorded = json.loads(path.read_text(encoding="utf-8"))
        if recorded.get("shard") != str(shard):
            raise ValueError(
                f"{out} holds the runs of shard {recorded.get('shard')}, not {shard}: give every shard its "
                "own --out (merge them afterwards with `starrec merge-runs`)"
            )
        return
    path.write_text(json.dumps({"shard": str(shard), "tasks": str(tasks_dir)}) + "\n", encoding="utf-8")


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
    shard: Shard | None = None,
    store: StoreName = "ladybug",
) -> BatchSummary:
    """Record MARS runs; re-running skips runs that finished without error. Returns the summary of all runs
    (of this shard's tasks when ``shard`` is given; ``limit`` applies before sharding). ``store``: where
    the CF tools read the graph (a Ladybug file per machine, or the ``NEO4J_*`` server).

    Raises :class:`RunFolderBusyError` when another ``teach`` is writing ``out``.
    """
    with run_folder_lock(Path(out)):
        if shard is not None:
            claim_shard_folder(Path(out), shard, Path(tasks_dir))
        return _teach(
            data, tasks_dir, out, context, passes=passes, concurrency=concurrency, limit=limit, seed=seed,
            timeout_s=timeout_s, console=console, chat_model=chat_model, evidence=evidence,
            show_nodes=show_nodes, sample_temperature=sample_temperature, shard=shard, store=store,
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
    shard: Shard | None,
    store: StoreName,
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
    if shard is not None:
        chosen = [task for task in tasks if shard.owns(task.task_id)]
        console.print(f"shard {shard}: {len(chosen)} of {len(tasks)} tasks")
        tasks = chosen
    requests = build_requests(tasks, train, seed)
    if evidence is None and context.use_tools:
        from starrec.tools.toolkit import open_toolkit

        with console.status("building or opening the interaction graph and its evidence"):
            evidence = open_toolkit(data, tasks=all_tasks, store=store, show_progress=False)
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


@dataclass
class MergeReport:
    """What :func:`merge_runs` wrote: lines per source folder, and shards of the set not given."""

    out: Path
    lines: dict[str, int]
    missing_shards: list[int]
    summary: BatchSummary


def merge_runs(sources: Sequence[Path], out: Path) -> MergeReport:
    """Concatenate the run folders of ``teach --shard`` into one new run folder ``out``.

    Lines keep their order within each source (so a retried run still supersedes its failure), a
    (task, pass) found in two sources is an error (shards of one task set never overlap), and a
    shard folder of another split (a different N) or given twice is refused.
    """
    if not sources:
        raise ValueError("merge-runs needs at least one run folder")
    target = RunsFile(out)
    if target.path.exists():
        raise FileExistsError(f"{target.path} already exists; merge into a new --out folder")
    owner: dict[tuple[str, int], Path] = {}
    shards: dict[int, Path] = {}
    counts: set[int] = set()
    merged: list[dict[str, Any]] = []
    lines: dict[str, int] = {}
    for source in sources:
        runs = RunsFile(source)
        if not runs.path.is_file():
            raise FileNotFoundError(f"no runs at {runs.path}; record them with starrec teach --out {source}")
        marker = runs.path.parent / SHARD_FILE
        if marker.exists():
            shard = Shard.parse(json.loads(marker.read_text(encoding="utf-8"))["shard"])
            if shard.index in shards:
                raise ValueError(f"{source} and {shards[shard.index]} are both shard {shard}")
            shards[shard.index] = Path(source)
            counts.add(shard.count)
        records = runs.records()
        for record in records:
            key = (str(record["task_id"]), int(record.get("pass", 0)))
            if owner.setdefault(key, Path(source)) != Path(source):
                raise ValueError(
                    f"task {key[0]} pass {key[1]} was recorded in both {owner[key]} and {source}; the shards "
                    "of one task set never overlap: merge the folders of one split (one --shard I/N each)"
                )
        merged.extend(records)
        lines[str(source)] = len(records)
    if len(counts) > 1:
        raise ValueError(f"the folders come from different splits (--shard .../N with N in {sorted(counts)})")
    missing = sorted(set(range(counts.pop())) - set(shards)) if counts else []
    with run_folder_lock(Path(out)), target.path.open("x", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in merged)
        handle.flush()
        os.fsync(handle.fileno())
    summary = summarise_runs(latest_runs([Trajectory.model_validate(record) for record in merged]))
    return MergeReport(out=Path(out), lines=lines, missing_shards=missing, summary=summary)
