"""benchmarks/mars.py: its framework floor is MARS's shape, and its hosted probe is priced."""

from __future__ import annotations

import asyncio
from pathlib import Path

from benchmark_scripts import load_benchmark

from starrec.data.schema import Dataset
from starrec.data.tasks import read_tasks
from starrec.eval.harness import build_requests
from starrec.graphs.context import Context
from starrec.graphs.demo import demo_tasks
from starrec.graphs.graph import build_mars_graph
from starrec.graphs.recording import TrajectoryRecorder
from starrec.graphs.runner import RunJob, run_batch

mars = load_benchmark("mars")


def scripted_runs(ml100k_dir: Path, ml100k: Dataset, model: object, count: int = 3) -> list:
    tasks = read_tasks(demo_tasks(ml100k_dir, 50, mars.SEED))[:count]
    train = ml100k.hide_from(tasks)
    jobs = [RunJob(r, 0, t.ground_truth) for t, r in zip(tasks, build_requests(tasks, train, 0), strict=True)]
    context = Context(use_tools=False)
    graph = build_mars_graph(context, chat_model=model, evidence=None)
    return asyncio.run(run_batch(graph, jobs, train, context, concurrency=1))


def test_the_floor_takes_the_nodes_and_calls_of_a_scripted_no_tools_run(
    ml100k_dir: Path, ml100k: Dataset
) -> None:
    runs = scripted_runs(ml100k_dir, ml100k, mars.scripted_model())
    recorder = TrajectoryRecorder()
    asyncio.run(mars.framework_floor_graph().ainvoke({"done": []}, config={"callbacks": [recorder]}))
    floor_steps = [(step.node, len(step.llm_calls)) for step in recorder.steps]
    for run in runs:
        assert run.error is None
        assert [(step.node, len(step.llm_calls)) for step in run.steps] == floor_steps


def test_the_hosted_probe_is_priced_as_a_hosted_model(ml100k_dir: Path, ml100k: Dataset) -> None:
    (run,) = scripted_runs(ml100k_dir, ml100k, mars.hosted_model(), count=1)
    assert run.error is None and run.llm_calls == 10
    calls = [call for step in run.steps for call in step.llm_calls]
    assert {call.model for call in calls} == {"gpt-4o-mini"}
    assert run.cost_usd is not None and run.cost_usd > 0
