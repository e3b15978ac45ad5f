"""GRPO rewards of STAR (docs/distill.md): r = r_fmt + r_out, plain functions testable alone.

``format_reward`` and ``tiered_outcome_reward`` score one completion string; the ``*_func``
wrappers have TRL's reward signature ``(prompts, completions, **columns) -> list[float]`` and
accept both standard (str) and conversational (list of message dicts) completions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from starrec.distill.chain import parse_chain, required_phases

RewardFunc = Callable[..., list[float]]


def completion_text(completion: str | Sequence[dict[str, Any]]) -> str:
    """The assistant text of a completion as TRL passes it (plain text or a list of messages)."""
    if isinstance(completion, str):
        return completion
    parts: list[str] = []
    for message in completion:
        if message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content", "")
        if isinstance(content, list):  # typed content blocks
            content = "".join(block.get("text", "") for block in content if isinstance(block, dict))
        parts.append(str(content))
    return "".join(parts)


def format_reward(completion: str, ablation: str | None = None) -> float:
    """``1.0`` when the required phases (plan, reflection, recommend) are present, non-empty and in
    order, every tool call is ``{"name": item_cf|user_cf, "arguments": {...}}`` and the tags are
    well formed; ``-1.0`` otherwise. Ablations drop the phase they remove from the requirement."""
    chain = parse_chain(completion)
    if chain.errors or any(call.error for call in chain.tool_calls):
        return -1.0
    return 1.0 if chain.has_phases_in_order(required_phases(ablation)) else -1.0


def ranking_tier(ranking: Sequence[str], ground_truth: str) -> float:
    """1 for first place, 2/3 for the top 3, 1/3 for the top 5, else 0."""
    truth = str(ground_truth).strip()
    if truth not in ranking:
        return 0.0
    position = list(ranking).index(truth)
    if position == 0:
        return 1.0
    if position < 3:
        return 2 / 3
    if position < 5:
        return 1 / 3
    return 0.0


def tiered_outcome_reward(
    completion: str, ground_truth: str, candidates: Sequence[str] | None = None
) -> float:
    """Tiered hit reward on the ids in ``<recommend>`` (0.0 when nothing parses). ``candidates``
    lets a non-JSON list still be read (see :func:`starrec.distill.chain.parse_ranking`)."""
    return ranking_tier(parse_chain(completion, candidates).ranking, ground_truth)


def make_format_reward_func(ablation: str | None = None) -> RewardFunc:
    """TRL reward for the format term; named so TRL logs it as ``rewards/format_reward``."""
    required_phases(ablation)  # validate early

    def format_reward_func(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        return [format_reward(completion_text(completion), ablation) for completion in completions]

    format_reward_func.__name__ = "format_reward"
    return format_reward_func


def format_reward_func(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
    """TRL wrapper of :func:`format_reward` for the full method."""
    return [format_reward(completion_text(completion)) for completion in completions]


def outcome_reward_func(
    prompts: list[Any],
    completions: list[Any],
    ground_truth: list[str],
    candidates: list[Sequence[str]] | None = None,
    **kwargs: Any,
) -> list[float]:
    """TRL wrapper of :func:`tiered_outcome_reward`; ``ground_truth`` (and optionally ``candidates``)
    are dataset columns."""
    if len(ground_truth) != len(completions):
        raise ValueError(f"{len(completions)} completions but {len(ground_truth)} ground-truth values")
    shown = candidates if candidates is not None else [None] * len(completions)
    return [
        tiered_outcome_reward(completion_text(completion), truth, options)
        for completion, truth, options in zip(completions, ground_truth, shown, strict=True)
    ]


outcome_reward_func.__name__ = "outcome_reward"


def star_reward_funcs(ablation: str | None = None) -> list[RewardFunc]:
    """The two GRPO reward terms (TRL sums them: r = r_fmt + r_out)."""
    return [make_format_reward_func(ablation), outcome_reward_func]
