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
    model = ScriptedGenerator(tokenizer, [CALL, "word " * 200, '["m1"]</recommend>'])
    (rollout,) = generate_rollouts(
        model, tokenizer, [[1]], ToolExecutor(None), max_completion_length=60, recommend_reserve=20
    )
    assert "tools are disabled" in rollout.text
    ranking = len(tokenizer.encode('["m1"]</recommend>', add_special_tokens=False))
    assert rollout.generated == 40 + ranking  # 60 - the reserve of 20, then the ranking
    assert len(rollout.completion_ids) > 60  # the error text and the forced tags are not charged
    assert rollout.forced and parse_chain(rollout.text).ranking == ["m1"]


class LongEvidence:
    """An executor whose every answer is long: inserted text the budget must not charge."""

    def run(self, body: str) -> tuple[str, bool]:
        return "evidence " * 300, True


def test_tool_responses_do_not_count_against_the_generated_budget(tokenizer: Any) -> None:
    eos = tokenizer.eos_token
    model = ScriptedGenerator(
        tokenizer,
        [
            f"<plan>p</plan>\n<historical_analysis>{CALL}",
            '\nok {}</historical_analysis>\n<reflection>ok</reflection>\n<recommend>["m1"]</recommend>' + eos,
        ],
    )
    (rollout,) = generate_rollouts(
        model,
        tokenizer,
        [[1]],
        LongEvidence(),
        max_completion_length=120,
        recommend_reserve=20,  # type: ignore[arg-type]
    )
    assert rollout.finished and not rollout.forced and rollout.tools.calls == 1
    assert rollout.generated < 100 < 300 < len(rollout.completion_ids)
    assert format_reward(rollout.text) == 1.0 and parse_chain(rollout.text).ranking == ["m1"]


def test_budget_forcing_closes_the_open_phase_and_ranks_with_the_reserve(tokenizer: Any) -> None:
    eos = tokenizer.eos_token
    finished = f'<plan>p</plan>\n<reflection>ok</reflection>\n<recommend>["m2"]</recommend>{eos}'
    model = ScriptedGenerator(
        tokenizer,
        [
            finished,  # row 1: done on its own
            "<plan>p</plan>\n<historical_analysis>" + "word " * 200,  # row 2: out of thinking budget
            f'["m3","m1"]</recommend>{eos}',  # row 2's ranking, written with the reserve
        ],
    )
    natural, forced = generate_rollouts(
        model, tokenizer, [[1], [2]], ToolExecutor(None), max_completion_length=100, recommend_reserve=30
    )
    assert not natural.forced and parse_chain(natural.text).ranking == ["m2"]
    assert forced.forced and forced.finished and forced.generated <= 100
    assert model.seen_inputs[-1].endswith("word</historical_analysis>\n<recommend>\n")
    chain = parse_chain(forced.text)
    assert chain.ranking == ["m3", "m1"] and chain.errors == []
    inserted = [t for t, m in zip(forced.completion_ids, forced.env_mask, strict=True) if m == 0]
    assert tokenizer.decode(inserted) == "</historical_analysis>\n<recommend>\n"
    with pytest.raises(ValueError, match="below max_completion_length"):
        generate_rollouts(model, tokenizer, [[1]], ToolExecutor(None), max_completion_length=50)


def test_a_turn_ended_before_recommend_takes_back_its_end_and_is_forced(tokenizer: Any) -> None:
    eos = tokenizer.eos_token
    model = ScriptedGenerator(tokenizer, [f"<plan>p</plan>{eos}", f'["m2"]</recommend>{eos}'])
    (rollout,) = generate_rollouts(model, tokenizer, [[1]], ToolExecutor(None), max_completion_length=200)
    assert rollout.forced and rollout.text == '<plan>p</plan>\n<recommend>\n["m2"]</recommend>'
    assert rollout.completion_ids.count(tokenizer.eos_token_id) == 1  # only the final end of turn


def test_the_k_asked_for_reaches_the_cf_tools_and_sizes_the_response() -> None:
    """Serving and rollouts share this executor: its k is the default, the call's own k wins."""
    evidence = FakeEvidence(build_movie_dataset())
    call = '{"name": "item_cf", "arguments": {"item_id": "m1"}}'
    short, _ = ToolExecutor(evidence, k=3).run(call)
    own, _ = ToolExecutor(evidence, k=3).run('{"name": "item_cf", "arguments": {"item_id": "m1", "k": 1}}')
    full, _ = ToolExecutor(evidence, k=10).run(call)
    assert [k for _, _, k in evidence.calls] == [3, 1, 10]
    assert len(own) < len(short) < len(full)
    assert short.count("(") == 3 and own.count("(") == 1
