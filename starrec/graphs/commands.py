"""CLI commands of the MARS area: ``starrec teach`` (recorded batch runs) and ``starrec demo``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from starrec.contract.ablations import ABLATION_CHOICES
from starrec.eval.commands import LLM_FOR_HELP, parse_node_models, parse_options

ABLATION_HELP = f"Switch one component off: {ABLATION_CHOICES}."
LLM_CACHE_HELP = (
    "SQLite file of the persistent LLM call cache: a rerun of the same requests is answered from it "
    "(keyed on model, messages, temperature, seed, max tokens, stop, tools, output schema). Off by default."
)
SHARD_HELP = (
    "I/N: run only shard I of N (tasks whose SHA-1 of the task id is I mod N); give each shard its own "
    "--out and join them with `starrec merge-runs`."
)

STORE_HELP = (
    "Where the CF tools read the graph: ladybug (a file built on this machine) or neo4j (NEO4J_URI, e.g. a "
    "cluster's neo4j:// routing address; load it once first with `starrec graph build --store neo4j`)."
)


def parse_shard(text: str | None) -> Any:
    """``--shard I/N`` as a :class:`~starrec.graphs.teach.Shard` (a usage error when malformed)."""
    if text is None:
        return None
    from starrec.graphs.teach import Shard

    try:
        return Shard.parse(text)
    except ValueError as error:
        message = str(error).removeprefix(f"--shard {text!r}: ")
        raise typer.BadParameter(message, param_hint="--shard") from None


def build_context(
    llm: str | None,
    model: str | None,
    base_url: str | None,
    seed: int,
    ablation: str | None,
    fusion: str | None,
    options: dict[str, str],
    data: Path | None,
    tasks: Path | None,
    models: dict[str, str] | None = None,
) -> Any:
    from starrec.eval.methods import MethodOptions
    from starrec.graphs.recommender import context_from_options

    if fusion is not None:
        options = {**options, "ranker_fusion": fusion}
    method_options = MethodOptions(
        seed=seed,
        data_dir=data,
        llm=llm,
        model=model,
        base_url=base_url,
        extra=options,
        models=dict(models or {}),
    )
    try:
        context = context_from_options(method_options).with_ablation(ablation)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    if tasks is not None:
        context.tasks_dir = str(tasks)
    return context


def teach_command(
    data: Annotated[Path, typer.Option(help="Dataset directory (AgentSociety layout).")],
    tasks: Annotated[Path, typer.Option(help="Task folder (tasks/ + groundtruth/).")],
    out: Annotated[Path, typer.Option(help="Run folder; RUNS/runs.jsonl is appended (resumable).")],
    llm: Annotated[
        str | None, typer.Option(help="LLM backend spec: local | local:DIR | openai:MODEL.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model name or directory for the backend.")] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint (openai backend).")] = None,
    llm_for: Annotated[list[str] | None, typer.Option("--llm-for", help=LLM_FOR_HELP)] = None,
    passes: Annotated[int, typer.Option(help="Runs per task (for outcome filtering).")] = 1,
    sample_temperature: Annotated[
        float,
        typer.Option(
            help="With --passes K > 1: every pass samples at this temperature, seed = --option "
            "seed + pass (one pass runs the context's own temperature, 0 = greedy)."
        ),
    ] = 0.7,
    concurrency: Annotated[int, typer.Option(help="Runs in flight at once.")] = 1,
    limit: Annotated[int | None, typer.Option(help="Only the first N tasks.")] = None,
    ablation: Annotated[str | None, typer.Option(help=ABLATION_HELP)] = None,
    fusion: Annotated[str | None, typer.Option(help="Ranker fusion: agreement | rrf | llm.")] = None,
    seed: Annotated[int, typer.Option(help="Candidate shuffle seed (same as starrec eval).")] = 0,
    timeout: Annotated[float | None, typer.Option(help="Seconds allowed per run (None = no limit).")] = None,
    option: Annotated[list[str] | None, typer.Option(help="Context knob key=value (repeatable).")] = None,
    llm_cache: Annotated[Path | None, typer.Option(help=LLM_CACHE_HELP)] = None,
    shard: Annotated[str | None, typer.Option(help=SHARD_HELP)] = None,
    store: Annotated[str, typer.Option(help=STORE_HELP)] = "ladybug",
) -> None:
    """Run MARS over a task folder and record one trajectory per (task, pass) in RUNS/runs.jsonl.

    Exit codes: 0 every run finished, 1 some runs errored (rerun to retry only those) or the run
    folder is busy, 2 usage error.
    """
    from rich.console import Console

    from starrec.graphs.display import print_summary
    from starrec.graphs.teach import RunFolderBusyError, pass_contexts, teach

    if passes < 1:
        raise typer.BadParameter("must be >= 1", param_hint="--passes")
    chosen_shard = parse_shard(shard)
    context = build_context(
        llm,
        model,
        base_url,
        seed,
        ablation,
        fusion,
        parse_options(option),
        data,
        tasks,
        parse_node_models(llm_for),
    )
    try:
        pass_contexts(context, passes, sample_temperature)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--sample-temperature") from None
    if llm_cache is not None:
        context.llm_cache = str(llm_cache)
    console = Console()
    try:
        summary = teach(
            data,
            tasks,
            out,
            context,
            passes=passes,
            concurrency=concurrency,
            limit=limit,
            seed=seed,
            timeout_s=timeout,
            console=console,
            sample_temperature=sample_temperature,
            shard=chosen_shard,
            store=store,
        )
    except RunFolderBusyError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    print_summary(console, summary, f"MARS runs in {out}")
    if summary.errors:
        console.print(
            f"[red]{summary.errors} of {summary.runs} run(s) errored; they are not scored and not finished: "
            "run the same command again to retry them[/red]"
        )
        raise typer.Exit(1)


def demo_command(
    n: Annotated[int, typer.Option(help="Number of MovieLens-100k classic tasks to run.")] = 3,
    llm: Annotated[str, typer.Option(help="LLM backend spec (local = SmolLM2-135M in-process).")] = "local",
    model: Annotated[str | None, typer.Option(help="Model name or directory for the backend.")] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint (openai backend).")] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder (default: <cache>/demo).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for tasks and candidate shuffling.")] = 0,
    llm_cache: Annotated[Path | None, typer.Option(help=LLM_CACHE_HELP)] = None,
) -> None:
    """Offline end to end: MovieLens-100k, tasks, graph + evidence, MARS, one trajectory, HR table."""
    from rich.console import Console

    from starrec.graphs.demo import run_demo

    run_demo(n=n, llm=llm, model=model, base_url=base_url, out=out, seed=seed, console=Console(),
             llm_cache=llm_cache)  # fmt: skip


def merge_runs_command(
    sources: Annotated[list[Path], typer.Argument(help="Run folders of `starrec teach --shard I/N`.")],
    out: Annotated[Path, typer.Option(help="New run folder for the merged RUNS/runs.jsonl.")],
) -> None:
    """Join the run folders of the shards of one task set into one run folder (for `starrec distill`)."""
    from rich.console import Console

    from starrec.graphs.display import print_summary
    from starrec.graphs.teach import merge_runs

    report = merge_runs(sources, out)
    console = Console()
    for source, count in report.lines.items():
        console.print(f"{source}: {count} line(s)")
    if report.missing_shards:
        console.print(f"[yellow]shards {report.missing_shards} of the split were not given: their tasks are "
                      "missing from the merge[/yellow]")  # fmt: skip
    print_summary(console, report.summary, f"merged MARS runs in {out}")


def show_command(
    runs: Annotated[Path, typer.Argument(help="Run folder or runs.jsonl.")],
    task: Annotated[str | None, typer.Option(help="Task id to show (default: the first run).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON line.")] = False,
) -> None:
    """Print one recorded MARS trajectory (steps, tool calls with Cypher, repairs)."""
    from rich.console import Console

    from starrec.contract.runs_file import RunsFile
    from starrec.graphs.display import print_trajectory

    runs_file = RunsFile(runs)
    records = runs_file.records()
    if runs_file.torn_lines:
        typer.secho(f"{runs_file.path}: skipped a torn last line (a killed run)", fg="yellow", err=True)
    chosen = [r for r in records if task is None or str(r["task_id"]) == task]
    if not chosen:
        raise typer.BadParameter(f"no run of task {task!r} in {runs}", param_hint="--task")
    if as_json:
        typer.echo(json.dumps(chosen[0], indent=2, ensure_ascii=False))
        return
    from starrec.contract.trajectory import Trajectory

    print_trajectory(Console(), Trajectory.model_validate(chosen[0]))


def register(app: typer.Typer) -> None:
    """Add this area's commands to the top-level app."""
    app.command("teach")(teach_command)
    app.command("demo")(demo_command)
    app.command("merge-runs")(merge_runs_command)
    app.command("trajectory")(show_command)
    app.add_typer(values_app, name="values")


values_app = typer.Typer(
    help="User values (ZOOM): mine Schwartz value profiles onto the graph.", no_args_is_help=True
)


@values_app.command("mine")
def values_mine_command(
    data: Annotated[Path, typer.Option("--data", help="Dataset folder (item.json, user.json, review.json).")],
    out: Annotated[Path, typer.Option("--out", help="Folder of the miner's runs.jsonl.")],
    tasks: Annotated[
        Path | None, typer.Option("--tasks", help="Task folder whose answers are hidden from the graph.")
    ] = None,
    store: Annotated[str, typer.Option("--store", help="ladybug or neo4j.")] = "ladybug",
    path: Annotated[
        Path | None, typer.Option("--path", help="Ladybug database (default: the cached one).")
    ] = None,
    llm: Annotated[str, typer.Option(help="Chat model spec (local, openai:MODEL, scripted:FILE).")] = "local",
    base_url: Annotated[str | None, typer.Option(help="Endpoint for openai specs.")] = None,
    users: Annotated[str | None, typer.Option(help="Only these user ids (a,b,c or @file).")] = None,
    decodings: Annotated[
        str, typer.Option(help="Evaluators' decodings: greedy,sample:T:P,...")
    ] = "greedy,sample:0.7:0.9",
    supervisors: Annotated[int, typer.Option(help="Supervisors in the debate.")] = 2,
    max_rounds: Annotated[int, typer.Option(help="Debate rounds before the fallback.")] = 3,
    tolerance: Annotated[float, typer.Option(help="Consensus: largest weight gap per value.")] = 0.2,
    batch_size: Annotated[int, typer.Option(help="Users per stored batch.")] = 32,
    concurrency: Annotated[int, typer.Option(help="Users mined at once.")] = 4,
    resume: Annotated[bool, typer.Option(help="Skip users that already have a profile.")] = True,
    constrained_decoding: Annotated[str, typer.Option(help="none, or vllm for a vLLM base_url.")] = "none",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Mine a value profile per user (evaluators, supervisor debate) and store it on the User nodes."""
    from dataclasses import asdict

    from starrec.graphs.values_graph import MinerContext
    from starrec.graphs.values_mining import MiningConfig, mine_values
    from starrec.tools.commands import (
        StoreChoice,
        _id_list,
        _ladybug_for_evidence,
        fail,
        load_training_view,
        open_store,
        print_json,
    )
    from starrec.tools.store import GraphStoreError

    try:
        context = MinerContext(
            llm=llm, base_url=base_url, decodings=[d.strip() for d in decodings.split(",") if d.strip()],
            supervisors=supervisors, max_rounds=max_rounds, tolerance=tolerance,
            constrained_decoding=constrained_decoding,  # type: ignore[arg-type]
        )  # fmt: skip
    except ValueError as error:
        raise fail(str(error)) from error
    view, task_list = load_training_view(data, tasks)
    config = MiningConfig(context=context, users=_id_list(users), resume=resume, batch_size=batch_size,
                          concurrency=concurrency)  # fmt: skip
    try:
        if store == "ladybug":
            graph = _ladybug_for_evidence(data, view, task_list, path)
        else:
            graph = open_store(StoreChoice(store), None, None, read_only=False)
        report = mine_values(graph, out, config, domain=view.domain, show_progress=not as_json)
        graph.close()
    except (GraphStoreError, KeyError, ValueError) as error:
        raise fail(str(error)) from error
    summary = {**report.as_dict(), "config": {**asdict(config), "context": asdict(context)}}
    if as_json:
        print_json(summary)
        return
    typer.echo(
        f"{report.users} users mined ({report.skipped} already had a profile, {report.errors} failed): "
        f"consensus {report.consensus_rate:.0%}, fallback {report.fallback_rate:.0%}, "
        f"{report.mean_rounds:.1f} rounds, {report.calls_per_user:.1f} calls and "
        f"{report.tokens_per_user:.0f} tokens per user, {report.hallucinated_ids} hallucinated ids dropped"
    )
