"""What SFT, RL data and GRPO share: loading the student, timing steps, measuring memory, plotting."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def set_threads(threads: int | None) -> None:
    """Pin torch's intra-op threads (1 is much faster than 2 on a busy 2-core machine)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def load_student(model_dir: Path, dtype: str = "float32") -> tuple[Any, Any]:
    """(model, tokenizer) from an HF folder; the tokenizer pads on the left for generation."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.chat_template is None:
        raise ValueError(f"the tokenizer in {model_dir} has no chat template; STAR needs a chat model")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype))
    return model, tokenizer


RESUME_FILE = "resume.json"
"""Beside a run's checkpoints: the config and data they were trained with (a resume must match)."""


def run_identity(config: Any, data: Any) -> dict[str, Any]:
    """What an interrupted training run must share with its re-run to resume: the config as JSON and
    a SHA-256 of the training data."""
    from dataclasses import asdict

    digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
    return {"config": json.loads(json.dumps(asdict(config), default=str)), "data_sha256": digest}


def resume_point(trainer_dir: Path, identity: dict[str, Any]) -> str | None:
    """The latest checkpoint under ``trainer_dir`` left by a stopped run of the same config and data.

    None when there is none; an error when its checkpoints come from another config or data (a
    resume would silently mix two runs).
    """
    # The newest *complete* checkpoint: Trainer writes trainer_state.json last, so a folder a stop
    # cut while saving lacks it (resuming from it would crash on a missing or truncated file).
    complete = [
        folder
        for folder in (trainer_dir.glob("checkpoint-*") if trainer_dir.is_dir() else [])
        if folder.name.removeprefix("checkpoint-").isdigit() and (folder / "trainer_state.json").is_file()
    ]
    if not complete:
        return None
    last = str(max(complete, key=lambda folder: int(folder.name.removeprefix("checkpoint-"))))
    marker = trainer_dir / RESUME_FILE
    recorded = json.loads(marker.read_text()) if marker.is_file() else None
    if recorded != identity:
        changed = (
            "no record of what made them"
            if recorded is None
            else "another config"
            if recorded["config"] != identity["config"]
            else "other training data"
        )
        raise ValueError(
            f"{trainer_dir} holds checkpoints of a run with {changed}; delete {trainer_dir} to train "
            "from the start, or give another output folder"
        )
    return last


def mark_resumable(trainer_dir: Path, identity: dict[str, Any]) -> None:
    """Record what the checkpoints about to be written under ``trainer_dir`` are trained with.

    Written to a temporary file and renamed, so a stop (or another process reading it) never sees
    half a record.
    """
    trainer_dir.mkdir(parents=True, exist_ok=True)
    temporary = trainer_dir / f".{RESUME_FILE}.{os.getpid()}.tmp"
    temporary.write_text(json.dumps(identity, indent=2) + "\n")
    os.replace(temporary, trainer_dir / RESUME_FILE)


MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "star_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
)
"""Small files of a trained student folder that enter its fingerprint beside the weights (its
configs and tokenizer; not its metrics, whose timings change when the same weights are retrained)."""


def model_fingerprint(model_dir: Path) -> str:
    """SHA-256 over a model folder's weights and configs: what a run built on a trained student
    (RL data, GRPO) records, so retraining that student in the same folder is noticed on resume.

    The path alone cannot tell two trainings apart, and ``config.json`` is the same for both.
    """
    model_dir = Path(model_dir)
    digest = hashlib.sha256()
    weights = sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("pytorch_model*.bin"))
    if not weights:
        raise FileNotFoundError(
            f"{model_dir} holds no model weights (*.safetensors or pytorch_model*.bin); train or copy the "
            "student there first"
        )
    for path in [*weights, *(model_dir / name for name in MODEL_FILES)]:
        if not path.is_file():
            continue
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def checkpoint_state(checkpoint: str | None) -> dict[str, Any]:
    """The ``trainer_state.json`` of a checkpoint ({} when training started from scratch)."""
    if checkpoint is None:
        return {}
    state = Path(checkpoint) / "trainer_state.json"
    return json.loads(state.read_text()) if state.is_file() else {}


def checkpoint_logs(checkpoint: str | None) -> list[dict[str, Any]]:
    """The trainer's logs up to ``checkpoint`` (so a resumed run's curve starts at step 1)."""
    history = checkpoint_state(checkpoint).get("log_history", [])
    return [
        {key: value for key, value in entry.items() if isinstance(value, int | float)}
        for entry in history
        if "step" in entry
    ]


def drop_checkpoints(trainer_dir: Path) -> None:
    """Remove the intermediate checkpoints once the final model is saved (each holds the optimizer)."""
    for folder in trainer_dir.glob("checkpoint-*"):
        shutil.rmtree(folder, ignore_errors=True)
    (trainer_dir / RESUME_FILE).unlink(missing_ok=True)


def save_trained(trainer: Any, out: Path) -> bool:
    """Write the trained student as a normal HF folder (safetensors + config + tokenizer) into ``out``;
    True on the process that writes files.

    ``Trainer.save_model`` gathers DeepSpeed ZeRO-3 shards (so every process must call it) and writes
    from the main process only, which lets the same code run alone or under ``accelerate launch``.
    """
    trainer.save_model(str(out))
    return bool(trainer.is_world_process_zero())


@dataclass
class StepLog:
    """Per-step wall time and the trainer's logged metrics."""

    step_seconds: list[float] = field(default_factory=list)
    logs: list[dict[str, float]] = field(default_factory=list)


def make_step_logger(log: StepLog, console: Any | None = None) -> Any:
    """A TrainerCallback recording step times and logs (printing one line per log when given a console)."""
    from transformers import TrainerCallback

    class _StepLogger(TrainerCallback):
        def __init__(self) -> None:
            self._started = time.perf_counter()

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._started = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            log.step_seconds.append(time.perf_counter() - self._started)

        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
        ) -> None:
            if not logs:
                return
            entry = {
                "step": state.global_step,
                **{k: v for k, v in logs.items() if isinstance(v, int | float)},
            }
            log.logs.append(entry)
            if console is not None:
                shown = {k: round(v, 4) for k, v in entry.items() if k in _SHOWN}
                console.print(f"step {state.global_step}: {shown}")

    return _StepLogger()


_SHOWN = {"loss", "reward", "reward_std", "rewards/format_reward/mean", "rewards/outcome_reward/mean", "kl"}


def plot_curves(series: dict[str, list[tuple[int, float]]], path: Path, title: str, ylabel: str) -> Path:
    """One line per series (step, value) into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    for label, points in series.items():
        if points:
            steps, values = zip(*points, strict=True)
            axis.plot(steps, values, marker="o", markersize=3, label=label)
    axis.set_xlabel("step")
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path
