"""STAR distillation throughput on this machine: SFT and GRPO s/step, tokens/s and peak RAM.

Records teacher runs with the real MARS graph and the scripted teacher model of the test suite
(``tests/mars_fixtures.py``), then runs every stage through the ``starrec distill`` CLI in its own
process (so peak RSS is per stage) for ``--model tiny`` and ``--model smollm2``. Writes
``benchmarks/results/distill.{json,md,png}``.

    python benchmarks/distill.py [--models tiny smollm2] [--sft-steps 4] [--grpo-steps 3] [--threads 2]

The machine is shared: the load average before and after each stage is recorded next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def record_runs(root: Path, users: tuple[str, ...]) -> Path:
    """Scripted-teacher MARS runs (2 passes) with tool calls and one correction round per run."""
    sys.path.insert(0, str(ROOT / "tests"))
    from distill_fixtures import record_scripted_runs

    record_scripted_runs(root, users)
    return root


def run_stage(name: str, args: list[str]) -> dict[str, Any]:
    """One CLI stage in a fresh process; wall time and load average around it."""
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "starrec.cli", *map(str, args)], capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(
            f"{name} failed ({completed.returncode}):\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
        )
    return {
        "wall_s": round(wall, 1),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def bench_model(model: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    runs, data, tasks = work / "runs", work / "data", work / "tasks"
    sft, rl, grpo = work / f"sft-{model}", work / f"rl-{model}", work / f"grpo-{model}"
    threads = ["--threads", args.threads]
    sft_stage = run_stage(
        "sft",
        [
            "distill",
            "sft",
            "--runs",
            runs,
            "--model",
            model,
            "--out",
            sft,
            "--max-steps",
            args.sft_steps,
            "--learning-rate",
            args.sft_lr,
            *threads,
        ],
    )
    sft_metrics = json.loads((sft / "sft_metrics.json").read_text())
    rl_stage = run_stage(
        "rl-data",
        [
            "distill",
            "rl-data",
            "--model",
            sft,
            "--runs",
            runs,
            "--out",
            rl,
            "--evidence-data",
            data,
            "--evidence-tasks",
            tasks,
            "--success-at",
            10,
            "--mix",
            "0:1:0",
            "--limit",
            2,
            "--max-completion-length",
            args.completion_tokens,
            *threads,
        ],
    )
    rl_info = json.loads((rl / "rl_data.json").read_text())
    grpo_stage = run_stage(
        "grpo",
        [
            "distill",
            "grpo",
            "--sft",
            sft,
            "--data",
            rl,
            "--out",
            grpo,
            "--max-steps",
            args.grpo_steps,
            "--num-generations",
            args.generations,
            "--max-completion-length",
            args.completion_tokens,
            *threads,
        ],
    )
    grpo_metrics = json.loads((grpo / "grpo_metrics.json").read_text())
    return {
        "sft": {
            **sft_stage,
            "steps": sft_metrics["steps"],
            "s_per_step": sft_metrics["s_per_step"],
            "tokens_per_s": sft_metrics["tokens_per_s"],
            "peak_rss_mb": sft_metrics["peak_rss_mb"],
            "tokens_per_example": sft_metrics["mean_example_tokens"],
            "loss_first": sft_metrics["first_loss"],
            "loss_last": sft_metrics["last_loss"],
        },
        "rl_data": {
            **rl_stage,
            "instances": rl_info["instances"],
            "samples": rl_info["samples"],
            "generated_tokens_per_s": rl_info["generated_tokens_per_s"],
            "peak_rss_mb": rl_info["peak_rss_mb"],
        },
        "grpo": {
            **grpo_stage,
            "steps": grpo_metrics["steps"],
            "s_per_step": grpo_metrics["s_per_step"],
            "tokens_per_s": grpo_metrics["tokens_per_s"],
            "peak_rss_mb": grpo_metrics["peak_rss_mb"],
            "reward_mean": grpo_metrics["reward_mean"],
        },
    }


def _row(*cells: Any) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def write_markdown(payload: dict[str, Any], path: Path) -> None:
    setup = payload["setup"]
    lines = [
        "# STAR distillation throughput (CPU)",
        "",
        f"`{payload['command']}` on {setup['machine']}; torch threads {setup['threads']}.",
        f"SFT: batch 1, {setup['sft_steps']} steps on scripted-teacher chains "
        f"(~{setup['sft_tokens']} tokens each, prompt + chain).",
        f"GRPO: G = {setup['generations']}, {setup['completion_tokens']} new tokens per rollout "
        f"(tools executed inline), {setup['grpo_steps']} steps.",
        "tokens/s counts prompt + completion tokens processed; the first step is excluded from s/step.",
        "The machine is shared with other jobs: see the load columns.",
        "",
        "| model | stage | s/step | tokens/s | peak RSS (MiB) | wall (s) | load before/after |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for model, result in payload["results"].items():
        for stage in ("sft", "grpo"):
            row = result[stage]
            cells = (stage.upper(), row["s_per_step"], row["tokens_per_s"], row["peak_rss_mb"], row["wall_s"])
            lines.append(_row(model, *cells, f"{row['load_before']} / {row['load_after']}"))
        rl = result["rl_data"]
        generated = f"{rl['generated_tokens_per_s']} (generated)"
        load = f"{rl['load_before']} / {rl['load_after']}"
        lines.append(_row(model, "RL-data sampling", "-", generated, rl["peak_rss_mb"], rl["wall_s"], load))
    path.write_text("\n".join(lines) + "\n")


def plot(payload: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(payload["results"])
    figure, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for axis, stage in zip(axes, ("sft", "grpo"), strict=True):
        values = [payload["results"][model][stage]["s_per_step"] for model in models]
        axis.bar(models, values, color=["#4c72b0", "#dd8452"][: len(models)])
        axis.set_title(f"{stage.upper()} s/step (CPU)")
        axis.set_ylabel("seconds")
        for index, value in enumerate(values):
            axis.text(index, value, f"{value:.1f}", ha="center", va="bottom")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["tiny", "smollm2"])
    parser.add_argument("--sft-steps", type=int, default=4)
    parser.add_argument("--sft-lr", type=float, default=1e-4)
    parser.add_argument("--grpo-steps", type=int, default=3)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--completion-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="star-bench-") as tmp:
        work = record_runs(Path(tmp), ("u1", "u2", "u4", "u5", "u7", "u8"))
        results = {}
        for model in args.models:
            print(f"benchmarking {model} ...", flush=True)
            results[model] = bench_model(model, work, args)
            print(json.dumps(results[model], indent=1), flush=True)
    payload = {
        "command": "python benchmarks/distill.py " + " ".join(sys.argv[1:]),
        "setup": {
            "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}, no GPU",
            "threads": args.threads,
            "sft_steps": args.sft_steps,
            "grpo_steps": args.grpo_steps,
            "generations": args.generations,
            "completion_tokens": args.completion_tokens,
            "sft_tokens": next(iter(results.values()))["sft"]["tokens_per_example"],
        },
        "results": results,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (RESULTS / "distill.json").write_text(json.dumps(payload, indent=2) + "\n")
    write_markdown(payload, RESULTS / "distill.md")
    plot(payload, RESULTS / "distill.png")
    print((RESULTS / "distill.md").read_text())


if __name__ == "__main__":
    main()
