"""RL data for GRPO: sample the SFT student, bucket instances by difficulty, mix 3:4:3 (docs/distill.md).

Each instance is answered ``samples`` times (8, temperature 0.7) with tools executed inline; a
sample succeeds when the ground truth is in the top ``success_at`` of its repaired ranking
(1 in the paper). Hits 6–7 = easy, 3–5 = medium, 1–2 = hard; 0 and 8 carry no GRPO signal and
are dropped. The three buckets are then mixed easy:medium:hard = 3:4:3.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from starrec.distill.chain import DEFAULT_RECOMMEND_TOP

BUCKETS: tuple[str, ...] = ("easy", "medium", "hard")
PAPER_BUCKET_HITS: dict[str, tuple[int, int]] = {"easy": (6, 7), "medium": (3, 5), "hard": (1, 2)}
"""Inclusive hit ranges for 8 samples."""
PAPER_MIX: dict[str, int] = {"easy": 3, "medium": 4, "hard": 3}


def bucket_of(
    hits: int, samples: int = 8, ranges: Mapping[str, tuple[int, int]] = PAPER_BUCKET_HITS
) -> str | None:
    """The difficulty bucket for ``hits`` successes out of ``samples`` (None = dropped: 0 or all)."""
    if not 0 <= hits <= samples:
        raise ValueError(f"hits must be between 0 and {samples}, got {hits}")
    if hits in (0, samples):
        return None
    for name, (low, high) in ranges.items():
        if low <= hits <= high:
            return name
    raise ValueError(
        f"{hits}/{samples} hits fall in no bucket of {dict(ranges)}; give ranges for {samples} samples"
    )


def mix_counts(
    available: Mapping[str, int], ratio: Mapping[str, int] = PAPER_MIX, total: int | None = None
) -> dict[str, int]:
    """How many instances to take per bucket: the largest mix with exactly this ratio (capped at ``total``).

    With ratio 3:4:3 and 30/10/30 available, medium limits the mix to 7.5 units of 1:
    floor(10 / 4) = 2 units -> 6 easy, 8 medium, 6 hard. ``total`` caps the size (the paper uses
    ~500 per dataset); it is honoured in whole units of the ratio.
    """
    if any(part < 0 for part in ratio.values()) or not any(ratio.values()):
        raise ValueError(f"mix ratio parts must be >= 0 and not all 0, got {dict(ratio)}")
    units = min(available.get(name, 0) // part for name, part in ratio.items() if part)
    if total is not None:
        units = min(units, total // sum(ratio.values()))
    return {name: units * part for name, part in ratio.items()}


def parse_mix(text: str) -> dict[str, int]:
    """``"3:4:3"`` -> {"easy": 3, "medium": 4, "hard": 3}."""
    parts = text.split(":")
    if len(parts) != len(BUCKETS) or not all(part.strip().isdigit() for part in parts):
        raise ValueError(f"mix must look like E:M:H with whole numbers (e.g. 3:4:3), got {text!r}")
    return dict(zip(BUCKETS, (int(part) for part in parts), strict=True))


def mix_buckets(
    buckets: Mapping[str, Sequence[Any]],
    ratio: Mapping[str, int] = PAPER_MIX,
    total: int | None = None,
    seed: int = 0,
) -> list[Any]:
    """A seeded sample of each bucket in the ratio, shuffled together."""
    counts = mix_counts({name: len(items) for name, items in buckets.items()}, ratio, total)
    rng = random.Random(seed)
    chosen: list[Any] = []
    for name in ratio:
        chosen.extend(rng.sample(list(buckets.get(name, [])), counts[name]))
    rng.shuffle(chosen)
    return chosen


@dataclass(slots=True)
class SampledInstance:
    """One task answered ``samples`` times by the student."""

    task_id: str
    prompt: list[dict[str, str]]
    ground_truth: str
    candidates: list[str]
    scenario: str = ""
    hits: int = 0
    samples: int = 0
    bucket: str | None = None
    format_ok: int = 0
    """Samples whose chain passed the format reward."""
    unparsed: int = 0
    """Samples whose <recommend> yielded no id (ranked by the repair fallback, counted)."""
    repaired: int = 0
    """Samples whose ranking needed any repair."""
    tool_calls: int = 0
    tool_errors: int = 0
    forced: int = 0
    """Samples budget forcing had to close and send to <recommend>."""
    outcome_rewards: list[float] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "prompt": self.prompt,
            "ground_truth": self.ground_truth,
            "candidates": self.candidates,
            "scenario": self.scenario,
            "hits": self.hits,
            "samples": self.samples,
            "bucket": self.bucket or "dropped",
            "format_ok": self.format_ok,
            "unparsed": self.unparsed,
            "repaired": self.repaired,
            "tool_calls": self.tool_calls,
            "tool_errors": self.tool_errors,
            "forced": self.forced,
            "outcome_rewards": self.outcome_rewards,
        }


def score_samples(
    instance: SampledInstance,
    completions: Sequence[str],
    success_at: int,
    ablation: str | None = None,
    seed: int = 0,
) -> SampledInstance:
    """Count successes (ground truth in the repaired top-``success_at``) and format/repair stats.

    Ids a sample leaves out are appended in a fresh seeded random order per sample, so an
    unparseable answer counts as a random guess (and is counted in ``unparsed``), never as a
    copy of the presented order repeated across all samples.
    """
    from starrec.distill.chain import parse_chain
    from starrec.distill.rewards import format_reward, ranking_tier
    from starrec.eval.repair import repair_ranking

    rng = random.Random(f"{seed}:{instance.task_id}")
    for text in completions:
        chain = parse_chain(text, instance.candidates)
        fallback = rng.sample(instance.candidates, len(instance.candidates))
        ranking, repair = repair_ranking(chain.ranking, instance.candidates, fallback)
        instance.samples += 1
        instance.hits += int(instance.ground_truth in ranking[:success_at])
        instance.unparsed += int(not chain.ranking)
        instance.repaired += int(repair.needed)
        instance.format_ok += int(format_reward(text, ablation) > 0)
        instance.outcome_rewards.append(ranking_tier(chain.ranking, instance.ground_truth))
    return instance


@dataclass
class RLDataConfig:
    """Knobs of ``starrec distill rl-data`` (paper defaults)."""

    samples: int = field(default=8, metadata={"help": "Completions sampled per instance. Paper: 8."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature. Paper: 0.7."})
    success_at: int = field(
        default=1,
        metadata={"help": "A sample succeeds when the ground truth is in its top-k (paper: top-1)."},
    )
    total: int | None = field(default=None, metadata={"help": "Cap on mixed instances (paper: ~500)."})
    mix: str = field(
        default="3:4:3", metadata={"help": "easy:medium:hard ratio of the mixed dataset (paper: 3:4:3)."}
    )
    max_prompt_length: int = field(default=6000, metadata={"help": "Prompt tokens kept (the end)."})
    max_completion_length: int = field(
        default=8192, metadata={"help": "Generated tokens per sample (inserted tool responses not counted)."}
    )
    recommend_top: int = field(
        default=DEFAULT_RECOMMEND_TOP,
        metadata={"help": "R: the prompt asks for at most R ids (match the SFT student's)."},
    )
    recommend_reserve: int | None = field(
        default=None,
        metadata={"help": "Generated tokens kept for a forced ranking (None: enough for recommend_top ids)."},
    )
    max_tool_calls: int = field(default=8, metadata={"help": "Tool calls executed per sample."})
    tool_k: int = field(default=10, metadata={"help": "Neighbours per tool call."})
    ablation: str | None = field(default=None, metadata={"help": "Prompt/format variant (no_tools, ...)."})
    limit: int | None = field(default=None, metadata={"help": "Only the first N instances (smoke runs)."})
    seed: int = field(default=0, metadata={"help": "Seed for sampling and the mix."})


def rl_instances(
    trajectories: Sequence[Any],
    ablation: str | None = None,
    recommend_top: int | None = DEFAULT_RECOMMEND_TOP,
) -> list[SampledInstance]:
    """One instance per task with a ground truth (its first recorded run supplies the prompt, which
    asks for at most ``recommend_top`` ids as the SFT chains have them)."""
    from starrec.distill.student_prompt import trajectory_messages

    seen: dict[str, SampledInstance] = {}
    for trajectory in trajectories:
        if trajectory.task_id in seen or trajectory.ground_truth is None:
            continue
        seen[trajectory.task_id] = SampledInstance(
            task_id=trajectory.task_id,
            prompt=trajectory_messages(trajectory, ablation, recommend_top=recommend_top),
            ground_truth=trajectory.ground_truth,
            candidates=list(trajectory.candidates),
            scenario=trajectory.scenario,
        )
    return list(seen.values())


@dataclass(frozen=True, slots=True)
class SampledChain:
    """One sampled chain, as the RL data needs it: the text to score and what it cost."""

    text: str
    generated: int
    """Generated tokens (inserted tool responses excluded)."""
    forced: bool = False
    """Budget forcing closed the chain and opened ``<recommend>``."""
    tool_calls: int = 0
    tool_errors: int = 0
    """Tool calls that failed validation or execution, or were refused past the limit."""
    error: str | None = None
    """Why the generation failed; an instance with a failed chain is not kept (sampled again on resume)."""


ChainSampler = Callable[["SampledInstance", int, int], list[SampledChain]]
"""``(instance, samples, seed) -> samples chains``, reproducible for a seed.

The default samples the student in-process with transformers (:func:`transformers_sampler`); the
pipeline passes one that samples a vLLM server of the same student (``starrec.serving.rl_sampling``),
which keeps the shared prompt in its prefix cache and batches chains continuously.
"""


def transformers_sampler(model: Any, tokenizer: Any, config: RLDataConfig, executor: Any) -> ChainSampler:
    """Sample ``model`` in-process: one batched rollout of the instance's prompt per sample."""
    import torch

    from starrec.distill.chain import recommend_reserve
    from starrec.distill.rollout import chat_prompt_ids, generate_rollouts

    reserve = config.recommend_reserve
    if reserve is None:
        reserve = recommend_reserve(config.recommend_top)

    def sample(instance: SampledInstance, samples: int, seed: int) -> list[SampledChain]:
        torch.manual_seed(seed)
        prompt_ids = chat_prompt_ids(tokenizer, instance.prompt, config.max_prompt_length)
        rollouts = generate_rollouts(
            model,
            tokenizer,
            [prompt_ids] * samples,
            executor,
            max_completion_length=config.max_completion_length,
            temperature=config.temperature,
            max_tool_calls=config.max_tool_calls,
            recommend_reserve=reserve,
        )
        return [
            SampledChain(
                text=rollout.text,
                generated=rollout.generated,
                forced=bool(rollout.forced),
                tool_calls=rollout.tools.calls,
                tool_errors=rollout.tools.errors + rollout.tools.refused,
            )
            for rollout in rollouts
        ]

    return sample


def instance_seed(config: RLDataConfig, index: int) -> int:
    """The seed of the ``index``-th instance: its own, so a resumed run samples what an unbroken one does."""
    return config.seed * 1_000_003 + index


def build_rl_data(
    model_dir: Any,
    instances: Sequence[SampledInstance],
    out: Any,
    config: RLDataConfig,
    evidence: Any | None,
    progress: bool = True,
    evidence_dirs: tuple[Any, Any] = (None, None),
    sampler: ChainSampler | None = None,
    sampler_name: str = "transformers",
    concurrency: int = 1,
) -> dict[str, Any]:
    """Sample, bucket and mix; save the mixed HF dataset to ``out`` (all sampled rows to ``out/all``).

    ``evidence_dirs`` (data folder, tasks folder) are recorded so GRPO can open the same evidence.
    ``sampler`` (default: the student in ``model_dir``, in-process) draws the chains; with
    ``concurrency`` > 1 that many instances are sampled at once (a served sampler).
    """
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor, as_completed
    from pathlib import Path

    from rich.progress import Progress

    from starrec.distill.chain import check_reserve, recommend_reserve
    from starrec.distill.training import model_fingerprint, peak_rss_mb, write_json

    out = Path(out)
    reserve = config.recommend_reserve
    if reserve is None:
        reserve = recommend_reserve(config.recommend_top)
    check_reserve(reserve, config.max_completion_length, "max_completion_length")
    chosen = list(instances)[: config.limit] if config.limit else list(instances)
    if not chosen:
        raise ValueError("no instance to sample: the runs hold no task with a ground truth")
    config_record = {key: getattr(config, key) for key in RLDataConfig.__dataclass_fields__}
    evidence_record = {"data": _path_text(evidence_dirs[0]), "tasks": _path_text(evidence_dirs[1])}
    # What the samples depend on, not where things lie: a moved work folder still resumes.
    partial = SamplesCheckpoint(
        out / SAMPLES_PARTIAL,
        {
            "model_sha256": model_fingerprint(Path(model_dir)),
            "sampler": sampler_name,
            "config": config_record,
        },
    )
    done = partial.load()
    if sampler is None:
        from starrec.distill.rollout import ToolExecutor
        from starrec.distill.training import load_student

        model, tokenizer = load_student(Path(model_dir))
        executor = ToolExecutor(evidence if config.ablation != "no_tools" else None, config.tool_k)
        sampler = transformers_sampler(model, tokenizer, config, executor)
    started = time.perf_counter()
    generated_tokens = 0
    lock = threading.Lock()
    todo: list[tuple[int, SampledInstance]] = []
    for index, instance in enumerate(chosen):
        if instance.task_id in done:
            restore_instance(instance, done[instance.task_id], partial.path)
        else:
            todo.append((index, instance))

    failed: list[tuple[int, str]] = []
    """(index, line) per instance with a failed chain: not kept, so a re-run samples it again."""
    give_up = max(3, len(todo) // 10)
    stopped: list[bool] = []
    """Set once, by the failure that reached ``give_up``: later instances are not sampled."""

    def sample_one(item: tuple[int, SampledInstance]) -> None:
        nonlocal generated_tokens
        if stopped:  # a queued instance that a worker picks up after the stop is not sampled
            return
        index, instance = item
        chains = sampler(instance, config.samples, instance_seed(config, index))
        errors = [chain.error for chain in chains if chain.error is not None]
        if errors:
            with lock:
                failed.append(
                    (index, f"{instance.task_id}: {len(errors)}/{len(chains)} chains failed ({errors[0]})")
                )
                if len(failed) == give_up:
                    stopped.append(True)
            return
        score_samples(
            instance, [chain.text for chain in chains], config.success_at, config.ablation, config.seed
        )
        instance.forced = sum(chain.forced for chain in chains)
        instance.tool_calls = sum(chain.tool_calls for chain in chains)
        instance.tool_errors = sum(chain.tool_errors for chain in chains)
        instance.bucket = bucket_of(instance.hits, config.samples)
        with lock:
            generated_tokens += sum(chain.generated for chain in chains)
            partial.append(instance.row())
            bar.advance(task)

    with Progress(disable=not progress) as bar:
        task = bar.add_task("Sampling the student", total=len(chosen), completed=len(chosen) - len(todo))
        if concurrency > 1:
            pool = ThreadPoolExecutor(max_workers=concurrency)
            try:
                for future in as_completed([pool.submit(sample_one, item) for item in todo]):
                    future.result()
                    if stopped:
                        break
            finally:  # a failure or a stop: drop the queued instances instead of sampling them all
                pool.shutdown(wait=True, cancel_futures=True)
        else:
            for item in todo:
                sample_one(item)
                if stopped:
                    break
    first = min(failed)[1] if failed else ""
    if stopped:
        raise RuntimeError(
            f"stopped once {give_up} instances had failed requests (max(3, 10%) of {len(todo)}; "
            f"{len(failed)} in all, first: {first}): check the sampling server; the instances sampled "
            f"are in {partial.path}, so running again resumes"
        )
    if failed:
        raise RuntimeError(
            f"{len(failed)} of {len(todo)} instances had failed requests and were not kept (first: "
            f"{first}); the others are in {partial.path}, so running again samples only these"
        )
    seconds = time.perf_counter() - started
    buckets = {name: [i for i in chosen if i.bucket == name] for name in BUCKETS}
    mixed = mix_buckets(buckets, parse_mix(config.mix), config.total, config.seed)
    counts = {name: len(items) for name, items in buckets.items()}
    counts["dropped"] = sum(1 for instance in chosen if instance.bucket is None)
    if not mixed:
        raise ValueError(
            f"the {len(chosen)} sampled instances give no {config.mix} mix (bucket sizes {counts}); sample "
            "more tasks, or use --success-at K to count a hit in the top-K when the student is still weak"
        )
    from datasets import Dataset

    out.mkdir(parents=True, exist_ok=True)
    Dataset.from_list([instance.row() for instance in mixed]).save_to_disk(str(out / "mixed"))
    Dataset.from_list([instance.row() for instance in chosen]).save_to_disk(str(out / "all"))
    summary = {
        "model": str(model_dir),
        "sampler": sampler_name,
        "config": config_record,
        "resumed_instances": len(done),
        "evidence": evidence_record,
        "instances": len(chosen),
        "buckets": counts,
        "mixed": {name: sum(1 for i in mixed if i.bucket == name) for name in BUCKETS},
        "samples": sum(instance.samples for instance in chosen),
        "unparsed_samples": sum(instance.unparsed for instance in chosen),
        "repaired_samples": sum(instance.repaired for instance in chosen),
        "format_ok_samples": sum(instance.format_ok for instance in chosen),
        "tool_calls": sum(instance.tool_calls for instance in chosen),
        "tool_errors": sum(instance.tool_errors for instance in chosen),
        "forced_samples": sum(instance.forced for instance in chosen),
        "seconds": round(seconds, 2),
        "generated_tokens_per_s": round(generated_tokens / seconds, 1) if seconds else 0.0,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    write_json(out / "rl_data.json", summary)
    partial.path.unlink(missing_ok=True)
    return summary


SAMPLES_PARTIAL = "samples.partial.jsonl"
"""Under the output folder while sampling: a header line, then one sampled instance per line."""


class SamplesCheckpoint:
    """The instances sampled so far, so a stopped ``rl-data`` resumes at the first unsampled one.

    The header records the model and config; sampling again with another one is an error naming
    the file (mixing two students' samples in one bucket rule would be silent nonsense).
    """

    def __init__(self, path: Any, header: dict[str, Any]) -> None:
        from pathlib import Path

        self.path = Path(path)
        self.header = json.loads(json.dumps(header, default=str))

    def load(self) -> dict[str, dict[str, Any]]:
        if not self.path.is_file():
            return {}
        lines = [line for line in self.path.read_text().splitlines() if line.strip()]
        try:
            header, rows = json.loads(lines[0]), []
            for line in lines[1:]:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by the stop: sampled again
                    break
        except (IndexError, json.JSONDecodeError):
            header, rows = None, []
        if header != self.header:
            raise ValueError(
                f"{self.path} holds samples of another model or config; delete it to sample from the "
                "start, or use another output folder"
            )
        if len(rows) != len(lines) - 1:  # drop the cut line, so the next append starts a fresh line
            self.path.write_text("".join(json.dumps(item) + "\n" for item in (header, *rows)))
        return {row["task_id"]: row for row in rows}

    def append(self, row: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.is_file():
            self.path.write_text(json.dumps(self.header) + "\n")
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


SAMPLED_COUNTS: tuple[str, ...] = (
    "hits",
    "samples",
    "format_ok",
    "unparsed",
    "repaired",
    "tool_calls",
    "tool_errors",
    "forced",
)
"""The per-instance counts a checkpointed instance carries (besides its outcome rewards and bucket)."""


RESTORE_MATCH: tuple[str, ...] = ("prompt", "candidates", "ground_truth")
"""What a checkpointed row must share with the instance it is restored into."""


def restore_instance(instance: SampledInstance, row: dict[str, Any], source: Any = "the checkpoint") -> None:
    """Put a checkpointed instance's sampled counts back.

    The row must have been sampled from the same prompt, candidates and ground truth: the runs
    behind the same task id can change between two invocations (a re-taught task), and its old
    samples would then score another question.
    """
    row_values = {name: row.get(name) for name in RESTORE_MATCH}
    differs = [name for name in RESTORE_MATCH if row_values[name] != getattr(instance, name)]
    if differs:
        raise ValueError(
            f"{source}: task {instance.task_id} was sampled with a different {', '.join(differs)} than the "
            "runs give now; delete the file to sample from the start"
        )
    for name in SAMPLED_COUNTS:
        setattr(instance, name, int(row.get(name, 0)))
    instance.outcome_rewards = [float(value) for value in row["outcome_rewards"]]
    instance.bucket = None if row["bucket"] == "dropped" else row["bucket"]


def _path_text(path: Any) -> str | None:
    from pathlib import Path

    return str(Path(path).resolve()) if path is not None else None


def load_rl_data(path: Any) -> tuple[Any, dict[str, Any]]:
    """(mixed dataset, summary) written by :func:`build_rl_data`."""
    import json
    from pathlib import Path

    from datasets import load_from_disk

    path = Path(path)
    info = path / "rl_data.json"
    if not info.is_file():
        raise FileNotFoundError(
            f"{path} is not an RL data folder (no rl_data.json); make one with `starrec distill rl-data`"
        )
    return load_from_disk(str(path / "mixed")), json.loads(info.read_text())
