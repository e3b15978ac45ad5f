"""Stage 1 of STAR: supervised fine-tuning on the outcome-filtered teacher chains (TRL ``SFTTrainer``).

Each surviving run becomes one conversational prompt/completion pair: the STAR system prompt and
the task as the prompt, the serialised chain as the assistant completion. The loss covers the
assistant tokens only, and (by default) not the ``<tool_response>`` blocks: at inference those
come from the evidence store, so learning to write them would only teach the student to invent
evidence. The masks are built here from character offsets, so any chat template works (TRL's
``assistant_only_loss`` needs ``{% generation %}`` markers that SmolLM2's ChatML template lacks).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starrec.contract.runs_file import load_trajectories
from starrec.contract.trajectory import Trajectory
from starrec.distill.chain import (
    GENERATED_TOKEN_BUDGET,
    TOOL_RESPONSE_SPAN,
    ChainBudgetReport,
    ChainFormat,
    chain_budget_report,
    serialise_trajectory,
    serialise_within_budget,
)
from starrec.distill.config import StarSFTConfig, resolve_model
from starrec.distill.filtering import FilterReport, outcome_filter
from starrec.distill.planner_sft import planner_rows
from starrec.distill.student_prompt import trajectory_messages


def sft_rows(
    trajectories: Sequence[Trajectory],
    ablation: str | None = None,
    fmt: ChainFormat | None = None,
    tokenizer: Any = None,
    budget: int = GENERATED_TOKEN_BUDGET,
) -> list[dict[str, Any]]:
    """Conversational prompt/completion rows (TRL's format) for these runs.

    Chains are compact (``fmt``, default :class:`ChainFormat`); given the student's ``tokenizer``,
    each is the most detailed one whose generated tokens fit ``budget``
    (:func:`serialise_within_budget`). The prompt asks for ``fmt.recommend_top`` ids.
    """
    fmt = fmt or ChainFormat()
    rows = []
    for trajectory in trajectories:
        if tokenizer is None:
            chain = serialise_trajectory(trajectory, fmt=fmt)
        else:
            chain, _ = serialise_within_budget(trajectory, tokenizer, budget, fmt)
        rows.append(
            {
                "prompt": trajectory_messages(trajectory, ablation, recommend_top=fmt.recommend_top),
                "completion": [{"role": "assistant", "content": chain}],
                "task_id": trajectory.task_id,
                "pass": trajectory.pass_,
                "scenario": trajectory.scenario,
                "ground_truth": trajectory.ground_truth or "",
            }
        )
    return rows


def tokenize_row(
    tokenizer: Any, prompt: list[dict[str, str]], completion: list[dict[str, str]], mask_tool_responses: bool
) -> dict[str, list[int]]:
    """``input_ids`` and ``labels`` (-100 on the prompt and, optionally, on tool responses)."""
    prompt_text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    full_text = tokenizer.apply_chat_template([*prompt, *completion], tokenize=False)
    if not full_text.startswith(prompt_text):
        raise ValueError("the chat template renders the prompt differently with and without the answer")
    masked = [(0, len(prompt_text))]
    if mask_tool_responses:
        masked += [(m.start(), m.end()) for m in TOOL_RESPONSE_SPAN.finditer(full_text, len(prompt_text))]
    encoding = tokenizer(full_text, add_special_tokens=False, return_offsets_mapping=True)
    labels = []
    for token_id, (start, end) in zip(encoding["input_ids"], encoding["offset_mapping"], strict=True):
        inside = any(low <= start and end <= high for low, high in masked) or end <= len(prompt_text)
        labels.append(-100 if inside else token_id)
    return {"input_ids": list(encoding["input_ids"]), "labels": labels}


def fitting_examples(
    tokenized: Sequence[dict[str, list[int]]], max_length: int
) -> list[dict[str, list[int]]]:
    """The examples within ``max_length`` tokens. Longer ones are dropped, not truncated: a chain
    cut short would teach the student to stop before ``<recommend>``. None fitting is an error."""
    fitting = [row for row in tokenized if len(row["input_ids"]) <= max_length]
    if not fitting:
        longest = max((len(row["input_ids"]) for row in tokenized), default=0)
        raise ValueError(
            f"every example is longer than max_length={max_length} (longest {longest} tokens); "
            "raise --max-length"
        )
    return fitting


@dataclass
class SFTResult:
    out: Path
    report: FilterReport
    examples: int
    dropped_too_long: int
    """Examples longer than ``max_length`` (prompt + chain), left out, never truncated."""
    steps: int
    chain_budget: ChainBudgetReport = field(default_factory=lambda: ChainBudgetReport(GENERATED_TOKEN_BUDGET))
    """Generated vs tool tokens of every chain against the student's generated budget."""
    losses: list[tuple[int, float]] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    trained_tokens: int = 0
    """Tokens trained on by this invocation (the steps after ``resumed_from``, when it resumed)."""
    mean_example_tokens: int = 0
    seconds: float = 0.0
    """Training seconds of this invocation (after ``resumed_from``, when it resumed)."""
    peak_rss_mb: float = 0.0
    resumed_from: str | None = None
    """The checkpoint a stopped run was resumed from (None: trained from the start)."""

    def summary(self) -> dict[str, Any]:
        timed = self.step_seconds[1:] or self.step_seconds  # the first step pays for warm-up
        mean_step = sum(timed) / len(timed) if timed else 0.0
        return {
            "out": str(self.out),
            "resumed_from": self.resumed_from,
            "filter": self.report.to_dict(),
            "examples": self.examples,
            "dropped_too_long": self.dropped_too_long,
            "chain_budget": self.chain_budget.to_dict(),
            "steps": self.steps,
            "first_loss": self.losses[0][1] if self.losses else None,
            "last_loss": self.losses[-1][1] if self.losses else None,
            "losses": self.losses,
            "seconds": round(self.seconds, 2),
            "s_per_step": round(mean_step, 3),
            "tokens_per_s": round(self.trained_tokens / self.seconds, 1) if self.seconds else 0.0,
            "trained_tokens": self.trained_tokens,
            "mean_example_tokens": self.mean_example_tokens,
            "peak_rss_mb": round(self.peak_rss_mb, 1),
        }


def train_sft(runs: Path, out: Path, config: StarSFTConfig, console: Any | None = None) -> SFTResult:
    """Filter ``runs``, build the dataset, fine-tune ``config.model`` and save an HF folder to ``out``."""
    from datasets import Dataset
    from trl import SFTTrainer

    from starrec.distill.training import (
        StepLog,
        checkpoint_logs,
        checkpoint_state,
        drop_checkpoints,
        load_student,
        make_step_logger,
        mark_resumable,
        peak_rss_mb,
        plot_curves,
        resume_point,
        run_identity,
        save_trained,
        write_json,
    )

    kept, report = outcome_filter(load_trajectories(runs), top_k=config.top_k, ablation=config.ablation)
    if not kept:
        raise ValueError(
            f"no run in {runs} survives the top-{config.top_k} outcome filter ({report.to_dict()['total']}); "
            "record more passes or loosen --top-k"
        )
    model_dir = resolve_model(config.model)
    model, tokenizer = load_student(model_dir)
    if config.target == "planner":
        rows = planner_rows(kept)
    else:
        rows = sft_rows(kept, config.ablation, ChainFormat(recommend_top=config.recommend_top), tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    budget = chain_budget_report((row["completion"][0]["content"] for row in rows), tokenizer)
    tokenized = [
        tokenize_row(tokenizer, row["prompt"], row["completion"], config.mask_tool_responses) for row in rows
    ]
    fitting = fitting_examples(tokenized, config.max_length)
    if console is not None:
        console.print(f"SFT data: {len(rows)} chains; {budget.line()}")
        if len(fitting) < len(tokenized):
            console.print(
                f"[yellow]{len(tokenized) - len(fitting)} of {len(tokenized)} examples are longer than "
                f"max_length={config.max_length} and are left out (a cut chain would end before "
                "<recommend>); raise --max-length to keep them[/yellow]"
            )
    train_dataset = Dataset.from_list(fitting)
    trainer_dir = out / "trainer"
    identity = run_identity(config, [row["input_ids"] for row in fitting])
    resume = resume_point(trainer_dir, identity)
    if console is not None and resume is not None:
        console.print(f"resuming SFT from {resume}")
    log = StepLog(logs=checkpoint_logs(resume))
    resumed_steps = int(checkpoint_state(resume).get("global_step", 0))  # read before checkpoints go
    trainer = SFTTrainer(
        model=model,
        args=config.to_trl(trainer_dir),
        train_dataset=train_dataset,
        processing_class=tokenizer,
        callbacks=[make_step_logger(log, console)],
    )
    writer = trainer.is_world_process_zero()  # under accelerate launch, only one process writes files
    if writer:
        Dataset.from_list(rows).save_to_disk(str(out / "sft_data"))
        mark_resumable(trainer_dir, identity)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - started
    save_trained(trainer, out)
    if writer:
        config.save(out)
        drop_checkpoints(trainer_dir)
    steps = trainer.state.global_step
    epochs = trainer.state.epoch or 0.0
    fresh_share = (steps - resumed_steps) / steps if steps else 0.0  # tokens/s counts this invocation's
    result = SFTResult(
        out=out,
        report=report,
        examples=len(fitting),
        dropped_too_long=len(tokenized) - len(fitting),
        steps=steps,
        chain_budget=budget,
        losses=[(entry["step"], entry["loss"]) for entry in log.logs if "loss" in entry],
        step_seconds=log.step_seconds,
        trained_tokens=int(sum(len(row["input_ids"]) for row in fitting) * epochs * fresh_share),
        mean_example_tokens=sum(len(row["input_ids"]) for row in fitting) // len(fitting),
        seconds=seconds,
        peak_rss_mb=peak_rss_mb(),
        resumed_from=resume,
    )
    if writer:
        write_json(out / "sft_metrics.json", result.summary())
    if writer and result.losses:
        plot_curves({"loss": result.losses}, out / "sft_loss.png", f"STAR SFT ({config.model})", "loss")
    return result
