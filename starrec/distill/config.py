"""Training configurations of STAR, TRL style: every knob a documented dataclass field.

Defaults mirror the paper (Qwen3-8B, bf16, long contexts; docs/distill.md); :meth:`cpu_overrides`
lists what changes on a machine without a GPU, and ``to_trl`` builds the TRL config the
trainers take. Both configs are written next to the checkpoints (``star_config.json``).

The TRL configs are derived, not copied: every field whose name is a field of TRL's
``SFTConfig``/``GRPOConfig`` is passed through by name, and every other field must be listed in
``STAR_ONLY``, so a field TRL renames or drops fails loudly instead of drifting.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

from starrec.contract.ablations import ABLATION_CHOICES, check_ablation
from starrec.distill.chain import DEFAULT_RECOMMEND_TOP, GENERATED_TOKEN_BUDGET


def resolve_model(spec: str) -> Path:
    """``tiny`` -> random ~3M-parameter Llama, ``smollm2`` -> SmolLM2-135M-Instruct, else an HF folder."""
    from starrec.llm.local import resolve_model_dir

    return resolve_model_dir(spec)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


SFT_TARGETS: tuple[str, ...] = ("star", "planner")
"""What ``starrec distill sft`` fine-tunes: the STAR student, or the MARS planner alone."""


class _Config:
    """Shared behaviour of the two configs (dataclass mixin)."""

    def cpu_overrides(self) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def for_device(self, cpu: bool | None = None) -> Any:
        """This config with the CPU overrides applied when ``cpu`` (default: no CUDA device)."""
        use_cpu = (not cuda_available()) if cpu is None else cpu
        return replace(self, **self.cpu_overrides()) if use_cpu else self  # type: ignore[type-var]

    def with_updates(self, **updates: Any) -> Any:
        """Override fields from the command line; None means 'keep the default'."""
        known = {item.name for item in fields(self)}  # type: ignore[arg-type]
        unknown = set(updates) - known
        if unknown:
            raise ValueError(f"unknown config fields {sorted(unknown)}; known: {sorted(known)}")
        return replace(self, **{key: value for key, value in updates.items() if value is not None})  # type: ignore[type-var]

    STAR_ONLY: ClassVar[frozenset[str]] = frozenset()
    """Fields STAR uses itself (data selection, rollouts); every other field is a TRL field."""

    def trl_fields(self, trl_class: type) -> dict[str, Any]:
        """This config's values for the fields TRL's ``trl_class`` has, by name."""
        theirs = {item.name for item in dataclasses.fields(trl_class)}
        ours = {item.name for item in fields(self)}  # type: ignore[arg-type]
        stray = ours - theirs - self.STAR_ONLY
        if stray:
            raise TypeError(
                f"{type(self).__name__} fields {sorted(stray)} are not {trl_class.__name__} fields (TRL "
                f"renamed or dropped them?) and not listed in STAR_ONLY; update starrec/distill/config.py"
            )
        return {name: getattr(self, name) for name in sorted(ours & theirs)}

    def save(self, directory: Path) -> Path:
        path = directory / "star_config.json"
        path.write_text(json.dumps(asdict(self), indent=2, default=str) + "\n")  # type: ignore[call-overload]
        return path


@dataclass
class StarSFTConfig(_Config):
    """Stage 1: supervised fine-tuning on outcome-filtered teacher chains."""

    model: str = field(default="smollm2", metadata={"help": "tiny | smollm2 | a Hugging Face model folder."})
    top_k: int = field(
        default=1, metadata={"help": "Outcome filter: keep runs with the ground truth in the top-k."}
    )
    ablation: str | None = field(
        default=None, metadata={"help": f"Train from runs recorded with {ABLATION_CHOICES}."}
    )
    mask_tool_responses: bool = field(
        default=True,
        metadata={
            "help": "No loss on <tool_response> text: the student calls tools, it never writes evidence."
        },
    )
    target: str = field(
        default="star",
        metadata={
            "help": "star = the whole chain (the STAR student); planner = the planner's recorded steps only "
            "(its exact prompt and plan), for the MARS-Planner hybrid."
        },
    )
    learning_rate: float = field(default=1e-5, metadata={"help": "Paper: 1e-5."})
    num_train_epochs: float = field(default=2.0, metadata={"help": "Paper: 2 epochs."})
    max_steps: int = field(
        default=-1, metadata={"help": "Stop after this many optimiser steps (-1 = epochs)."}
    )
    per_device_train_batch_size: int = field(default=1, metadata={"help": "Sequences per forward pass."})
    gradient_accumulation_steps: int = field(
        default=64, metadata={"help": "Paper: global batch 64 (= batch x accumulation x devices)."}
    )
    lr_scheduler_type: str = field(default="linear", metadata={"help": "Paper: linear decay."})
    warmup_steps: float = field(
        default=0.05, metadata={"help": "Paper: 5% warm-up (a float < 1 is a ratio)."}
    )
    max_length: int = field(
        default=16384,
        metadata={
            "help": "Paper: 16,384 tokens (prompt + chain). Longer examples are left out and counted, never "
            "truncated: a cut chain would teach the student to stop before <recommend>."
        },
    )
    recommend_top: int = field(
        default=DEFAULT_RECOMMEND_TOP,
        metadata={"help": "R: ids in each chain's <recommend> (and the prompt's 'at most R ids')."},
    )
    bf16: bool = field(default=True, metadata={"help": "bf16 mixed precision (GPU)."})
    use_cpu: bool = field(default=False, metadata={"help": "Train on CPU."})
    logging_steps: int = field(default=1, metadata={"help": "Log loss every N steps."})
    save_steps: int = field(
        default=25,
        metadata={
            "help": "Checkpoint every N steps under OUT/trainer (latest kept); a stopped run started again "
            "with the same config and data resumes there (0 = no checkpoints)."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed for data order, initialisation (tiny) and dropout."})

    STAR_ONLY: ClassVar[frozenset[str]] = frozenset(
        {"model", "top_k", "ablation", "mask_tool_responses", "recommend_top", "target"}
    )

    def cpu_overrides(self) -> dict[str, Any]:
        return {"use_cpu": True, "bf16": False, "gradient_accumulation_steps": 1, "max_length": 4096}

    def to_trl(self, output_dir: Path) -> Any:
        from trl import SFTConfig

        return SFTConfig(
            output_dir=str(output_dir),
            **self.trl_fields(SFTConfig),
            save_strategy="steps" if self.save_steps else "no",
            save_total_limit=1,
            report_to="none",
            activation_checkpointing=False,
            dataloader_num_workers=0,
            disable_tqdm=False,
        )

    def __post_init__(self) -> None:
        check_ablation(self.ablation)
        if self.target not in SFT_TARGETS:
            raise ValueError(f"SFT target {self.target!r} is not one of {', '.join(SFT_TARGETS)}")
        if self.target == "planner" and self.ablation == "no_planner":
            raise ValueError("target planner trains on planner steps; no_planner runs have none")


@dataclass
class StarGRPOConfig(_Config):
    """Stage 2: GRPO with r = r_fmt + r_out, tools executed inside rollouts."""

    ablation: str | None = field(
        default=None,
        metadata={"help": f"{ABLATION_CHOICES}: changes prompt and format reward."},
    )
    learning_rate: float = field(default=1e-6, metadata={"help": "Paper: actor lr 1e-6."})
    beta: float = field(default=0.001, metadata={"help": "Paper: KL coefficient 0.001."})
    temperature: float = field(default=0.7, metadata={"help": "Paper: sampling temperature 0.7."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling."})
    num_generations: int = field(default=8, metadata={"help": "G, completions per prompt. Paper: 8."})
    per_device_train_batch_size: int = field(
        default=8, metadata={"help": "Completions per step per device (a multiple of num_generations)."}
    )
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Optimiser step every N batches."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the RL dataset."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (-1 = epochs)."})
    max_prompt_length: int = field(
        default=6000, metadata={"help": "Paper: 6,000; longer prompts keep their end."}
    )
    max_completion_length: int = field(
        default=8192,
        metadata={
            "help": "Paper: 8,192. Tokens the policy generates per response; inserted tool responses do "
            "not count (and get no loss)."
        },
    )
    recommend_reserve: int | None = field(
        default=None,
        metadata={
            "help": "Generated tokens kept for the ranking: a rollout that has not reached <recommend> "
            "when only this many remain is closed and given <recommend> (None: enough for the R ids the RL "
            "data's prompts ask for)."
        },
    )
    max_tool_calls: int = field(
        default=8, metadata={"help": "Tool calls executed per rollout; later ones error."}
    )
    tool_k: int = field(default=10, metadata={"help": "Neighbours per tool call."})
    bf16: bool = field(default=True, metadata={"help": "bf16 mixed precision (GPU)."})
    use_cpu: bool = field(default=False, metadata={"help": "Train on CPU."})
    logging_steps: int = field(default=1, metadata={"help": "Log rewards every N steps."})
    save_steps: int = field(
        default=10,
        metadata={
            "help": "Checkpoint every N steps under OUT/trainer (latest kept); a stopped run started again "
            "with the same config, SFT model and RL data resumes there (0 = no checkpoints)."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed for sampling and data order."})

    def cpu_overrides(self) -> dict[str, Any]:
        return {
            "use_cpu": True,
            "bf16": False,
            "num_generations": 4,
            "per_device_train_batch_size": 4,
            "max_prompt_length": 2048,
            "max_completion_length": GENERATED_TOKEN_BUDGET,
        }

    def __post_init__(self) -> None:
        check_ablation(self.ablation)
        if self.per_device_train_batch_size % self.num_generations:
            raise ValueError(
                f"per_device_train_batch_size ({self.per_device_train_batch_size}) must be a multiple of "
                f"num_generations ({self.num_generations}) so every group is complete in a step"
            )

    STAR_ONLY: ClassVar[frozenset[str]] = frozenset(
        {"ablation", "max_prompt_length", "max_tool_calls", "tool_k", "recommend_reserve"}
    )

    def to_trl(self, output_dir: Path) -> Any:
        from trl import GRPOConfig

        passed = self.trl_fields(GRPOConfig)
        passed["save_steps"] = self.save_steps or 500  # TRL wants > 0 even with save_strategy "no"
        return GRPOConfig(
            output_dir=str(output_dir),
            **passed,
            save_total_limit=1,
            use_vllm=False,
            activation_checkpointing=False,
            save_strategy="steps" if self.save_steps else "no",
            report_to="none",
            dataloader_num_workers=0,
        )
