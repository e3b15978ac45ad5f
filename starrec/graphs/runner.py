"""Running MARS over many requests: one isolated, recorded run per (task, pass), bounded concurrency.

Shared by ``starrec teach`` (writes ``runs.jsonl``), ``starrec eval --method mars`` (the
:class:`~starrec.graphs.recommender.MarsRecommender`), ``starrec demo`` and the benchmark, so
every path records the same trajectory and isolates failures the same way: a run that raises or
times out becomes a trajectory with ``error`` set (ranking = the shown order, repaired, flagged),
and the batch goes on.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from statistics import mean
from typing import Any

from langgraph.graph.state import CompiledStateGraph

from starrec.contract.trajectory import Trajectory, hit_flags
from starrec.data.schema import Dataset, RankRequest
from starrec.eval.metrics import summarize
from starrec.graphs.context import Context
from starrec.graphs.graph import recursion_limit
from starrec.graphs.recording import TrajectoryRecorder
from starrec.graphs.state import input_from_request
from starrec.llm.usage import add_costs


@dataclass(frozen=True)
class RunJob:
    """One MARS run to do: a request, its pass number and (for scoring only) the ground truth."""

    request: RankRequest
    pass_: int = 0
    ground_truth: str | None = None
    context: Context | None = None
    """This run's own context (a sampled pass of ``teach``); None = the batch's."""


async def run_mars(
    graph: CompiledStateGraph,
    job: RunJob,
    dataset: Dataset,
    context: Context,
    *,
    model_name: str = "",
    timeout_s: float | None = None,
    callbacks: Sequence[Any] = (),
    settings: dict[str, Any] | None = None,
) -> Trajectory:
    """Run the graph on one request and return its trajectory; never raises for a failed run.

    ``settings``: ``context.settings()`` made once by a batch for its runs (it costs a quarter of a
    millisecond); ignored for a job with its own context.
    """
    settings = settings if settings is not None and job.context is None else None
    context = job.context or context
    recorder = TrajectoryRecorder()
    started = time.perf_counter()
    state: dict[str, Any] | None = None
    error: str | None = None
    graph_input = input_from_request(job.request, dataset)
    config = {
        "callbacks": [recorder, *callbacks],
        "recursion_limit": recursion_limit(context),
        "run_name": f"mars:{job.request.task_id}:{job.pass_}",
    }
    try:
        state = await asyncio.wait_for(graph.ainvoke(graph_input, context=context, config=config), timeout_s)
    except TimeoutError as failure:
        overran = timeout_s is not None and time.perf_counter() - started >= 0.99 * timeout_s
        error = f"TimeoutError: run exceeded {timeout_s:g} s" if overran else f"TimeoutError: {failure}"
    except Exception as failure:  # isolated per run, recorded and counted
        error = f"{type(failure).__name__}: {failure}"
    trajectory = recorder.trajectory(
        state if state is not None else graph_input,
        task_id=job.request.task_id,
        pass_=job.pass_,
        ground_truth=job.ground_truth,
        settings=settings if settings is not None else context.settings(),
        model=model_name,
        seconds=time.perf_counter() - started,
        error=error,
        candidates=job.request.candidates,
    )
    if state is None:
        # Scored like the harness scores a method that raised: the shown order, flagged by ``error``.
        trajectory.ranking = list(job.request.candidates)
        trajectory.hits = hit_flags(trajectory.ranking, job.ground_truth)
    return trajectory


BATCH_GC_GEN0_THRESHOLD = 50_000
"""Allocations between young collections while a batch runs (CPython's default is 700)."""


@dataclass
class _BatchGC:
    """What the outermost batch changed, so the last one out undoes exactly that."""

    batches: int = 0
    threshold_before: tuple[int, ...] | None = None
    """The thresholds the batch replaced (None: it left them alone)."""
    froze: bool = False

    @property
    def threshold_set(self) -> tuple[int, ...] | None:
        before = self.threshold_before
        return None if before is None else (BATCH_GC_GEN0_THRESHOLD, *before[1:])


_gc_lock = threading.Lock()
_gc_state = _BatchGC()


@contextmanager
def batch_gc() -> Iterator[None]:
    """Collect garbage less often while a batch runs, and never rescan the heap it started with.

    Measured in ``benchmarks/mars.py``: at concurrency 50 CPython's default collector spent about a
    quarter of the batch's time, mostly rescanning the dataset and indices loaded before it (which
    live for the whole batch) and young objects of the runs in flight. Inside this block the heap
    that existed at its start is frozen (``gc.freeze``) and the young generation is collected every
    :data:`BATCH_GC_GEN0_THRESHOLD` allocations. Nested or concurrent batches share one policy; the
    last to finish undoes it, so cycles are still collected, only later.

    The application's own choices win: a heap it froze already stays frozen (as a pre-forking
    server's does) and nothing is frozen on top; a disabled collector or a threshold of 0 is left
    alone; a threshold it sets while a batch runs is kept when the batch ends. (``gc.unfreeze`` is
    all or nothing: a ``gc.freeze()`` the application calls *while* a batch runs is undone with the
    batch's own; freeze before running batches, as servers do at start-up.)
    """
    with _gc_lock:
        state = _gc_state
        if state.batches == 0:
            if gc.get_freeze_count() == 0:
                gc.freeze()
                state.froze = True
            threshold = gc.get_threshold()
            if gc.isenabled() and 0 < threshold[0] < BATCH_GC_GEN0_THRESHOLD:
                state.threshold_before = threshold
                gc.set_threshold(BATCH_GC_GEN0_THRESHOLD, *threshold[1:])
        state.batches += 1
    try:
        yield
    finally:
        with _gc_lock:
            state.batches -= 1
            if state.batches == 0:
                if state.threshold_before is not None and gc.get_threshold() == state.threshold_set:
                    gc.set_threshold(*state.threshold_before)
                if state.froze:
                    gc.unfreeze()
                state.threshold_before, state.froze = None, False


async def run_batch(
    graph: CompiledStateGraph,
    jobs: Sequence[RunJob],
    dataset: Dataset,
    context: Context,
    *,
    concurrency: int = 4,
    model_name: str = "",
    timeout_s: float | None = None,
    on_done: Callable[[Trajectory], Awaitable[None] | None] | None = None,
    callbacks: Sequence[Any] = (),
) -> list[Trajectory]:
    """All jobs with at most ``concurrency`` in flight; ``on_done`` sees each run as it finishes.

    The batch runs under :func:`batch_gc` (fewer garbage collections, the starting heap frozen).
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    gate = asyncio.Semaphore(concurrency)
    settings = context.settings()

    async def one(job: RunJob) -> Trajectory:
        async with gate:
            trajectory = await run_mars(
                graph,
                job,
                dataset,
                context,
                model_name=model_name,
                timeout_s=timeout_s,
                callbacks=callbacks,
                settings=settings,
            )
        if on_done is not None:
            result = on_done(trajectory)
            if asyncio.iscoroutine(result):
                await result
        return trajectory

    with batch_gc():
        return list(await asyncio.gather(*(one(job) for job in jobs)))


@dataclass
class BatchSummary:
    """The numbers ``starrec teach`` prints and the benchmark stores."""

    runs: int = 0
    errors: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    repaired_runs: int = 0
    repairs: dict[str, int] = field(default_factory=dict)
    llm_calls: float = 0.0
    tokens: float = 0.0
    seconds: float = 0.0
    per_agent: dict[str, dict[str, float]] = field(default_factory=dict)
    per_model: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Model name -> totals over all runs of the calls it served: llm_calls, prompt/completion tokens,
    seconds, cost_usd (None = unknown) and the nodes it served."""
    cost_usd: float | None = 0.0
    """Dollars all runs cost together; None when some run's cost is unknown (unpriced hosted model)."""
    unpriced_runs: int = 0
    llm_cache_hits: int = 0
    llm_cache_misses: int = 0

    @property
    def cost_usd_per_run(self) -> float | None:
        return None if self.cost_usd is None else self.cost_usd / max(self.runs, 1)

    def as_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "errors": self.errors,
            **self.metrics,
            "repaired_runs": self.repaired_runs,
            "repairs": self.repairs,
            "llm_calls_per_run": self.llm_calls,
            "tokens_per_run": self.tokens,
            "seconds_per_run": self.seconds,
            "per_agent": self.per_agent,
            "per_model": self.per_model,
            "cost_usd": self.cost_usd,
            "cost_usd_per_run": self.cost_usd_per_run,
            "unpriced_runs": self.unpriced_runs,
            "llm_cache_hits": self.llm_cache_hits,
            "llm_cache_misses": self.llm_cache_misses,
        }


RANKING_REPAIRS = ("ranking_hallucinated", "ranking_duplicates", "ranking_missing")


def latest_runs(trajectories: Sequence[Trajectory]) -> list[Trajectory]:
    """One trajectory per (task, pass): the last one recorded (a retried run replaces its failure)."""
    latest: dict[tuple[str, int], Trajectory] = {}
    for trajectory in trajectories:
        latest[(trajectory.task_id, trajectory.pass_)] = trajectory
    return list(latest.values())


def summarise_runs(trajectories: Sequence[Trajectory]) -> BatchSummary:
    """HR@1/3/5 + HR_avg over the runs that finished without error (errored runs are a count, never
    scored), repair rates, and cost per agent."""
    scored = [t for t in trajectories if t.ground_truth is not None and t.error is None]
    summary = BatchSummary(runs=len(trajectories), errors=sum(t.error is not None for t in trajectories))
    if scored:
        summary.metrics = summarize([t.ranking for t in scored], [t.ground_truth or "" for t in scored])
    for trajectory in trajectories:
        if any(trajectory.repairs.get(key) for key in RANKING_REPAIRS):
            summary.repaired_runs += 1
        for key, value in trajectory.repairs.items():
            summary.repairs[key] = summary.repairs.get(key, 0) + value
    if trajectories:
        summary.llm_calls = mean(t.llm_calls for t in trajectories)
        summary.tokens = mean(t.prompt_tokens + t.completion_tokens for t in trajectories)
        summary.seconds = mean(t.seconds for t in trajectories)
    summary.cost_usd = add_costs([t.cost_usd for t in trajectories])
    summary.unpriced_runs = sum(t.cost_usd is None for t in trajectories)
    summary.llm_cache_hits = sum(t.llm_cache_hits for t in trajectories)
    summary.llm_cache_misses = sum(t.llm_cache_misses for t in trajectories)
    agents: dict[str, dict[str, float]] = {}
    for trajectory in trajectories:
        for step in trajectory.steps:
            row = agents.setdefault(
                step.node, {"runs": 0, "llm_calls": 0, "tool_calls": 0, "tokens": 0, "seconds": 0.0}
            )
            row["runs"] += 1
            row["llm_calls"] += len(step.llm_calls)
            row["tool_calls"] += len(step.tool_calls)
            row["tokens"] += sum(c.prompt_tokens + c.completion_tokens for c in step.llm_calls)
            row["seconds"] += step.seconds
    count = max(len(trajectories), 1)
    summary.per_agent = {
        node: {key: value / count for key, value in row.items()} for node, row in agents.items()
    }
    summary.per_model = usage_per_model(trajectories)
    return summary


def usage_per_model(trajectories: Sequence[Trajectory]) -> dict[str, dict[str, Any]]:
    """Every recorded LLM call's usage added up under the model that served it (per-node models)."""
    models: dict[str, dict[str, Any]] = {}
    for trajectory in trajectories:
        for step in trajectory.steps:
            for call in step.llm_calls:
                row = models.setdefault(
                    call.model or "unknown",
                    {"llm_calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "seconds": 0.0,
                     "cost_usd": 0.0, "nodes": []},
                )  # fmt: skip
                row["llm_calls"] += 1
                row["prompt_tokens"] += call.prompt_tokens
                row["completion_tokens"] += call.completion_tokens
                row["seconds"] += call.seconds
                row["cost_usd"] = add_costs([row["cost_usd"], call.cost_usd])
                if step.node not in row["nodes"]:
                    row["nodes"].append(step.node)
    return models
