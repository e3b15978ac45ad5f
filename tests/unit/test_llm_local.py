"""LocalChatModel plumbing on the ~3M-parameter random Llama (outputs are noise; structure is not)."""

from __future__ import annotations

import asyncio

import pytest
import torch
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel

from starrec.llm import LocalChatModel, StructuredOutputError, llm_capabilities
from starrec.llm.local import load_local_model
from starrec.llm.smollm2 import TINY_LLAMA_SHAPE, tiny_llama_dir


@tool
def item_cf(item_id: str, k: int = 10) -> str:
    """Items co-consumed with ``item_id``."""
    return item_id


class Plan(BaseModel):
    agents: list[str]


@pytest.fixture(scope="module")
def tiny() -> LocalChatModel:
    return LocalChatModel(model="tiny", max_new_tokens=12, dtype="float32")


def test_tiny_llama_folder_is_a_normal_hf_checkpoint() -> None:
    directory = tiny_llama_dir()
    assert (directory / "model.safetensors").is_file() and (directory / "chat_template.jinja").is_file()
    loaded = load_local_model(str(directory), "float32")
    parameters = sum(parameter.numel() for parameter in loaded.model.parameters())
    assert 2.5e6 < parameters < 4e6
    assert loaded.model.config.hidden_size == TINY_LLAMA_SHAPE["hidden_size"]
    assert loaded.tokenizer.eos_token == "<|im_end|>"
    assert tiny_llama_dir() == directory  # cached


def test_prompt_uses_the_chatml_template(tiny: LocalChatModel) -> None:
    prompt = tiny.render_prompt([SystemMessage(content="sys"), HumanMessage(content="hello")])
    assert (
        prompt
        == "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    )


def test_invoke_reports_usage_and_speed(tiny: LocalChatModel) -> None:
    message = tiny.invoke([("system", "sys"), ("user", "hello")])
    assert isinstance(message, AIMessage) and isinstance(message.content, str)
    usage = message.usage_metadata
    expected_prompt = len(
        tiny.loaded().tokenizer(
            tiny.render_prompt([SystemMessage("sys"), HumanMessage("hello")]), add_special_tokens=False
        )["input_ids"]
    )
    assert usage["input_tokens"] == expected_prompt
    assert 1 <= usage["output_tokens"] <= 12
    metadata = message.response_metadata
    assert metadata["finish_reason"] in ("stop", "length") and metadata["tokens_per_second"] > 0


def test_greedy_is_deterministic_and_max_tokens_binds(tiny: LocalChatModel) -> None:
    first = tiny.invoke("same prompt")
    assert tiny.invoke("same prompt").content == first.content
    short = tiny.bind(max_new_tokens=3).invoke("same prompt")
    assert short.usage_metadata["output_tokens"] <= 3


def test_stop_strings_cut_the_answer(tiny: LocalChatModel) -> None:
    full = tiny.bind(max_new_tokens=12).invoke("cut me")
    assert full.content, "the tiny model produced no text to cut"
    stop = full.content[0]
    cut = tiny.bind(max_new_tokens=12).invoke("cut me", stop=[stop])
    assert cut.content == full.content[: full.content.find(stop)]
    assert cut.usage_metadata["output_tokens"] < full.usage_metadata["output_tokens"]
    assert cut.response_metadata["finish_reason"] == "stop"


def test_sampling_path_runs(tiny: LocalChatModel) -> None:
    sampler = LocalChatModel(model="tiny", dtype="float32", max_new_tokens=6, temperature=0.9, seed=1)
    outputs = {sampler.invoke("sample").content for _ in range(3)}
    assert outputs  # sampling ran; with a random model the texts usually differ


def test_threads_are_restored(tiny: LocalChatModel) -> None:
    before = torch.get_num_threads()
    LocalChatModel(model="tiny", dtype="float32", max_new_tokens=2, threads=1).invoke("x")
    assert torch.get_num_threads() == before


def test_bound_tools_are_described_and_tool_messages_rendered(tiny: LocalChatModel) -> None:
    history = [
        HumanMessage(content="rank"),
        AIMessage(content="", tool_calls=[{"name": "item_cf", "args": {"item_id": "7"}, "id": "c1"}]),
        ToolMessage(content="neighbours: 8, 9", tool_call_id="c1"),
    ]
    from starrec.llm.messages import openai_tools

    prompt = tiny.render_prompt(history, openai_tools([item_cf]))
    assert "<tools>" in prompt and '"name": "item_cf"' in prompt
    assert (
        '<|im_start|>assistant\n<tool_call>{"name": "item_cf", "arguments": {"item_id": "7"}}</tool_call>'
        in prompt
    )
    assert "<|im_start|>user\n<tool_response>neighbours: 8, 9</tool_response><|im_end|>" in prompt
    message = tiny.bind_tools([item_cf]).invoke(history)
    assert isinstance(message, AIMessage)


def test_forced_tool_choice_starts_a_call(tiny: LocalChatModel) -> None:
    message = tiny.bind_tools([item_cf], tool_choice="item_cf").invoke("neighbours of 7")
    names = [call["name"] for call in message.tool_calls] + [
        call["name"] or call["args"] for call in message.invalid_tool_calls
    ]
    assert names and "item_cf" in names[0]
    with pytest.raises(ValueError, match="names no bound tool"):
        tiny.bind_tools([item_cf], tool_choice="user_cf").invoke("x")


def test_structured_output_from_noise_fails_after_one_retry_and_is_counted(tiny: LocalChatModel) -> None:
    model = LocalChatModel(model="tiny", dtype="float32", max_new_tokens=8)
    result = model.with_structured_output(Plan, include_raw=True).invoke("plan")
    assert result["raw"].content.startswith("{")  # the answer is forced to open a JSON object
    if result["parsed"] is None:
        assert result["attempts"] == 2 and model.repair_counts["structured_failure"] == 1
        with pytest.raises(StructuredOutputError):
            model.with_structured_output(Plan).invoke("plan")


def test_async_calls_share_the_model_one_at_a_time(tiny: LocalChatModel) -> None:
    async def both() -> list[AIMessage]:
        return await asyncio.gather(tiny.ainvoke("a"), tiny.ainvoke("b"))

    replies = asyncio.run(both())
    assert [reply.content for reply in replies] == [tiny.invoke("a").content, tiny.invoke("b").content]


def test_capabilities(tiny: LocalChatModel) -> None:
    capabilities = llm_capabilities(tiny)
    assert capabilities.supports_tool_calling and capabilities.structured_method == "text"


def test_generation_threads_drop_to_one_when_the_cpus_are_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    from starrec.llm import local

    monkeypatch.setattr(local.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(local.os, "getloadavg", lambda: (0.3, 0.2, 0.1))
    assert local.generation_threads(2) == 2
    monkeypatch.setattr(local.os, "getloadavg", lambda: (5.0, 4.0, 3.0))
    assert local.generation_threads(2) == 1


def test_capabilities_of_foreign_langchain_models_follow_bind_tools() -> None:
    from langchain_core.language_models import GenericFakeChatModel
    from langchain_openai import ChatOpenAI

    fake = llm_capabilities(GenericFakeChatModel(messages=iter([])))  # no bind_tools
    assert not fake.supports_tool_calling and not fake.supports_structured_output
    openai_model = llm_capabilities(ChatOpenAI(model="m", api_key="x", base_url="http://127.0.0.1:9/v1"))
    assert openai_model.supports_tool_calling and openai_model.structured_method == "function_calling"
