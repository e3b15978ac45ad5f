"""``starrec distill filter | sft | rl-data | grpo``: the STAR pipeline from recorded teacher runs.

Heavy imports (torch, transformers, TRL, datasets) happen inside each command.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from starrec.contract.ablations import ABLATION_CHOICES
from starrec.distill.chain import DEFAULT_RECOMMEND_TOP, GENERATED_TOKEN_BUDGET

distill_app = typer.Typer(
    name="distill",
    help="STAR distillation: outcome filtering, SFT, RL data, GRPO (TRL).",
    no_args_is_help=True,
)

ABLATION_HELP = f"Runs recorded with this MARS ablation: {ABLATION_CHOICES} (default: none)."
CPU_HELP = "Apply the CPU overrides (default: when no CUDA device is present)."
THREADS_HELP = "torch intra-op threads (1 is fastest on a busy 2-core machine; default: torch's choice)."
RunsOpt = Annotated[Path, typer.Option(help="Run folder (RUNS/runs.jsonl) recorded by `starrec teach`.")]
AblationOpt = Annotated[str | None, typer.Option(help=ABLATION_HELP)]
ThreadsOpt = Annotated[int | None, typer.Option(help=THREADS_HELP)]
CpuOpt = Annotated[bool | None, typer.Option("--cpu/--gpu", help=CPU_HELP, show_default=False)]
EvidenceDataOpt = Annotated[
    Path | None,
    typer.Option(help="Dataset folder whose CF graph + evidence answer the student's tool calls."),
]
ReserveOpt = Annotated[
    int | None,
    typer.Option(
        help="Generated tokens kept for the ranking; a sample short of <recommend> is closed and forced "
        "into it (default: enough for --recommend-top ids)."
    ),
]
RecommendTopOpt = Annotated[int, typer.Option(help="R: ids per <recommend> in the chains and the prompt.")]
EvidenceTasksOpt = Annotated[
    Path | None, typer.Option(help="Task folder whose answers are hidden from that graph (leakage).")
]


def _console() -> Any:
    from rich.console import Console

    return Console()


def _open_evidence(data: Path | None, tasks: Path | None, ablation: str | None) -> Any:
    """The evidence store for rollouts (None with no_tools; a clear error when tools need one)."""
    if ablation == "no_tools":
        return None
    if data is None:
        raise typer.BadParameter(
            "the student calls item_cf/user_cf during sampling; give the dataset folder whose graph "
            "answers them (or --ablation no_tools)",
            param_hint="--evidence-data",
        )
    from starrec.data.tasks import read_tasks
    from starrec.tools.toolkit import open_toolkit

    return open_toolkit(data, tasks=read_tasks(tasks) if tasks is not None else None)


@distill_app.command("filter")
def filter_command(
    runs: RunsOpt,
    top_k: Annotated[
        int, typer.Option(help="Keep runs with the ground truth in their top-k (paper: 1).")
    ] = 1,
    ablation: AblationOpt = None,
    out: Annotated[Path | None, typer.Option(help="Write the surviving runs to this .jsonl file.")] = None,
    student: Annotated[
        str,
        typer.Option(
            help="Tokenizer the chain budget is counted in: tiny | smollm2 | an HF folder ('none' skips it)."
        ),
    ] = "smollm2",
    recommend_top: RecommendTopOpt = DEFAULT_RECOMMEND_TOP,
) -> None:
    """Outcome filtering: which recorded runs would train the student, per scenario, and how many of
    their compact chains exceed the student's generated-token budget."""
    from rich.table import Table

    from starrec.contract.runs_file import load_trajectories
    from starrec.distill.filtering import outcome_filter

    kept, report = outcome_filter(load_trajectories(runs), top_k=top_k, ablation=ablation)
    table = Table(title=f"Outcome filter (top-{top_k}, ablation {ablation or 'none'}) on {runs}")
    for column in ("scenario", "runs", "tasks", "errored", "empty", "kept runs", "kept tasks"):
        table.add_column(column, justify="left" if column == "scenario" else "right")
    rows = [*sorted(report.scenarios.items()), ("total", report.total())]
    for name, count in rows:
        values = (count.runs, count.tasks, count.errored, count.empty, count.kept_runs, count.kept_tasks)
        table.add_row(name, *(str(v) for v in values))
    _console().print(table)
    _console().print(
        "empty = finished runs dropped because the ranker named no valid candidate or every agent fell back"
        + (f"; {report.superseded} superseded line(s) of retried runs ignored" if report.superseded else "")
    )
    if kept and student != "none":
        try:
            line = _budget_line(kept, student, recommend_top)
        except (FileNotFoundError, OSError) as error:  # no tokenizer here: the filter itself still stands
            line = f"not counted: no {student!r} tokenizer ({error}); --student none skips this"
        _console().print("Compact chains of the kept runs: " + line)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", encoding="utf-8") as handle:
            for trajectory in kept:
                handle.write(json.dumps(trajectory.to_line(), ensure_ascii=False) + "\n")
        _console().print(f"{len(kept)} runs written to {out}")


def _budget_line(trajectories: list[Any], student: str, recommend_top: int) -> str:
    """The chain-budget sentence for these runs, counted in ``student``'s tokenizer."""
    from transformers import AutoTokenizer

    from starrec.distill.chain import ChainBudgetReport, ChainFormat, serialise_within_budget
    from starrec.distill.config import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(student))
    fmt = ChainFormat(recommend_top=recommend_top)
    report = ChainBudgetReport(GENERATED_TOKEN_BUDGET)
    for trajectory in trajectories:
        report.add(serialise_within_budget(trajectory, tokenizer, report.budget, fmt)[1])
    return report.line()


@distill_app.command("sft")
def sft_command(
    runs: RunsOpt,
    model: Annotated[str, typer.Option(help="tiny | smollm2 | a Hugging Face model folder.")],
    out: Annotated[Path, typer.Option(help="Checkpoint folder (a normal HF model folder).")],
    top_k: Annotated[int | None, typer.Option(help="Outcome filter top-k (default 1).")] = None,
    ablation: AblationOpt = None,
    max_steps: Annotated[
        int | None, typer.Option(help="Stop after N optimiser steps (default: epochs).")
    ] = None,
    epochs: Annotated[float | None, typer.Option(help="Epochs (paper: 2).")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Peak learning rate (paper: 1e-5).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Sequences per device per step.")] = None,
    grad_accum: Annotated[
        int | None, typer.Option(help="Gradient accumulation (paper: global batch 64).")
    ] = None,
    max_length: Annotated[
        int | None,
        typer.Option(
            help="Token limit per example (paper 16,384; CPU 4,096); longer examples are left out and "
            "counted, never truncated."
        ),
    ] = None,
    recommend_top: Annotated[
        int | None, typer.Option(help=f"R: ids per <recommend> (default {DEFAULT_RECOMMEND_TOP}).")
    ] = None,
    mask_tool_responses: Annotated[
        bool, typer.Option(help="No loss on <tool_response> text (the evidence store writes it).")
    ] = True,
    seed: Annotated[int | None, typer.Option(help="Training seed.")] = None,
    target: Annotated[
        str,
        typer.Option(help="star (the whole chain) | planner (the planner's steps only: MARS-Planner)."),
    ] = "star",
    save_steps: Annotated[
        int | None,
        typer.Option(help="Checkpoint every N steps (default 25; 0 = none); a stopped run re-run resumes."),
    ] = None,
    cpu: CpuOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Stage 1: fine-tune the student on outcome-filtered teacher chains (TRL SFTTrainer); with
    ``--target planner``, the MARS planner on the kept runs' planner steps."""
    from starrec.distill.config import StarSFTConfig
    from starrec.distill.sft import train_sft
    from starrec.distill.training import set_threads

    set_threads(threads)
    try:
        base = StarSFTConfig(model=model, ablation=ablation, target=target)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    config = base.for_device(cpu).with_updates(
        top_k=top_k,
        max_steps=max_steps,
        num_train_epochs=epochs,
        learning_rate=learning_rate,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum,
        max_length=max_length,
        recommend_top=recommend_top,
        mask_tool_responses=mask_tool_responses,
        seed=seed,
        save_steps=save_steps,
    )
    console = _console()
    result = train_sft(runs, out, config, console)
    s = result.summary()
    console.print(
        f"SFT done: {s['examples']} examples ({s['dropped_too_long']} longer than max_length, left out; "
        f"{s['chain_budget']['over_budget']} chains over the {s['chain_budget']['budget']}-token "
        f"generated budget), {s['steps']} steps, "
        f"loss {s['first_loss']:.4f} -> {s['last_loss']:.4f}, {s['s_per_step']} s/step, "
        f"{s['tokens_per_s']} tokens/s, peak {s['peak_rss_mb']} MiB. Checkpoint: {out}"
        + (f" (resumed from {s['resumed_from']})" if s["resumed_from"] else "")
    )


@distill_app.command("rl-data")
def rl_data_command(
    model: Annotated[Path, typer.Option(help="The SFT checkpoint to sample.")],
    runs: Annotated[Path, typer.Option(help="Run folder whose tasks (prompt + ground truth) are sampled.")],
    out: Annotated[Path, typer.Option(help="Output folder: mixed/ (HF dataset), all/, rl_data.json.")],
    samples: Annotated[int, typer.Option(help="Completions per instance (paper: 8).")] = 8,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (paper: 0.7).")] = 0.7,
    success_at: Annotated[
        int, typer.Option(help="A sample succeeds with the ground truth in its top-k.")
    ] = 1,
    mix: Annotated[str, typer.Option(help="easy:medium:hard ratio (paper: 3:4:3).")] = "3:4:3",
    total: Annotated[int | None, typer.Option(help="Cap on mixed instances (paper: ~500).")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N tasks.")] = None,
    max_prompt_length: Annotated[int, typer.Option(help="Prompt tokens kept (the end).")] = 6000,
    max_completion_length: Annotated[
        int, typer.Option(help="Generated tokens per sample (tool responses not counted).")
    ] = 8192,
    recommend_top: RecommendTopOpt = DEFAULT_RECOMMEND_TOP,
    recommend_reserve: ReserveOpt = None,
    max_tool_calls: Annotated[int, typer.Option(help="Tool calls executed per sample.")] = 8,
    ablation: AblationOpt = None,
    evidence_data: EvidenceDataOpt = None,
    evidence_tasks: EvidenceTasksOpt = None,
    seed: Annotated[int, typer.Option(help="Seed for sampling and the mix.")] = 0,
    threads: ThreadsOpt = None,
) -> None:
    """Sample the SFT student 8x per task, bucket by hits (easy 6-7, medium 3-5, hard 1-2), mix 3:4:3."""
    from starrec.contract.runs_file import load_trajectories
    from starrec.distill.rldata import RLDataConfig, build_rl_data, rl_instances
    from starrec.distill.training import set_threads

    set_threads(threads)
    config = RLDataConfig(
        samples=samples,
        temperature=temperature,
        success_at=success_at,
        total=total,
        mix=mix,
        max_prompt_length=max_prompt_length,
        max_completion_length=max_completion_length,
        max_tool_calls=max_tool_calls,
        recommend_top=recommend_top,
        recommend_reserve=recommend_reserve,
        ablation=ablation,
        limit=limit,
        seed=seed,
    )
    evidence = _open_evidence(evidence_data, evidence_tasks, ablation)
    instances = rl_instances(load_trajectories(runs), ablation, recommend_top)
    summary = build_rl_data(
        model, instances, out, config, evidence, evidence_dirs=(evidence_data, evidence_tasks)
    )
    _console().print(
        f"RL data: {summary['instances']} instances, buckets {summary['buckets']}, mixed {summary['mixed']}; "
        f"{summary['unparsed_samples']}/{summary['samples']} samples unparsed, {summary['forced_samples']} "
        f"budget-forced into <recommend>; written to {out}"
    )


@distill_app.command("grpo")
def grpo_command(
    sft: Annotated[Path, typer.Option(help="The SFT checkpoint to start from.")],
    data: Annotated[Path, typer.Option(help="RL data folder from `starrec distill rl-data`.")],
    out: Annotated[Path, typer.Option(help="Checkpoint folder (HF model folder + reward curve).")],
    max_steps: Annotated[int | None, typer.Option(help="Stop after N steps (default: one epoch).")] = None,
    epochs: Annotated[float | None, typer.Option(help="Passes over the RL data.")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Actor learning rate (paper: 1e-6).")] = None,
    beta: Annotated[float | None, typer.Option(help="KL coefficient (paper: 0.001).")] = None,
    temperature: Annotated[float | None, typer.Option(help="Rollout temperature (paper: 0.7).")] = None,
    num_generations: Annotated[int | None, typer.Option(help="G, completions per prompt (paper: 8).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Completions per step (multiple of G).")] = None,
    max_prompt_length: Annotated[int | None, typer.Option(help="Prompt tokens kept (paper: 6,000).")] = None,
    max_completion_length: Annotated[
        int | None,
        typer.Option(help="Generated tokens per response, tool responses not counted (paper: 8,192)."),
    ] = None,
    max_tool_calls: Annotated[int | None, typer.Option(help="Tool calls executed per rollout.")] = None,
    recommend_reserve: ReserveOpt = None,
    save_steps: Annotated[int | None, typer.Option(help="Extra checkpoints every N steps.")] = None,
    ablation: AblationOpt = None,
    evidence_data: EvidenceDataOpt = None,
    evidence_tasks: EvidenceTasksOpt = None,
    seed: Annotated[int | None, typer.Option(help="Seed.")] = None,
    cpu: CpuOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Stage 2: GRPO with r = format + tiered outcome, tools executed inside rollouts (TRL GRPOTrainer)."""
    from starrec.distill.config import StarGRPOConfig
    from starrec.distill.grpo import train_grpo
    from starrec.distill.rldata import load_rl_data
    from starrec.distill.training import set_threads

    set_threads(threads)
    _, info = load_rl_data(data)
    recorded = info.get("evidence", {})
    evidence_data = evidence_data or (Path(recorded["data"]) if recorded.get("data") else None)
    evidence_tasks = evidence_tasks or (Path(recorded["tasks"]) if recorded.get("tasks") else None)
    base = StarGRPOConfig(ablation=ablation).for_device(cpu)
    if batch_size is None and num_generations is not None:
        batch_size = num_generations
    config = base.with_updates(
        max_steps=max_steps,
        num_train_epochs=epochs,
        learning_rate=learning_rate,
        beta=beta,
        temperature=temperature,
        num_generations=num_generations,
        per_device_train_batch_size=batch_size,
        max_prompt_length=max_prompt_length,
        max_completion_length=max_completion_length,
        max_tool_calls=max_tool_calls,
        recommend_reserve=recommend_reserve,
        save_steps=save_steps,
        seed=seed,
    )
    evidence = _open_evidence(evidence_data, evidence_tasks, ablation)
    console = _console()
    result = train_grpo(sft, data, out, config, evidence, console)
    summary = result.summary()
    last = summary["reward_mean"][-1][1] if summary["reward_mean"] else float("nan")
    console.print(
        f"GRPO done: {summary['steps']} steps, last reward mean {last:.3f}, {summary['s_per_step']} s/step, "
        f"{summary['tokens_per_s']} tokens/s, peak {summary['peak_rss_mb']} MiB. Checkpoint: {out} "
        f"(reward curve {out / 'reward_curve.png'})"
    )


def register(app: typer.Typer) -> None:
    """Add this area's commands to the top-level app."""
    app.add_typer(distill_app, name="distill")
