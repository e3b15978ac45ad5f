"""SFT data: conversational rows, loss masks (prompt and tool responses), and the config layers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from distill_fixtures import make_trajectory

from starrec.distill.config import StarGRPOConfig, StarSFTConfig
from starrec.distill.sft import fitting_examples, sft_rows, tokenize_row


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    from starrec.llm.smollm2 import tiny_llama_dir

    return AutoTokenizer.from_pretrained(tiny_llama_dir())


def test_rows_are_conversational_prompt_completion() -> None:
    (row,) = sft_rows([make_trajectory()], ablation=None)
    assert [m["role"] for m in row["prompt"]] == ["system", "user"]
    assert row["completion"][0]["role"] == "assistant"
    assert row["completion"][0]["content"].startswith("<plan>")
    assert (row["task_id"], row["pass"], row["ground_truth"]) == ("t1", 0, "302")


def test_loss_covers_the_chain_but_not_prompt_or_tool_responses(tokenizer: Any) -> None:
    (row,) = sft_rows([make_trajectory()])
    masked = tokenize_row(tokenizer, row["prompt"], row["completion"], mask_tool_responses=True)
    unmasked = tokenize_row(tokenizer, row["prompt"], row["completion"], mask_tool_responses=False)
    assert masked["input_ids"] == unmasked["input_ids"]
    trained = tokenizer.decode(
        [t for t, label in zip(masked["input_ids"], masked["labels"], strict=True) if label != -100]
    )
    assert trained.startswith("<plan>") and "<|im_end|>" in trained
    assert "Task: rank" not in trained and "You are STAR" not in trained
    assert "<tool_call>" in trained and "<tool_response>" not in trained and "Comedies: 265" not in trained
    everything = tokenizer.decode(
        [t for t, label in zip(unmasked["input_ids"], unmasked["labels"], strict=True) if label != -100]
    )
    assert "<tool_response>" in everything and "Comedies: 265" in everything


def test_configs_mirror_the_paper_with_cpu_overrides() -> None:
    sft = StarSFTConfig()
    assert (sft.learning_rate, sft.num_train_epochs, sft.gradient_accumulation_steps, sft.max_length) == (
        1e-5,
        2.0,
        64,
        16384,
    )
    cpu = sft.for_device(cpu=True)
    assert (cpu.use_cpu, cpu.bf16, cpu.gradient_accumulation_steps, cpu.learning_rate) == (
        True,
        False,
        1,
        1e-5,
    )
    assert sft.for_device(cpu=False) == sft
    assert cpu.with_updates(max_steps=3, learning_rate=None).max_steps == 3
    with pytest.raises(ValueError, match="unknown config fields"):
        cpu.with_updates(lr=1.0)
    grpo = StarGRPOConfig()
    assert (grpo.learning_rate, grpo.beta, grpo.temperature, grpo.num_generations) == (1e-6, 0.001, 0.7, 8)
    assert grpo.for_device(cpu=True).num_generations == 4
    with pytest.raises(ValueError, match="multiple of num_generations"):
        grpo.with_updates(per_device_train_batch_size=6)
    with pytest.raises(ValueError, match="unknown ablation"):
        StarSFTConfig(ablation="no_ranker")
    trl_config = cpu.to_trl(__import__("pathlib").Path("/tmp/star-sft-config-test"))
    assert (trl_config.learning_rate, trl_config.use_cpu, trl_config.report_to) == (1e-5, True, [])


def test_trl_configs_are_derived_by_field_name_and_a_stray_field_fails_loudly(tmp_path: Path) -> None:
    import dataclasses

    from trl import GRPOConfig, SFTConfig

    sft, grpo = StarSFTConfig().for_device(cpu=True), StarGRPOConfig().for_device(cpu=True)
    sft_trl, grpo_trl = sft.to_trl(tmp_path / "s"), grpo.to_trl(tmp_path / "g")
    for ours, theirs, trl_class in ((sft, sft_trl, SFTConfig), (grpo, grpo_trl, GRPOConfig)):
        shared = {f.name for f in dataclasses.fields(ours)} & {f.name for f in dataclasses.fields(trl_class)}
        assert len(shared) >= 10
        for name in shared - {"save_steps"}:
            assert getattr(theirs, name) == getattr(ours, name), name
    assert (grpo_trl.beta, grpo_trl.num_generations, grpo_trl.use_vllm) == (0.001, 4, False)

    @dataclasses.dataclass
    class Drifted(StarSFTConfig):
        max_seq_length: int = 512  # a name TRL dropped

    with pytest.raises(TypeError, match=r"\['max_seq_length'\] are not SFTConfig fields"):
        Drifted().to_trl(tmp_path / "d")


def test_rows_fit_the_generated_budget_and_ask_for_r_ids(tokenizer: Any) -> None:
    from starrec.distill.chain import ChainFormat, count_chain_tokens, serialise_trajectory

    trajectory = make_trajectory()
    full = count_chain_tokens(serialise_trajectory(trajectory), tokenizer).generated
    (roomy,) = sft_rows([trajectory], tokenizer=tokenizer)
    (tight,) = sft_rows([trajectory], fmt=ChainFormat(recommend_top=5), tokenizer=tokenizer, budget=full - 1)
    assert roomy["completion"][0]["content"] == serialise_trajectory(trajectory)
    chain = tight["completion"][0]["content"]
    assert count_chain_tokens(chain, tokenizer).generated < full
    assert chain.endswith(json.dumps(trajectory.ranking[:5], separators=(",", ":")) + "\n</recommend>")
    assert "at most 5 candidate ids" in tight["prompt"][0]["content"]
    assert "at most 10 candidate ids" in roomy["prompt"][0]["content"]


def test_examples_longer_than_max_length_are_dropped_never_truncated() -> None:
    rows = [{"input_ids": [1] * 5, "labels": [1] * 5}, {"input_ids": [1] * 50, "labels": [1] * 50}]
    assert fitting_examples(rows, 10) == rows[:1]
    with pytest.raises(
        ValueError, match=r"longer than max_length=4 \(longest 50 tokens\); raise --max-length"
    ):
        fitting_examples(rows, 4)
    assert (
        "left out and counted, never truncated"
        in StarSFTConfig.__dataclass_fields__["max_length"].metadata["help"]
    )
