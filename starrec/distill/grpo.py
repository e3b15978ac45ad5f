"""Stage 2 of STAR: GRPO (TRL ``GRPOTrainer``) with r = r_fmt + r_out and real tool results.

TRL's own tool loop renders tool results as separate chat messages through the chat template;
the STAR chain keeps ``<tool_response>`` inline in the one assistant turn (as vLLM serving does),
so rollouts come from our ``rollout_func`` (:mod:`starrec.distill.rollout`): generate until
``</tool_call>``, execute against the evidence store, append the response, continue. The inserted
tokens are returned as ``env_mask = 0``: TRL 1.16 treats a ``rollout_func``'s ``env_mask`` as its
tool mask, so the policy loss skips them and its completion-length metrics count only generated
tokens. ``max_completion_length`` bounds the generated tokens alone (tool responses never eat the
budget), and rollouts that run short of it are budget-forced into ``<recommend>`` like serving.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starrec.distill.chain import DEFAULT_RECOMMEND_TOP, check_reserve, recommend_reserve
from starrec.distill.config import StarGRPOConfig
from starrec.distill.rewards import star_reward_funcs
from starrec.distill.rollout import ToolExecutor, chat_prompt_ids, generate_rollouts


def make_rollout_func(
    executor: ToolExecutor, config: StarGRPOConfig, tokenizer: Any, recommend_top: int = DEFAULT_RECOMMEND_TOP
) -> Any:
    """TRL ``rollout_func``: one completion per (already repeated) prompt, tools executed inline.

    ``recommend_top``: the R the RL prompts ask for (sizes the default forcing reserve).
    """
    reserve = (
        config.recommend_reserve if config.recommend_reserve is not None else recommend_reserve(recommend_top)
    )
    check_reserve(reserve, config.max_completion_length, "max_completion_length")

    def rollout_func(prompts: list[Any], trainer: Any) -> dict[str, Any]:
        model = trainer.accelerator.unwrap_model(trainer.model)
        prompt_ids = [chat_prompt_ids(tokenizer, prompt, config.max_prompt_length) for prompt in prompts]
        rollouts = generate_rollouts(
            model,
            tokenizer,
            prompt_ids,
            executor,
            max_completion_length=config.max_completion_length,
            temperature=config.temperature,
            top_p=config.top_p,
            max_tool_calls=config.max_tool_calls,
            recommend_reserve=reserve,
        )
        return {
            "prompt_ids": [rollout.prompt_ids for rollout in rollouts],
            "completion_ids": [rollout.completion_ids for rollout in rollouts],
            "logprobs": None,
            "env_mask": [rollout.env_mask for rollout in rollouts],
            "tool_calls": [rollout.tools.calls for rollout in rollouts],
            "tool_errors": [rollout.tools.errors + rollout.tools.refused for rollout in rollouts],
            "forced": [rollout.forced for rollout in rollouts],
        }

    return rollout_func


@dataclass
class GRPOResult:
    out: Path
    steps: int
    rewards: list[tuple[int, float]] = field(default_factory=list)
    reward_std: list[tuple[int, float]] = field(default_factory=list)
    format_rewards: list[tuple[int, float]] = field(default_factory=list)
    outcome_rewards: list[tuple[int, float]] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    tokens: int = 0
    """Tokens seen by this invocation (after the checkpoint it resumed from, when it resumed)."""
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    logs: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        timed = self.step_seconds[1:] or self.step_seconds
        return {
            "out": str(self.out),
            "steps": self.steps,
            "reward_mean": self.rewards,
            "reward_std": self.reward_std,
            "format_reward_mean": self.format_rewards,
            "outcome_reward_mean": self.outcome_rewards,
            "seconds": round(self.seconds, 2),
            "s_per_step": round(sum(timed) / len(timed), 3) if timed else 0.0,
            "tokens": self.tokens,
            "tokens_per_s": round(self.tokens / self.seconds, 1) if self.seconds else 0.0,
            "peak_rss_mb": round(self.peak_rss_mb, 1),
        }


def _series(logs: list[dict[str, float]], key: str) -> list[tuple[int, float]]:
    return [(int(entry["step"]), float(entry[key])) for entry in logs if key in entry]


def train_grpo(
    sft_dir: Path,
    rl_data: Path,
    out: Path,
    config: StarGRPOConfig,
    evidence: Any | None,
    console: Any | None = None,
) -> GRPOResult:
    """GRPO from the SFT checkpoint on the mixed RL data; saves an HF folder, metrics and a reward curve."""
    import os

    from trl import GRPOTrainer

    from starrec.distill.rldata import load_rl_data
    from starrec.distill.training import (
        StepLog,
        checkpoint_logs,
        checkpoint_state,
        drop_checkpoints,
        load_student,
        make_step_logger,
        mark_resumable,
        model_fingerprint,
        peak_rss_mb,
        plot_curves,
        resume_point,
        run_identity,
        save_trained,
        write_json,
    )

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is documented as experimental
    dataset, info = load_rl_data(rl_data)
    recorded = info.get("config", {}).get("ablation")
    if recorded != config.ablation:
        raise ValueError(
            f"{rl_data} was sampled with ablation {recorded or 'none'} but GRPO was asked for "
            f"{config.ablation or 'none'}; prompts and format reward must match"
        )
    model, tokenizer = load_student(sft_dir)
    tokenizer.padding_side = "left"
    executor = ToolExecutor(evidence if config.ablation != "no_tools" else None, config.tool_k)
    trainer_dir = out / "trainer"
    identity = run_identity(config, {"rl_data": dataset.to_list(), "sft_model": model_fingerprint(sft_dir)})
    resume = resume_point(trainer_dir, identity)
    if console is not None and resume is not None:
        console.print(f"resuming GRPO from {resume}")
    log = StepLog(logs=checkpoint_logs(resume))
    tokens_before = int(checkpoint_state(resume).get("num_input_tokens_seen", 0))
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=star_reward_funcs(config.ablation),
        args=config.to_trl(trainer_dir),
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[make_step_logger(log, console)],
        rollout_func=make_rollout_func(
            executor, config, tokenizer, info.get("config", {}).get("recommend_top", DEFAULT_RECOMMEND_TOP)
        ),
    )
    if trainer.is_world_process_zero():
        mark_resumable(trainer_dir, identity)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - started
    writer = save_trained(trainer, out)  # under accelerate launch, only one process writes files
    if writer:
        config.save(out)
        drop_checkpoints(trainer_dir)
    result = GRPOResult(
        out=out,
        steps=trainer.state.global_step,
        rewards=_series(log.logs, "reward"),
        reward_std=_series(log.logs, "reward_std"),
        format_rewards=_series(log.logs, "rewards/format_reward/mean"),
        outcome_rewards=_series(log.logs, "rewards/outcome_reward/mean"),
        step_seconds=log.step_seconds,
        tokens=int(trainer.state.num_input_tokens_seen) - tokens_before,
        seconds=seconds,
        peak_rss_mb=peak_rss_mb(),
        logs=log.logs,
    )
    if not writer:
        return result
    write_json(out / "grpo_metrics.json", {**result.summary(), "logs": log.logs})
    plot_curves(
        {
            "reward (format + outcome)": result.rewards,
            "format": result.format_rewards,
            "outcome": result.outcome_rewards,
        },
        out / "reward_curve.png",
        "STAR GRPO rewards",
        "mean reward",
    )
    return result
