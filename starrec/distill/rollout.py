"""Sampling the student with tools executed inline (RL data and GRPO rollouts).

Generation stops at ``</tool_call>``; the call is validated and run against the evidence store,
``<tool_response>…</tool_response>`` is appended (its tokens are marked as environment tokens,
so GRPO puts no loss on them) and generation continues, until end of turn, the token budget, or
the tool-call bound (later calls get an error response and are counted).

The budget (``max_completion_length``) counts only the tokens the policy generates, never inserted
tool responses. The serving loop's budget forcing is repeated here: a rollout that has not reached
``<recommend>`` when only ``recommend_reserve`` tokens remain (or that ends its turn first) gets its
open phases closed and ``<recommend>`` appended (inserted, so masked), then writes only the
ranking with the reserve. Rollouts so end in a ranking, and ``Rollout.forced`` counts the rescues.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from starrec.contract.tool_names import USER_VALUES
from starrec.distill.chain import (
    DEFAULT_RECOMMEND_TOP,
    RECOMMEND,
    check_reserve,
    forced_ending,
    open_tags,
    parse_tool_call_body,
    reached_recommend,
    recommend_reserve,
    tool_response_block,
)
from starrec.llm.toolcall_syntax import TOOL_CALL_CLOSE
from starrec.tools.base import EvidenceSource


@dataclass(slots=True)
class ToolStats:
    calls: int = 0
    errors: int = 0
    refused: int = 0
    """Calls beyond the per-rollout bound (answered with an error, counted apart)."""


class ToolExecutor:
    """Runs one ``<tool_call>`` body against the CF tools; always returns the text to insert."""

    def __init__(self, evidence: EvidenceSource | None, k: int = 10) -> None:
        self.evidence = evidence
        self.k = k
        self._tools: dict[str, Any] = {}
        if evidence is not None:
            from starrec.tools.base import ValuesSource
            from starrec.tools.langchain_tools import make_cf_tools, make_values_tool

            self._tools = {tool.name: tool for tool in make_cf_tools(evidence)}
            if isinstance(evidence, ValuesSource):
                self._tools[USER_VALUES] = make_values_tool(evidence)

    def run(self, body: str) -> tuple[str, bool]:
        """(response text, ok). Invalid calls get an error message the model can read."""
        call = parse_tool_call_body(body)
        if call.error is not None:
            return f"error: {call.error}", False
        if not self._tools:
            return "error: tools are disabled in this setting", False
        if call.name not in self._tools:
            return f"error: tool {call.name} is not available here", False
        # candidate_cf shows every candidate unless asked otherwise, as the teacher's tool does.
        arguments = {"k": self.k, **call.arguments} if call.name in ("item_cf", "user_cf") else call.arguments
        try:
            return str(self._tools[call.name].invoke(arguments)), True
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in error.errors()
            )
            return f"error: bad arguments for {call.name} ({problems})", False


@dataclass(slots=True)
class Rollout:
    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)
    """1 for tokens the model generated, 0 for inserted text (tool responses, forced closing tags)."""
    text: str = ""
    tools: ToolStats = field(default_factory=ToolStats)
    finished: bool = False
    """Nothing more will be generated (end of turn, or a stop without one)."""
    forced: bool = False
    """Budget forcing closed the chain and opened ``<recommend>`` (the model had not reached it)."""

    @property
    def generated(self) -> int:
        """Tokens the policy generated (what the budget counts)."""
        return sum(self.env_mask)


def _last_tool_call_body(text: str) -> str:
    start = text.rfind("<tool_call>")
    end = text.rfind(TOOL_CALL_CLOSE)
    return text[start + len("<tool_call>") : end] if 0 <= start < end else ""


def _cut_after_stop(tokenizer: Any, ids: list[int], stop: str) -> list[int] | None:
    """The shortest prefix of ``ids`` whose text contains ``stop`` (None when it never appears)."""
    if stop not in tokenizer.decode(ids, skip_special_tokens=False):
        return None
    for end in range(1, len(ids) + 1):
        if stop in tokenizer.decode(ids[:end], skip_special_tokens=False):
            return ids[:end]
    return ids


def generate_rollouts(
    model: Any,
    tokenizer: Any,
    prompt_ids: Sequence[Sequence[int]],
    executor: ToolExecutor,
    *,
    max_completion_length: int,
    temperature: float = 0.7,
    top_p: float = 1.0,
    max_tool_calls: int = 8,
    recommend_reserve: int | None = None,
) -> list[Rollout]:
    """One rollout per prompt (repeat a prompt to sample it several times), batched.

    ``max_completion_length`` bounds the *generated* tokens of each rollout; ``recommend_reserve``
    of them (default: enough for 10 ids) are kept for the ranking that budget forcing asks for.
    """
    reserve = default_reserve() if recommend_reserve is None else recommend_reserve
    check_reserve(reserve, max_completion_length, "max_completion_length")
    eos_ids = _eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    rollouts = [Rollout(prompt_ids=list(ids)) for ids in prompt_ids]
    sampler = _Sampler(model, tokenizer, eos_ids, pad_id, temperature, top_p)
    was_training = model.training
    model.eval()
    try:
        thinking = max_completion_length - reserve
        while active := [r for r in rollouts if not r.finished and r.generated < thinking]:
            for rollout, row in zip(
                active, sampler.generate(active, thinking, [TOOL_CALL_CLOSE]), strict=True
            ):
                _absorb(rollout, row, tokenizer, executor, eos_ids, thinking, max_tool_calls)
        if ranking := [r for r in rollouts if _open_for_ranking(r, tokenizer, eos_ids)]:
            for rollout, row in zip(
                ranking, sampler.generate(ranking, max_completion_length, None), strict=True
            ):
                _absorb_ranking(rollout, row, eos_ids, max_completion_length)
    finally:
        model.train(was_training)
    for rollout in rollouts:
        rollout.text = tokenizer.decode(rollout.completion_ids, skip_special_tokens=True)
    return rollouts


def default_reserve() -> int:
    """The reserve when none is given: the ranking of the default ``R`` ids."""
    return recommend_reserve(DEFAULT_RECOMMEND_TOP)


class _Sampler:
    """Batched, left-padded ``model.generate`` over rollouts, each up to its own generated budget."""

    def __init__(
        self, model: Any, tokenizer: Any, eos_ids: list[int], pad_id: int, temperature: float, top_p: float
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.eos_ids, self.pad_id = eos_ids, pad_id
        self.temperature, self.top_p = temperature, top_p
        self.device = next(model.parameters()).device

    def generate(self, rollouts: list[Rollout], limit: int, stop: list[str] | None) -> list[list[int]]:
        """The new tokens of each rollout (rows may run past a rollout's own budget: callers cut)."""
        import torch

        inputs = [r.prompt_ids + r.completion_ids for r in rollouts]
        width = max(len(ids) for ids in inputs)
        input_ids = torch.tensor(
            [[self.pad_id] * (width - len(ids)) + ids for ids in inputs], device=self.device
        )
        attention = torch.tensor(
            [[0] * (width - len(ids)) + [1] * len(ids) for ids in inputs], device=self.device
        )
        stopping: dict[str, Any] = {"stop_strings": stop, "tokenizer": self.tokenizer} if stop else {}
        with torch.no_grad():
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention,
                max_new_tokens=max(limit - r.generated for r in rollouts),
                do_sample=self.temperature > 0,
                temperature=self.temperature if self.temperature > 0 else None,
                top_p=self.top_p,
                top_k=0,
                pad_token_id=self.pad_id,
                eos_token_id=self.eos_ids,
                **stopping,
            )
        return output[:, width:].tolist()


def _open_for_ranking(rollout: Rollout, tokenizer: Any, eos_ids: list[int]) -> bool:
    """Prepare budget forcing; True when the rollout still has to write (or finish) its ranking.

    A closed ``<recommend>`` needs nothing. Otherwise a trailing end of turn is taken back; a
    ``<recommend>`` the model opened is continued (inner tags closed), else the open phases are
    closed and ``<recommend>`` is appended, all as inserted (masked) tokens.
    """
    text = tokenizer.decode(rollout.completion_ids, skip_special_tokens=False)
    tags = open_tags(text)
    if tags[:1] != [RECOMMEND] and reached_recommend(text):
        return False
    while rollout.completion_ids and rollout.completion_ids[-1] in eos_ids:
        rollout.completion_ids.pop()
        rollout.env_mask.pop()
    if tags[:1] == [RECOMMEND]:
        inserted = "".join(f"</{tag}>" for tag in reversed(tags[1:]))
    else:
        inserted = forced_ending(tokenizer.decode(rollout.completion_ids, skip_special_tokens=False))
        rollout.forced = True
    if inserted:
        _append(rollout, tokenizer.encode(inserted, add_special_tokens=False), 0)
    rollout.finished = False
    return True


def _absorb_ranking(
    rollout: Rollout, new_ids: list[int], eos_ids: list[int], max_completion_length: int
) -> None:
    """The ranking the model wrote with the reserve: up to its end of turn or the budget."""
    eos_at = next((index for index, token in enumerate(new_ids) if token in eos_ids), None)
    generated = new_ids[: eos_at + 1] if eos_at is not None else new_ids
    _append(rollout, generated[: max_completion_length - rollout.generated], 1)
    rollout.finished = True


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    configured = model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    ids = [int(item) for item in ids if item is not None]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(int(tokenizer.eos_token_id))
    if not ids:
        raise ValueError(
            "neither the model's generation config nor the tokenizer defines an end-of-turn token"
        )
    return ids


def _absorb(
    rollout: Rollout,
    new_ids: list[int],
    tokenizer: Any,
    executor: ToolExecutor,
    eos_ids: list[int],
    limit: int,
    max_tool_calls: int,
) -> None:
    """Add one generation round to a rollout (at most ``limit`` generated tokens in all); execute
    the tool call it stopped at, if any. Inserted responses do not count against ``limit``."""
    room = limit - rollout.generated
    eos_at = next((index for index, token in enumerate(new_ids) if token in eos_ids), None)
    generated = new_ids[: eos_at + 1] if eos_at is not None else new_ids
    stopped = _cut_after_stop(tokenizer, generated, TOOL_CALL_CLOSE)
    if stopped is not None and (eos_at is None or len(stopped) <= eos_at):
        generated = stopped[:room]
        _append(rollout, generated, 1)
        if len(generated) < len(stopped):
            return
        text = tokenizer.decode(rollout.completion_ids, skip_special_tokens=False)
        body = _last_tool_call_body(text)
        if rollout.tools.calls + rollout.tools.refused >= max_tool_calls:
            rollout.tools.refused += 1
            response = f"error: at most {max_tool_calls} tool calls per answer; write <recommend> now"
        else:
            rollout.tools.calls += 1
            response, ok = executor.run(body)
            rollout.tools.errors += 0 if ok else 1
        _append(rollout, tokenizer.encode(tool_response_block(response), add_special_tokens=False), 0)
        return
    generated = generated[:room]
    _append(rollout, generated, 1)
    rollout.finished = bool(generated) and generated[-1] in eos_ids
    if not rollout.finished and rollout.generated < limit:
        rollout.finished = True  # stopped without eos or stop string (e.g. pad): nothing more will come


def _append(rollout: Rollout, ids: list[int], mask: int) -> None:
    rollout.completion_ids.extend(ids)
    rollout.env_mask.extend([mask] * len(ids))


def chat_prompt_ids(tokenizer: Any, messages: list[dict[str, str]], max_prompt_length: int) -> list[int]:
    """Chat-templated prompt ids ending with the assistant header; long prompts keep their end."""
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)[-max_prompt_length:]


__all__ = ["Rollout", "ToolExecutor", "ToolStats", "chat_prompt_ids", "default_reserve", "generate_rollouts"]
