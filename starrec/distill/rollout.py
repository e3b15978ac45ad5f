"""Sampling the student with tools executed inline (RL data and GRPO rollouts).

Generation stops at ``</tool_call>``; the call is validated and run against the evidence store,
``<tool_response>…</tool_response>`` is appended (its tokens are marked as environment tokens,
so GRPO puts no loss on them) and generation continues, until end of turn, the token budget, or
the tool-call bound (later calls get an error response and are counted).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from starrec.distill.chain import parse_tool_call_body, tool_response_block
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
            from starrec.tools.langchain_tools import make_cf_tools

            self._tools = {tool.name: tool for tool in make_cf_tools(evidence)}

    def run(self, body: str) -> tuple[str, bool]:
        """(response text, ok). Invalid calls get an error message the model can read."""
        call = parse_tool_call_body(body)
        if call.error is not None:
            return f"error: {call.error}", False
        if not self._tools:
            return "error: tools are disabled in this setting", False
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
    """1 for tokens the model generated, 0 for inserted tool responses."""
    text: str = ""
    tools: ToolStats = field(default_factory=ToolStats)
    finished: bool = False
    """Ended with the end-of-turn token (False: cut by the token budget)."""


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
) -> list[Rollout]:
    """One rollout per prompt (repeat a prompt to sample it several times), batched."""
    import torch

    eos_ids = _eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    rollouts = [Rollout(prompt_ids=list(ids)) for ids in prompt_ids]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        while active := [
            r for r in rollouts if not r.finished and len(r.completion_ids) < max_completion_length
        ]:
            inputs = [r.prompt_ids + r.completion_ids for r in active]
            width = max(len(ids) for ids in inputs)
            input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in inputs], device=device)
            attention = torch.tensor(
                [[0] * (width - len(ids)) + [1] * len(ids) for ids in inputs], device=device
            )
            budget = max(max_completion_length - len(r.completion_ids) for r in active)
            with torch.no_grad():
                output = model.generate(
                    input_ids=input_ids,
                    attention_mask=attention,
                    max_new_tokens=budget,
                    do_sample=temperature > 0,
                    temperature=temperature if temperature > 0 else None,
                    top_p=top_p,
                    top_k=0,
                    stop_strings=[TOOL_CALL_CLOSE],
                    tokenizer=tokenizer,
                    pad_token_id=pad_id,
                    eos_token_id=eos_ids,
                )
            for rollout, row in zip(active, output[:, width:].tolist(), strict=True):
                _absorb(rollout, row, tokenizer, executor, eos_ids, max_completion_length, max_tool_calls)
    finally:
        model.train(was_training)
    for rollout in rollouts:
        rollout.text = tokenizer.decode(rollout.completion_ids, skip_special_tokens=True)
    return rollouts


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
    max_completion_length: int,
    max_tool_calls: int,
) -> None:
    """Add one generation round to a rollout; execute the tool call it stopped at, if any."""
    room = max_completion_length - len(rollout.completion_ids)
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
        inserted = tokenizer.encode(tool_response_block(response), add_special_tokens=False)
        _append(rollout, inserted[: max_completion_length - len(rollout.completion_ids)], 0)
        return
    generated = generated[:room]
    _append(rollout, generated, 1)
    rollout.finished = bool(generated) and generated[-1] in eos_ids
    if not rollout.finished and len(rollout.completion_ids) < max_completion_length:
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


__all__ = ["Rollout", "ToolExecutor", "ToolStats", "chat_prompt_ids", "generate_rollouts"]
