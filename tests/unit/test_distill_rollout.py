"""Rollouts with inline tool execution: the response is inserted, masked, bounded and counted."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from mars_fixtures import FakeEvidence, build_movie_dataset

from starrec.distill.chain import parse_chain
from starrec.distill.rewards import format_reward
from starrec.distill.rollout import ToolExecutor, generate_rollouts

CANDIDATES = [f"m{index}" for index in range(1, 21)]
CALL = '<tool_call>{"name": "item_cf", "arguments": {"item_id": "m1"}}</tool_call>'


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    from starrec.llm.smollm2 import tiny_llama_dir

    return AutoTokenizer.from_pretrained(tiny_llama_dir())  # the SmolLM2 tokenizer, saved once


class ScriptedGenerator(torch.nn.Module):
    """Stands in for a causal LM: each generate() call emits the next scripted text (then pads)."""

    def __init__(self, tokenizer: Any, texts: list[str]) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.tokenizer = tokenizer
        self.texts = list(texts)
        self.generation_config = type("GenerationConfig", (), {"eos_token_id": tokenizer.eos_token_id})()
        self.seen_inputs: list[str] = []

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, **kwargs: Any) -> torch.Tensor:
        rows = []
        for row in input_ids.tolist():
            self.seen_inputs.append(self.tokenizer.decode(row, skip_special_tokens=False))
            ids = self.tokenizer.encode(self.texts.pop(0), add_special_tokens=False)[:max_new_tokens]
            rows.append(row + ids)
        width = max(len(row) for row in rows)
        pad = self.tokenizer.pad_token_id
        return torch.tensor([row + [pad] * (width - len(row)) for row in rows])


def test_tool_call_is_executed_inserted_and_masked(tokenizer: Any) -> None:
    eos = tokenizer.eos_token
    ranking = json.dumps(CANDIDATES)
    model = ScriptedGenerator(
        tokenizer,
        [
            f"<plan>p</plan>\n<historical_analysis>{CALL} and text the model would hallucinate",
            "\nused it {}</historical_analysis>\n<reflection>ok</reflection>\n"
            f"<recommend>{ranking}</recommend>{eos}",
        ],
    )
    evidence = FakeEvidence(build_movie_dataset())
    prompt = tokenizer.encode("prompt", add_special_tokens=False)
    (rollout,) = generate_rollouts(
        model, tokenizer, [prompt], ToolExecutor(evidence), max_completion_length=4096
    )
    assert evidence.calls == [("item_cf", "m1", 10)]
    assert rollout.finished and rollout.tools.calls == 1 and rollout.tools.errors == 0
    assert "hallucinate" not in rollout.text  # generation was cut at </tool_call>
    assert "<tool_response>item_cf for m1:" in rollout.text
    # The second round saw the inserted evidence; the inserted tokens are masked out of the loss.
    assert "<tool_response>item_cf for m1:" in model.seen_inputs[1]
    inserted = [t for t, m in zip(rollout.completion_ids, rollout.env_mask, strict=True) if m == 0]
    assert tokenizer.decode(inserted).strip().startswith("<tool_response>item_cf for m1:")
    assert tokenizer.decode(inserted).strip().endswith("</tool_response>")
    chain = parse_chain(rollout.text)
    assert chain.errors == [] and chain.ranking == CANDIDATES and format_reward(rollout.text) == 1.0
    assert chain.tool_calls[0].response is not None and chain.tool_calls[0].response.startswith(
        "item_cf for m1"
    )


def test_tool_call_bound_and_invalid_calls_are_answered_with_errors(tokenizer: Any) -> None:
    bad = '<tool_call>{"name": "item_cf", "arguments": {"user_id": "u1"}}</tool_call>'
    model = ScriptedGenerator(tokenizer, [CALL, bad, CALL, f"<recommend>[]</recommend>{tokenizer.eos_token}"])
    evidence = FakeEvidence(build_movie_dataset())
    (rollout,) = generate_rollouts(
        model, tokenizer, [[1, 2, 3]], ToolExecutor(evidence), max_completion_length=4096, max_tool_calls=2
    )
    assert (rollout.tools.calls, rollout.tools.errors, rollout.tools.refused) == (2, 1, 1)
    assert len(evidence.calls) == 1
    assert "bad arguments for item_cf" in rollout.text
    assert "at most 2 tool calls" in rollout.text


def test_disabled_tools_and_token_budget(tokenizer: Any) -> None:
    model = ScriptedGenerator(tokenizer, [CALL, "word " * 200])
    (rollout,) = generate_rollouts(model, tokenizer, [[1]], ToolExecutor(None), max_completion_length=60)
    assert "tools are disabled" in rollout.text
    assert len(rollout.completion_ids) == 60 and not rollout.finished
