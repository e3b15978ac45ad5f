"""MARS teacher benchmark: orchestration overhead, throughput, hit rates with SmolLM2, ablations.

(a) overhead per run with a zero-latency scripted model (what LangGraph + agents + recording cost);
(b) runs/s at concurrency 1/10/50 with a scripted async model sleeping 50 ms per call;
(c) MARS with the local SmolLM2-135M model on MovieLens-100k classic tasks: ``ranker_fusion`` llm
    and rrf next to random / pop / itemknn on the same tasks and the same shuffled candidates;
(d) the ablations (no_tools, no_planner, no_reflector) with the local model on a subset, plus their
    structural cost (LLM calls, tokens) with the scripted model on every task.

Local-model runs go through ``starrec teach`` into ``benchmarks/work/`` (git-ignored), so an
interrupted benchmark resumes where it stopped. rrf is computed from the same recorded runs as
llm (the ranker records the repaired LLM order and the CF order; fusion is deterministic), so
the two differ only by the fusion. Writes ``benchmarks/results/mars.{json,md,png}``.

    python benchmarks/mars.py [--tasks 50] [--ablation-tasks 10] [--skip-local] [--baseline REV]

``--baseline REV`` adds (e): the no_tools overhead and the concurrency-50 throughput of commit
``REV`` (a ``git worktree`` under ``benchmarks/work/``) and of this tree, each measured in its own
subprocess with its own ``PYTHONPATH``, interleaved round by round, with the load average of each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TypedDict

from langchain_core.callbacks import adispatch_custom_event
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command
from rich.console import Console

from starrec.config import get_settings
from starrec.contract.ablations import ABLATIONS
from starrec.contract.roster import ABSTRACTOR, AGENT_NODES, PLANNER, RANKER, REFLECTOR, ROSTER, Roster
from starrec.contract.runs_file import RunsFile
from starrec.contract.trajectory import Trajectory
from starrec.data import fetch_movielens_100k, load_dataset
from starrec.data.tasks import read_tasks
from starrec.eval.harness import build_requests
from starrec.eval.metrics import summarize
from starrec.graphs.context import Context
from starrec.graphs.demo import DEMO_KNOBS, baseline_reports, demo_tasks
from starrec.graphs.graph import build_mars_graph
from starrec.graphs.recording import STEP_EVENT, TrajectoryRecorder
from starrec.graphs.runner import RunJob, run_batch, summarise_runs
from starrec.graphs.teach import teach
from starrec.llm.scripted import ScriptedChatModel
from starrec.tools.toolkit import open_toolkit

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
WORK_DIR = REPO_ROOT / "benchmarks" / "work"
CANDIDATE_LINE = re.compile(r"^- \[([^\]]+)\]", re.MULTILINE)
SEED = 0


def scripted_model(latency_s: float = 0.0) -> ScriptedChatModel:
    """Plausible answers for every node; the ranker returns the candidates it was shown, reversed."""
    analysis = json.dumps(
        {"thinking": "t", "conclusions": ["likes drama", "rates generously"], "evidence_ids": []}
    )

    def ranker(messages: list[Any]) -> str:
        shown = CANDIDATE_LINE.findall(str(messages[-1].content).split("Candidates (")[-1])
        return json.dumps({"thinking": "r", "ranking": list(reversed(shown))})

    script = {
        "abstractor": ["The viewer watched dramas and comedies in the 1990s, e.g. [1], [50]."],
        "planner": [json.dumps({"thinking": "all", "agents": list(AGENT_NODES)})],
        **{agent: [analysis] for agent in AGENT_NODES},
        "reflector": [json.dumps({"verdict": "pass", "issues": []})],
        "ranker": [ranker],
    }
    return ScriptedChatModel(responses=script, cycle=True, latency_s=latency_s)


class HostedScriptedModel(ScriptedChatModel):
    """The scripted model posing as a hosted, priced model: the recorder prices each of its calls."""

    model_name: str = "gpt-4o-mini"

    @property
    def _llm_type(self) -> str:
        return "openai-chat"


def hosted_model() -> ScriptedChatModel:
    scripted = scripted_model()
    return HostedScriptedModel(responses=scripted.responses, cycle=True)


FLOOR_LLM_CALLS = {ABSTRACTOR: 3}
"""LLM calls per node in the framework floor (others: one), the scripted no_tools run's count."""


class InstantChatModel(BaseChatModel):
    """Answers ``{}`` at once and does nothing else: what LangChain's own invocation costs."""

    @property
    def _llm_type(self) -> str:
        return "starrec-scripted"

    def _generate(
        self, messages: list[Any], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="{}"))])

    async def _agenerate(
        self, messages: list[Any], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        return self._generate(messages)


class FloorState(TypedDict):
    done: list[str]


def floor_order(roster: Roster = ROSTER) -> list[str]:
    """The nodes a scripted no_tools run takes: every stage, the planner's four agents."""
    return [ABSTRACTOR, PLANNER, *roster.names[:4], REFLECTOR, RANKER]


def framework_floor_graph(roster: Roster = ROSTER) -> Any:
    """MARS's shape with no-op nodes: the same node names and order, routed by ``Command`` as MARS
    is, each node making MARS's LLM calls to :class:`InstantChatModel` and reporting one step
    event. What is left of a run's time is LangGraph, LangChain and the recorder alone."""
    model = InstantChatModel()
    order = floor_order(roster)

    def node(name: str, destination: str) -> Any:
        async def run(state: FloorState) -> Command[str]:
            for _ in range(FLOOR_LLM_CALLS.get(name, 1)):
                await model.ainvoke([SystemMessage(content=name), HumanMessage(content="go")])
            await adispatch_custom_event(STEP_EVENT, {"node": name, "output": {}})
            return Command(update={"done": [*state["done"], name]}, goto=destination)

        return run

    builder = StateGraph(FloorState)
    builder.add_edge(START, order[0])
    for name, destination in zip(order, [*order[1:], END], strict=True):
        builder.add_node(name, node(name, destination), destinations=(destination,))
    return builder.compile(name="framework-floor")


async def floor_runs(graph: Any, count: int) -> list[float]:
    """Milliseconds per framework-floor run, each with its own recorder, as ``run_mars`` attaches."""
    per_run = []
    for _ in range(count):
        started = time.perf_counter()
        await graph.ainvoke({"done": []}, config={"callbacks": [TrajectoryRecorder()]})
        per_run.append((time.perf_counter() - started) * 1000)
    return per_run


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed_batch(
    graph: Any, jobs: list[RunJob], train: Any, context: Context, concurrency: int
) -> tuple[list[Trajectory], float]:
    started = time.perf_counter()
    runs = await run_batch(graph, jobs, train, context, concurrency=concurrency)
    return runs, time.perf_counter() - started


OVERHEAD_CONFIGS: dict[str, Context] = {
    "no_tools": Context(use_tools=False),
    "ranker prior: neighbour lists (before)": Context(ranker_prior="neighbour_lists"),
    "ranker prior: candidate_cf (after)": Context(),
}
"""(a)'s configurations; the two ranker priors are measured in the same run, interleaved."""


def overhead(jobs: list[RunJob], train: Any, evidence: Any, repeats: int) -> dict[str, Any]:
    """(a): per-run wall time with a model that answers instantly; the priors side by side."""
    graphs = {
        label: build_mars_graph(context, chat_model=scripted_model(), evidence=evidence)
        for label, context in OVERHEAD_CONFIGS.items()
    }
    per_run: dict[str, list[float]] = {label: [] for label in graphs}
    ranker_ms: dict[str, list[float]] = {label: [] for label in graphs}
    queries: dict[str, list[int]] = {label: [] for label in graphs}
    calls: dict[str, int] = {}
    floor = framework_floor_graph()
    floor_ms: list[float] = []
    for label, graph in graphs.items():
        asyncio.run(timed_batch(graph, jobs[:2], train, OVERHEAD_CONFIGS[label], 1))  # warm-up
    asyncio.run(floor_runs(floor, 2))
    for _ in range(repeats):
        floor_ms.extend(asyncio.run(floor_runs(floor, len(jobs))))
        for label, graph in graphs.items():  # interleaved, so load changes hit every configuration
            runs, _ = asyncio.run(timed_batch(graph, jobs, train, OVERHEAD_CONFIGS[label], 1))
            assert all(run.error is None for run in runs), [run.error for run in runs if run.error]
            per_run[label].extend(run.seconds * 1000 for run in runs)
            for run in runs:
                ranker = next(step for step in run.steps if step.node == "ranker")
                ranker_ms[label].append(ranker.seconds * 1000)
                queries[label].append(len(ranker.output.get("cf_queries", [])))
            calls[label] = runs[0].llm_calls
    rows = {
        label: {
            "runs": len(values),
            "mean_ms": statistics.fmean(values),
            "p50_ms": percentile(values, 0.5),
            "p95_ms": percentile(values, 0.95),
            "ranker_p50_ms": percentile(ranker_ms[label], 0.5),
            "ranker_cf_queries_per_run": statistics.fmean(queries[label]),
            "llm_calls_per_run": calls[label],
        }
        for label, values in per_run.items()
    }
    rows[FLOOR_LABEL] = {
        "runs": len(floor_ms),
        "mean_ms": statistics.fmean(floor_ms),
        "p50_ms": percentile(floor_ms, 0.5),
        "p95_ms": percentile(floor_ms, 0.95),
        "llm_calls_per_run": sum(FLOOR_LLM_CALLS.get(name, 1) for name in floor_order()),
    }
    return rows


FLOOR_LABEL = "framework floor: MARS's shape, no-op nodes"


def throughput(
    jobs: list[RunJob], train: Any, evidence: Any, latency_s: float, repeats: int = 3
) -> dict[str, Any]:
    """(b): runs/s at concurrency 1, 10, 50 with every LLM call sleeping ``latency_s`` (async);
    the median of ``repeats`` batches at each concurrency."""
    context = Context()
    results = {}
    for concurrency in (1, 10, 50):
        graph = build_mars_graph(context, chat_model=scripted_model(latency_s), evidence=evidence)
        batch = (jobs * 10)[: max(10, concurrency * 4)]
        samples = []
        for _ in range(repeats):
            runs, seconds = asyncio.run(timed_batch(graph, batch, train, context, concurrency))
            assert all(run.error is None for run in runs)
            samples.append((seconds, sum(run.llm_calls for run in runs)))
        seconds, calls = sorted(samples)[len(samples) // 2]
        results[str(concurrency)] = {
            "runs": len(batch),
            "batches": repeats,
            "seconds": seconds,
            "runs_per_s": len(batch) / seconds,
            "runs_per_s_samples": [len(batch) / s for s, _ in samples],
            "llm_calls_per_s": calls / seconds,
            "ideal_runs_per_s": concurrency / (calls / len(batch) * latency_s),
        }
    return results


def probe(kind: str, repeats: int, latency_s: float) -> dict[str, Any]:
    """One side of (e), run inside the tree under test: only APIs the baseline also has."""
    data_dir = fetch_movielens_100k(get_settings().cache_dir / "datasets" / "ml-100k")
    tasks = read_tasks(demo_tasks(data_dir, 50, SEED))
    train = load_dataset(data_dir).hide_from(tasks)
    evidence = open_toolkit(data_dir, tasks=tasks)
    jobs = [
        RunJob(request, 0, task.ground_truth)
        for task, request in zip(tasks, build_requests(tasks, train, SEED), strict=True)
    ]
    if kind in ("overhead", "hosted"):
        context = Context(use_tools=False)
        model = scripted_model() if kind == "overhead" else hosted_model()
        graph = build_mars_graph(context, chat_model=model, evidence=evidence)
        asyncio.run(timed_batch(graph, jobs[:2], train, context, 1))  # warm-up
        per_run: list[float] = []
        for _ in range(repeats):
            runs, _ = asyncio.run(timed_batch(graph, jobs[:20], train, context, 1))
            per_run.extend(run.seconds * 1000 for run in runs)
        return {"per_run_ms": per_run}
    context = Context()
    graph = build_mars_graph(context, chat_model=scripted_model(latency_s), evidence=evidence)
    # Warm-up, as (b) is warm: the first runs build the CF index (about half a second), not measured.
    asyncio.run(timed_batch(graph, jobs[:10], train, context, 10))
    runs, seconds = asyncio.run(timed_batch(graph, (jobs * 10)[:200], train, context, 50))
    return {"runs": len(runs), "seconds": seconds, "errors": sum(r.error is not None for r in runs)}


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def side_by_side(baseline: str, rounds: int, repeats: int, latency_ms: int) -> dict[str, Any]:
    """(e): ``baseline`` and this tree, interleaved: overhead (no_tools) and throughput (c=50)."""
    commit = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", baseline], check=True, capture_output=True, text=True
    ).stdout.strip()
    tree = WORK_DIR / f"baseline-{commit[:10]}"
    if not tree.exists():
        subprocess.run(
            ["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach", str(tree), commit], check=True
        )
    trees = {"before": tree, "after": REPO_ROOT}
    samples: dict[str, dict[str, list[Any]]] = {
        side: {"per_run_ms": [], "hosted_per_run_ms": [], "runs_per_s": [], "load": []} for side in trees
    }
    for _ in range(rounds):
        for kind in ("overhead", "hosted", "throughput"):
            for side, root in trees.items():
                env = {**os.environ, "PYTHONPATH": str(root)}
                command = [sys.executable, __file__, "--probe", kind, "--repeats", str(repeats),
                           "--latency-ms", str(latency_ms)]  # fmt: skip
                load = load_average()
                out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
                result = json.loads(out.strip().splitlines()[-1])
                samples[side]["load"].append(f"{kind} {load}")
                if kind in ("overhead", "hosted"):
                    key = "per_run_ms" if kind == "overhead" else "hosted_per_run_ms"
                    samples[side][key].extend(result["per_run_ms"])
                else:
                    assert result["errors"] == 0, result
                    samples[side]["runs_per_s"].append(result["runs"] / result["seconds"])
    return {
        "baseline": commit,
        "rounds": rounds,
        "sides": {
            side: {
                "overhead_runs": len(values["per_run_ms"]),
                "overhead_mean_ms": statistics.fmean(values["per_run_ms"]),
                "overhead_p50_ms": percentile(values["per_run_ms"], 0.5),
                "hosted_mean_ms": statistics.fmean(values["hosted_per_run_ms"]),
                "throughput_runs_per_s": values["runs_per_s"],
                "throughput_median": statistics.median(values["runs_per_s"]),
                "load": values["load"],
            }
            for side, values in samples.items()
        },
    }


def rrf_of(trajectory: Trajectory, k: int) -> list[str]:
    from starrec.agents.ranker import reciprocal_rank_fusion

    ranker = next((s for s in reversed(trajectory.steps) if s.node == "ranker"), None)
    if ranker is None or not ranker.output.get("cf_ranking"):
        return trajectory.ranking
    return reciprocal_rank_fusion([ranker.output["llm_ranking"], ranker.output["cf_ranking"]], k)


def cf_only(trajectory: Trajectory) -> list[str]:
    ranker = next((s for s in reversed(trajectory.steps) if s.node == "ranker"), None)
    return ranker.output.get("cf_ranking") or trajectory.ranking if ranker else trajectory.ranking


def local_runs(
    data_dir: Path, tasks_dir: Path, name: str, limit: int, context: Context, console: Console
) -> list[Trajectory]:
    out = WORK_DIR / name
    teach(data_dir, tasks_dir, out, context, limit=limit, seed=SEED, console=console)
    wanted = {task.task_id for task in read_tasks(tasks_dir)[:limit]}
    return [Trajectory.model_validate(r) for r in RunsFile(out).records() if str(r["task_id"]) in wanted]


def scores(rankings: list[list[str]], truths: list[str]) -> dict[str, float]:
    return {key: round(value, 4) for key, value in summarize(rankings, truths).items()}


def hit_rates(data_dir: Path, tasks_dir: Path, n: int, ablation_n: int, console: Console) -> dict[str, Any]:
    """(c) + (d) with the local model."""
    context = Context(llm="local", data_dir=str(data_dir), tasks_dir=str(tasks_dir), seed=SEED, **DEMO_KNOBS)
    runs = local_runs(data_dir, tasks_dir, "local-full", n, context, console)
    truths = [run.ground_truth or "" for run in runs]
    table: dict[str, Any] = {
        "mars_llm": scores([run.ranking for run in runs], truths),
        "mars_rrf": scores([rrf_of(run, context.rrf_k) for run in runs], truths),
        "cf_evidence_order": scores([cf_only(run) for run in runs], truths),
    }
    dataset = load_dataset(data_dir)
    tasks = [task for task in read_tasks(tasks_dir) if task.task_id in {run.task_id for run in runs}]
    for method, report in baseline_reports(dataset, tasks, SEED, ("random", "pop", "itemknn")).items():
        table[method] = {key: round(report[key], 4) for key in ("hr@1", "hr@3", "hr@5", "hr_avg", "ndcg@5")}
    cost = summarise_runs(runs).as_dict()
    ablations: dict[str, Any] = {}
    subset = runs[:ablation_n]
    if subset:
        ablations["full"] = {
            **scores([run.ranking for run in subset], truths[: len(subset)]),
            "llm_calls_per_run": statistics.fmean(run.llm_calls for run in subset),
        }
        for ablation in ABLATIONS:
            ablated = local_runs(
                data_dir,
                tasks_dir,
                f"local-{ablation}",
                len(subset),
                context.with_ablation(ablation),
                console,
            )
            ablations[ablation] = {
                **scores([r.ranking for r in ablated], [r.ground_truth or "" for r in ablated]),
                "llm_calls_per_run": statistics.fmean(r.llm_calls for r in ablated),
            }
    return {
        "n_tasks": len(runs),
        "errors": sum(run.error is not None for run in runs),
        "methods": table,
        "cost": {
            key: cost[key]
            for key in (
                "llm_calls_per_run",
                "tokens_per_run",
                "seconds_per_run",
                "repaired_runs",
                "repairs",
                "per_agent",
            )
        },
        "ablations": {"n_tasks": len(subset), "rows": ablations},
        "context": context.settings(),
    }


def ablation_costs(jobs: list[RunJob], train: Any, evidence: Any) -> dict[str, Any]:
    """(d) structural cost of each ablation (scripted model, every task): calls and tokens per run."""
    rows = {}
    for name in ("full", *ABLATIONS):
        context = Context().with_ablation(None if name == "full" else name)
        graph = build_mars_graph(context, chat_model=scripted_model(), evidence=evidence)
        runs = asyncio.run(run_batch(graph, jobs, train, context, concurrency=8))
        rows[name] = {
            "llm_calls_per_run": statistics.fmean(r.llm_calls for r in runs),
            "tokens_per_run": statistics.fmean(r.prompt_tokens + r.completion_tokens for r in runs),
            "tool_queries_per_run": statistics.fmean(
                sum(len(s.output.get("cf_queries", [])) + len(s.tool_calls) for s in r.steps) for r in runs
            ),
        }
    return rows


def write_markdown(results: dict[str, Any], path: Path) -> None:
    a, b = results["overhead"], results["throughput"]
    lines = [
        "# MARS teacher benchmark",
        "",
        f"Command: `{results['command']}`. Machine: {results['machine']}. "
        f"MovieLens-100k classic tasks (seed {SEED}), candidates shuffled exactly as `starrec eval` does.",
        "",
        "## (a) Orchestration overhead (zero-latency scripted model)",
        "",
        "| configuration | runs | LLM calls/run | mean ms/run | p50 | p95 | ranker p50 ms "
        "| ranker CF queries |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {name} | {row['runs']} | {row['llm_calls_per_run']} | {row['mean_ms']:.1f} | "
            f"{row['p50_ms']:.1f} | {row['p95_ms']:.1f} | "
            + (
                f"{row['ranker_p50_ms']:.1f} | {row['ranker_cf_queries_per_run']:.1f} |"
                if "ranker_p50_ms" in row
                else "| |"
            )
            for name, row in a.items()
        ),
        "",
        "Before: the ranker reads the stored top-20 Item-CF list of each of the last 10 history items "
        "(10 lookups on the Ladybug graph; candidates outside the lists score 0). After: one `candidate_cf` "
        "call scores all 20 candidates from the in-memory index of the same graph (3 query traces). Both "
        "were measured in the same run, interleaved. "
        f"Load average: {results.get('load_start', '?')} at start, {results.get('load_end', '?')} at end.",
        "",
        "The last row, measured interleaved with the others, is MARS's shape with no-op nodes: the same "
        "nodes in the same order, routed by `Command` as MARS is, each making MARS's LLM calls to a model "
        "that answers `{}` at once and reporting one step event, with a `TrajectoryRecorder` attached. It "
        "is what LangGraph, LangChain's callback-managed model calls and the recorder cost before starrec "
        "does any work; starrec's own share of a no_tools run is the difference (which includes the cost of "
        "MARS's Studio-readable dataclass state: the floor's state is one list).",
        "",
        f"## (b) Throughput, scripted async model sleeping {results['latency_ms']} ms per call",
        "",
        "| concurrency | runs | seconds | runs/s (median) | runs/s of each batch | LLM calls/s "
        "| ideal runs/s |",
        "|---:|---:|---:|---:|---|---:|---:|",
        *(
            f"| {c} | {row['runs']} | {row['seconds']:.2f} | {row['runs_per_s']:.1f} | "
            + ", ".join(f"{value:.1f}" for value in row.get("runs_per_s_samples", [row["runs_per_s"]]))
            + f" | {row['llm_calls_per_s']:.0f} | {row['ideal_runs_per_s']:.1f} |"
            for c, row in b.items()
        ),
        "",
        "Each concurrency is the median of the batches shown, on a warm graph (the CF index already built).",
        "",
    ]
    local = results.get("local")
    if local:
        lines += [
            f"## (c) Hit rates, SmolLM2-135M-Instruct (local, CPU) on {local['n_tasks']} tasks "
            f"({local['errors']} errored runs)",
            "",
            "| method | HR@1 | HR@3 | HR@5 | HR_avg | NDCG@5 |",
            "|---|---:|---:|---:|---:|---:|",
            *(
                f"| {name} | {row['hr@1']:.3f} | {row['hr@3']:.3f} | {row['hr@5']:.3f} | {row['hr_avg']:.3f} "
                f"| {row['ndcg@5']:.3f} |"
                for name, row in local["methods"].items()
            ),
            "",
            "`mars_rrf` fuses the recorded LLM order with the CF-evidence order of the same runs; "
            "`cf_evidence_order` is that CF order alone.",
            f"Cost per run: {local['cost']['llm_calls_per_run']:.1f} LLM calls, "
            f"{local['cost']['tokens_per_run']:.0f} tokens, {local['cost']['seconds_per_run']:.1f} s; "
            f"rankings needing repair: {local['cost']['repaired_runs']} of {local['n_tasks']}; "
            f"repairs: {local['cost']['repairs']}.",
            "",
        ]
        if local["ablations"]["rows"]:
            lines += [
                f"## (d) Ablations, local model on the first {local['ablations']['n_tasks']} tasks",
                "",
                "| variant | HR@1 | HR@3 | HR@5 | HR_avg | LLM calls/run |",
                "|---|---:|---:|---:|---:|---:|",
                *(
                    f"| {name} | {row['hr@1']:.3f} | {row['hr@3']:.3f} | {row['hr@5']:.3f} | "
                    f"{row['hr_avg']:.3f} | {row['llm_calls_per_run']:.1f} |"
                    for name, row in local["ablations"]["rows"].items()
                ),
                "",
            ]
    lines += [
        "## (d) Ablation cost (scripted model, structure only)",
        "",
        "| variant | LLM calls/run | tokens/run | CF queries/run |",
        "|---|---:|---:|---:|",
        *(
            f"| {name} | {row['llm_calls_per_run']:.1f} | {row['tokens_per_run']:.0f} | "
            f"{row['tool_queries_per_run']:.1f} |"
            for name, row in results["ablation_cost"].items()
        ),
        "",
    ]
    compare = results.get("side_by_side")
    if compare:
        before, after = compare["sides"]["before"], compare["sides"]["after"]
        lines += [
            f"## (e) Before / after, measured side by side (baseline `{compare['baseline'][:10]}`)",
            "",
            f"{compare['rounds']} rounds; in each, the baseline commit (a `git worktree`) and this tree run "
            "in their own subprocess with their own `PYTHONPATH`, one after the other.",
            "",
            "| figure | before | after | after / before |",
            "|---|---:|---:|---:|",
            f"| overhead, no_tools, mean ms/run ({after['overhead_runs']} runs each) | "
            f"{before['overhead_mean_ms']:.2f} | {after['overhead_mean_ms']:.2f} | "
            f"{after['overhead_mean_ms'] / before['overhead_mean_ms']:.2f} |",
            f"| overhead, no_tools, p50 ms/run | {before['overhead_p50_ms']:.2f} | "
            f"{after['overhead_p50_ms']:.2f} | {after['overhead_p50_ms'] / before['overhead_p50_ms']:.2f} |",
            f"| overhead, no_tools, model priced as hosted (gpt-4o-mini), mean ms/run | "
            f"{before['hosted_mean_ms']:.2f} | {after['hosted_mean_ms']:.2f} | "
            f"{after['hosted_mean_ms'] / before['hosted_mean_ms']:.2f} |",
            f"| throughput, concurrency 50, {results['latency_ms']} ms model, median runs/s | "
            f"{before['throughput_median']:.1f} | {after['throughput_median']:.1f} | "
            f"{after['throughput_median'] / before['throughput_median']:.2f} |",
            "",
            "Load average (1, 5, 15 min) when each measurement started:",
            "",
            *(f"- {side}: " + "; ".join(compare["sides"][side]["load"]) for side in ("before", "after")),
            "",
        ]
    if results.get("notes"):
        lines += ["## Notes", "", *(f"- {note}" for note in results["notes"]), ""]
    path.write_text("\n".join(lines))


def write_plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    local = results.get("local")
    panels = 2 if local else 1
    figure, axes = plt.subplots(1, panels, figsize=(6 * panels, 4))
    axes = list(axes) if panels > 1 else [axes]
    conc = list(results["throughput"])
    axes[0].bar(conc, [results["throughput"][c]["runs_per_s"] for c in conc], label="measured")
    axes[0].plot(conc, [results["throughput"][c]["ideal_runs_per_s"] for c in conc], "k--", label="ideal")
    axes[0].set_xlabel("concurrency")
    axes[0].set_ylabel("runs / s")
    axes[0].set_title(f"(b) throughput, {results['latency_ms']} ms per LLM call")
    axes[0].legend()
    if local:
        names = list(local["methods"])
        axes[1].bar(
            names,
            [local["methods"][m]["hr_avg"] for m in names],
            color=["tab:blue" if m.startswith("mars") else "tab:grey" for m in names],
        )
        axes[1].axhline(0.15, color="grey", linestyle="--", linewidth=1)
        axes[1].set_ylabel("HR_avg")
        axes[1].set_title(f"(c) ML-100k classic, {local['n_tasks']} tasks, SmolLM2-135M")
        axes[1].tick_params(axis="x", rotation=30)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50, help="ML-100k classic tasks for (c).")
    parser.add_argument(
        "--ablation-tasks", type=int, default=10, help="Tasks per ablation with the local model."
    )
    parser.add_argument(
        "--skip-local", action="store_true", help="Only (a), (b) and the scripted ablation cost."
    )
    parser.add_argument("--repeats", type=int, default=3, help="Repeats of (a).")
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--baseline", help="Commit to measure beside this tree in (e).")
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved rounds of (e).")
    parser.add_argument("--probe", choices=("overhead", "hosted", "throughput"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe(args.probe, args.repeats, args.latency_ms / 1000)))
        return
    console = Console(stderr=True)

    data_dir = fetch_movielens_100k(get_settings().cache_dir / "datasets" / "ml-100k")
    tasks_dir = demo_tasks(data_dir, max(args.tasks, 50), SEED)
    tasks = read_tasks(tasks_dir)
    train = load_dataset(data_dir).hide_from(tasks)
    evidence = open_toolkit(data_dir, tasks=tasks)
    jobs = [
        RunJob(request, 0, task.ground_truth)
        for task, request in zip(tasks, build_requests(tasks, train, SEED), strict=True)
    ]
    results: dict[str, Any] = {
        "command": "python benchmarks/mars.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v}"
            for k, v in vars(args).items()
            if k not in ("out", "skip_local", "probe") and v is not None
        )
        + (" --skip-local" if args.skip_local else ""),
        "machine": f"{os.cpu_count()} CPU cores, no GPU",
        "latency_ms": args.latency_ms,
        "load_start": load_average(),
    }
    console.print("(a) orchestration overhead")
    results["overhead"] = overhead(jobs[:20], train, evidence, args.repeats)
    console.print("(b) throughput")
    results["throughput"] = throughput(jobs, train, evidence, args.latency_ms / 1000, args.repeats)
    console.print("(d) ablation cost")
    results["ablation_cost"] = ablation_costs(jobs, train, evidence)
    if args.baseline:
        console.print(f"(e) side by side with {args.baseline}")
        results["side_by_side"] = side_by_side(args.baseline, args.rounds, args.repeats, args.latency_ms)
    if not args.skip_local:
        console.print(f"(c)+(d) local model on {args.tasks} tasks (+{args.ablation_tasks} per ablation)")
        results["local"] = hit_rates(data_dir, tasks_dir, args.tasks, args.ablation_tasks, console)
    results["load_end"] = load_average()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mars.json").write_text(json.dumps(results, indent=2))
    write_markdown(results, args.out / "mars.md")
    write_plot(results, args.out / "mars.png")
    console.print((args.out / "mars.md").read_text())


if __name__ == "__main__":
    main()
