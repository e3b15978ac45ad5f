"""CLI commands of this area (registered by :mod:`starrec.cli`): ``starrec eval``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from starrec.eval.methods import METHOD_FACTORIES

METRIC_COLUMNS = ("hr@1", "hr@3", "hr@5", "hr_avg", "ndcg@5")
Protocol = Literal["sampled", "full"]


def parse_options(options: list[str] | None) -> dict[str, str]:
    """``key=value`` pairs of ``--option`` into a dict, with a clear error for a bad entry.

    Values stay text: each method converts them to its config's field types
    (:func:`starrec.eval.methods.config_with_overrides`).
    """
    parsed: dict[str, str] = {}
    for text in options or []:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected key=value, got {text!r}", param_hint="--option")
        parsed[key.strip()] = value.strip()
    return parsed


LLM_FOR_HELP = (
    "NODE=SPEC: serve one MARS node with its own model (repeatable), e.g. planner=local:DIR or "
    "ranker=openai:deepseek-chat; SPEC@URL gives it its own endpoint (planner=openai:star-planner@"
    "http://127.0.0.1:8001/v1). Nodes not named use --llm."
)


def parse_node_models(values: list[str] | None) -> dict[str, str]:
    """``--llm-for NODE=SPEC`` pairs as ``{node: spec}``: node names from the house roster, specs in
    ``--llm``'s syntax; a bad entry is a one-line usage error."""
    from starrec.contract.roster import ROSTER
    from starrec.llm.spec import LLMSpec, split_endpoint

    models: dict[str, str] = {}
    for text in values or []:
        node, sep, spec = (part.strip() for part in text.partition("="))
        if not sep or not node or not spec:
            raise typer.BadParameter(f"expected NODE=SPEC, got {text!r}", param_hint="--llm-for")
        try:
            ROSTER.check_nodes([node], f"--llm-for {text}")
            LLMSpec.parse(split_endpoint(spec)[0])
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="--llm-for") from None
        models[node] = spec
    return models


def metric_cells(report: dict[str, Any]) -> list[str]:
    """``0.6333 [0.57, 0.70]`` per metric column (value and its bootstrap interval)."""
    intervals = report.get("ci95", {})
    cells = []
    for key in METRIC_COLUMNS:
        low, high = intervals.get(key, (None, None))
        cells.append(f"{report[key]:.4f}" + (f" [{low:.2f}, {high:.2f}]" if low is not None else ""))
    return cells


def print_report(report: dict[str, Any], title: str) -> None:
    """The metrics table, the invalid-ranking accounting and the method's own counters."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=title)
    for column in ("method", "tasks", *METRIC_COLUMNS):
        table.add_column(column, justify="right" if column != "method" else "left")
    table.add_row(report["method"], str(report["n_tasks"]), *metric_cells(report))
    successful = report["successful"]
    if successful["n_tasks"] != report["n_tasks"]:
        table.add_row(f"{report['method']} (successful only)", str(successful["n_tasks"]),
                      *metric_cells(successful))
    if "prior" in report:
        table.add_row(f"{report['method']}'s prior order (same tasks)", str(report["prior"]["n_tasks"]),
                      *(f"{report['prior'][key]:.4f}" for key in METRIC_COLUMNS))
    console.print(table)
    console.print("[dim]cells: value [95% bootstrap interval over tasks, seed 0][/dim]")
    if contribution := report.get("llm_contribution"):
        low, high = contribution["ci95"]
        console.print(f"LLM contribution (HR_avg minus the prior order's, {contribution['n_tasks']} tasks): "
                      f"{contribution['delta_hr_avg']:+.4f} [{low:+.4f}, {high:+.4f}]; "
                      f"{contribution['tasks_changed']} rankings differ from the prior")
    invalid = report["invalid"]
    style = "yellow" if any(invalid.values()) else "green"
    listed = ", ".join(f"{key}={value}" for key, value in invalid.items())
    console.print(f"[{style}]invalid rankings: {listed}[/{style}]")
    coverage = report["coverage"]
    console.print("coverage: " + ", ".join(f"{key}={value}" for key, value in coverage.items()))
    if unknown := coverage["users_without_history"]:
        console.print(f"[yellow]{unknown} of {report['n_tasks']} task users have no interactions in the "
                      "training view: methods fell back (see method stats)[/yellow]")
    if report["method_stats"]:
        console.print("method stats: " + json.dumps(report["method_stats"], default=str))
    if "cost_usd" in report:
        console.print(cost_text(report))
    console.print(f"seed={report['seed']} shuffled={report['shuffled']} elapsed={report['elapsed_s']:.1f}s")


def cost_text(report: dict[str, Any]) -> str:
    """``cost $total ($per task/task)``, or why it is unknown (an unpriced hosted model: never shown as 0)."""
    if report["cost_usd"] is None:
        return "cost unknown: a hosted model without a price (add it to a table named by STARREC_PRICES)"
    return f"cost ${report['cost_usd']:.4f} (${report['cost_usd_per_task']:.6f}/task)"


def markdown_report(report: dict[str, Any], title: str) -> str:
    """The report as a Markdown table (metrics with intervals, invalid rankings, cost)."""
    head = ["method", "tasks", *METRIC_COLUMNS]
    rows = [[report["method"], str(report["n_tasks"]), *metric_cells(report)]]
    if "cost_usd" in report:
        head += ["cost $", "cost $/task"]
        cost, per_task = report["cost_usd"], report["cost_usd_per_task"]
        rows[0] += ["unknown", "unknown"] if cost is None else [f"{cost:.4f}", f"{per_task:.6f}"]
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    invalid = ", ".join(f"{key}={value}" for key, value in report["invalid"].items())
    run = f"seed={report['seed']} shuffled={report['shuffled']} elapsed={report['elapsed_s']:.1f}s"
    lines += ["", "cells: value [95% bootstrap interval over tasks, seed 0]", "",
              f"invalid rankings: {invalid}", "", run, ""]  # fmt: skip
    return "\n".join(lines)


def eval_command(
    tasks: Annotated[Path, typer.Option(help="Task folder (tasks/task_<i>.json + groundtruth/).")],
    method: Annotated[str, typer.Option(help=f"One of: {', '.join(METHOD_FACTORIES)}.")],
    data: Annotated[Path | None, typer.Option(help="Dataset dir (optional for random/identity).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the candidate shuffle and the method.")] = 0,
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N tasks.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the full report here.")] = None,
    markdown_out: Annotated[
        Path | None, typer.Option("--markdown", help="Write the metrics and cost as a Markdown table here.")
    ] = None,
    option: Annotated[list[str] | None, typer.Option(help="Method knob key=value (repeatable).")] = None,
    llm: Annotated[str | None, typer.Option(help="LLM backend: openai | local | scripted.")] = None,
    model: Annotated[str | None, typer.Option(help="Model name or directory (LLM methods).")] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint.")] = None,
    llm_for: Annotated[list[str] | None, typer.Option("--llm-for", help=LLM_FOR_HELP)] = None,
    concurrency: Annotated[int, typer.Option(help="Requests in flight (LLM methods).")] = 4,
    samples: Annotated[int, typer.Option(help="Best-of-k samples (STAR).")] = 1,
    no_shuffle: Annotated[bool, typer.Option(
        "--no-shuffle", help="Present candidates in file order (ONLY to measure position bias).")] = False,
    llm_cache: Annotated[Path | None, typer.Option(help=(
        "SQLite file of the persistent LLM call cache for MARS's chat model (keyed on model, messages and "
        "sampling parameters). Off by default."))] = None,
    protocol: Annotated[Protocol, typer.Option(help=(
        "sampled: rank each task's 20 candidates (AgentRecBench, the default). full: retrieve the top "
        "--retrieve-n of the whole catalogue with --retriever, re-rank them with --method, and report "
        "HR@10, NDCG@10, MRR and the retriever's Recall@N."))] = "sampled",
    retriever: Annotated[str, typer.Option(help=(
        "--protocol full: the method that scores the whole catalogue (itemknn, bpr, lightgcn, sasrec, "
        "cf_prior, pop, ...). --method equal to it keeps the retrieval order."))] = "itemknn",
    retrieve_n: Annotated[int, typer.Option(help="--protocol full: items kept by the retriever.")] = 50,
    retriever_option: Annotated[list[str] | None, typer.Option(
        help="--protocol full: retriever knob key=value (repeatable).")] = None,
) -> None:
    """Rank every task with a method and print its metrics (sampled: HR@1/3/5, HR_avg, NDCG@5)."""
    from starrec.data.agentsociety import load_dataset
    from starrec.data.tasks import read_manifest, read_tasks
    from starrec.eval.harness import evaluate
    from starrec.eval.methods import MethodOptions, make_method

    extra = parse_options(option)
    options = MethodOptions(seed=seed, data_dir=data, llm=llm, model=model, base_url=base_url,
                            models=parse_node_models(llm_for), concurrency=concurrency, samples=samples,
                            extra=extra,
                            llm_cache=str(llm_cache) if llm_cache is not None else None)
    try:
        recommender = make_method(method, options)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--method") from error
    task_list = read_tasks(tasks)
    if data is None and recommender.needs_data:
        raise typer.BadParameter(f"method {method!r} learns from interactions; pass --data DIR",
                                 param_hint="--data")
    if protocol == "full":
        if data is None:
            raise typer.BadParameter("--protocol full ranks a dataset's whole catalogue; pass --data DIR",
                                     param_hint="--data")
        if no_shuffle:
            raise typer.BadParameter("--no-shuffle measures position bias on sampled tasks only",
                                     param_hint="--no-shuffle")
        run_full(recommender, method, task_list, data, retriever, retrieve_n, seed, limit,
                 parse_options(retriever_option), json_out, markdown_out, tasks)
        return
    dataset = load_dataset(data) if data is not None else None
    report = evaluate(recommender, task_list, dataset, seed=seed, limit=limit, shuffle=not no_shuffle)
    report["tasks_dir"] = str(tasks)
    report["scenario"] = read_manifest(tasks).get("scenario")
    report["data_dir"] = str(data) if data is not None else None
    print_report(report, f"{method} on {tasks}")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        from starrec.llm.redact import redact_value

        json_out.write_text(json.dumps(redact_value(report), indent=2, default=str))
    if markdown_out is not None:
        markdown_out.parent.mkdir(parents=True, exist_ok=True)
        markdown_out.write_text(markdown_report(report, f"{method} on {tasks}"), encoding="utf-8")


FULL_COLUMNS = ("hr@10", "ndcg@10", "mrr")


def full_cells(report: dict[str, Any]) -> list[str]:
    """Value and interval of HR@10, NDCG@10, MRR and the retriever's Recall@N."""
    keys = (*FULL_COLUMNS, f"recall@{report['retrieve_n']}")
    cells = []
    for key in keys:
        low, high = report["ci95"][key]
        cells.append(f"{report[key]:.4f} [{low:.2f}, {high:.2f}]")
    return cells


def full_markdown(report: dict[str, Any], title: str) -> str:
    recall = f"recall@{report['retrieve_n']}"
    lines = [f"# {title}", "", f"| method | tasks | {' | '.join(FULL_COLUMNS)} | {recall} |",
             "|---|---:|" + "---:|" * (len(FULL_COLUMNS) + 1),
             f"| {report['method']} | {report['n_tasks']} | " + " | ".join(full_cells(report)) + " |", "",
             f"Full-corpus protocol: {report['catalogue_size']} items; the retriever ({report['retriever']}) "
             f"scored on average {report['mean_retrieval_candidates']:.0f} unseen items per user and kept "
             f"{report['retrieve_n']}. cells: value [95% bootstrap interval over tasks, seed 0].", "",
             "invalid rankings: " + ", ".join(f"{k}={v}" for k, v in report["invalid"].items()), "",
             f"seed={report['seed']} elapsed={report['elapsed_s']:.1f}s", ""]  # fmt: skip
    return "\n".join(lines)


def run_full(
    recommender: Any, method: str, task_list: list[Any], data: Path, retriever_name: str, retrieve_n: int,
    seed: int, limit: int | None, retriever_extra: dict[str, str], json_out: Path | None,
    markdown_out: Path | None, tasks_dir: Path,
) -> None:
    """``starrec eval --protocol full``: retrieve, re-rank (unless --method is the retriever), score."""
    from rich.console import Console
    from rich.table import Table

    from starrec.data.agentsociety import load_dataset
    from starrec.eval.full_corpus import evaluate_full
    from starrec.eval.methods import MethodOptions, make_method

    try:
        options = MethodOptions(seed=seed, data_dir=data, extra=retriever_extra)
        retriever = make_method(retriever_name, options)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--retriever") from error
    reranker = None if method == retriever_name else recommender
    try:
        report = evaluate_full(retriever, task_list, load_dataset(data), reranker, retrieve_n=retrieve_n,
                               seed=seed, limit=limit)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--tasks / --retrieve-n") from error
    report["tasks_dir"], report["data_dir"] = str(tasks_dir), str(data)
    title = f"{report['method']} on {tasks_dir} (full corpus)"
    table = Table(title=title)
    for column in ("method", "tasks", *FULL_COLUMNS, f"recall@{retrieve_n}"):
        table.add_column(column, justify="left" if column == "method" else "right")
    table.add_row(report["method"], str(report["n_tasks"]), *full_cells(report))
    console = Console()
    console.print(table)
    console.print(f"[dim]{report['catalogue_size']} items in the catalogue; cells: value [95% bootstrap "
                  "interval over tasks, seed 0][/dim]")
    console.print("invalid rankings: " + ", ".join(f"{k}={v}" for k, v in report["invalid"].items()))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2, default=str))
    if markdown_out is not None:
        markdown_out.parent.mkdir(parents=True, exist_ok=True)
        markdown_out.write_text(full_markdown(report, title), encoding="utf-8")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the top-level app."""
    app.command("eval")(eval_command)
