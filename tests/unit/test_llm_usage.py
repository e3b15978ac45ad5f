"""Money per call: the one price lookup, self-hosted endpoints at 0, unknown hosted models as None."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.load import dumpd

from starrec.llm import EndpointChatModel, LLMUsageCallback, ScriptedChatModel
from starrec.llm.cache import open_llm_cache
from starrec.llm.usage import (
    FREE,
    ModelIdentity,
    Price,
    add_costs,
    call_cost,
    identify_model,
    is_self_hosted,
    price_for,
    price_table,
)


@pytest.fixture(autouse=True)
def packaged_prices_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STARREC_PRICES", raising=False)


def test_the_packaged_table_is_dated_and_prices_known_models() -> None:
    shipped = json.loads((Path(__file__).parents[2] / "starrec/llm/prices.json").read_text())
    assert shipped["as_of"] and "update" in shipped["note"]
    assert price_for("gpt-4o-mini") == Price(0.15, 0.60)
    assert price_for("GPT-4o-mini-2024-07-18") == Price(0.15, 0.60)  # dated snapshot of a listed model
    assert price_for("claude-sonnet-4-5-20250929") == Price(3.0, 15.0)
    assert price_for("gpt-4o-audio-preview") is None  # a different model, not a dated gpt-4o
    assert price_for("my-finetune") is None
    assert price_for("gpt-4o-mini").cost(1_000_000, 500_000) == pytest.approx(0.15 + 0.30)


@pytest.mark.parametrize(
    ("base_url", "self_hosted"),
    [
        ("http://127.0.0.1:8000/v1", True),
        ("http://localhost:8000/v1", True),
        ("http://10.0.3.7:8000/v1", True),
        ("http://192.168.1.20/v1", True),
        ("http://[::1]:8000/v1", True),
        ("http://vllm-teacher:8000/v1", True),  # a compose/Kubernetes service name
        ("http://gpu-box.internal:8000/v1", True),
        ("https://api.deepseek.com", False),
        ("https://api.openai.com/v1", False),
        ("http://8.8.8.8/v1", False),
        (None, False),
    ],
)
def test_self_hosted_endpoints(base_url: str | None, self_hosted: bool) -> None:
    assert is_self_hosted(base_url) is self_hosted
    assert (price_for("my-finetune", base_url=base_url) == FREE) is self_hosted


def test_a_user_table_adds_and_replaces_prices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = tmp_path / "prices.json"
    table.write_text(json.dumps({"models": {"my-finetune": {"input": 1, "output": 2},
                                            "gpt-4o-mini": {"input": 9, "output": 9}}}))  # fmt: skip
    monkeypatch.setenv("STARREC_PRICES", str(table))
    assert price_for("my-finetune") == Price(1.0, 2.0)
    assert price_for("gpt-4o-mini") == Price(9.0, 9.0)
    assert price_for("gpt-4o") == Price(2.5, 10.0)
    broken = tmp_path / "broken.json"
    broken.write_text('{"models": {"x": {"input": "free"}}}')
    monkeypatch.setenv("STARREC_PRICES", str(broken))
    with pytest.raises(ValueError, match=r"broken.json: not a price table"):
        price_table()


def test_call_cost_is_zero_from_the_cache_and_unknown_for_unpriced_models() -> None:
    hosted = ModelIdentity("gpt-4o-mini", base_url="https://api.openai.com/v1")
    assert call_cost(hosted, 2_000, 1_000) == pytest.approx((2_000 * 0.15 + 1_000 * 0.60) / 1e6)
    assert call_cost(hosted, 2_000, 1_000, cache="hit") == 0.0
    assert call_cost(ModelIdentity("smollm2", local=True), 2_000, 1_000) == 0.0
    with pytest.warns(UserWarning, match="no price for hosted model 'mystery-model-x'"):
        assert call_cost(ModelIdentity("mystery-model-x", base_url="https://api.example.com"), 1, 1) is None
    assert add_costs([0.5, 0.25]) == 0.75 and add_costs([0.5, None]) is None and add_costs([]) == 0.0


def test_identify_model_reads_what_langchain_hands_the_callbacks() -> None:
    hosted = EndpointChatModel(model="gpt-4o-mini", api_key="sk-test", base_url="https://api.openai.com/v1")
    identity = identify_model(dumpd(hosted), hosted._get_invocation_params(), hosted._get_ls_params())
    assert identity == ModelIdentity("gpt-4o-mini", base_url="https://api.openai.com/v1")
    assert identity.price == Price(0.15, 0.60)
    served = EndpointChatModel(model="teacher", api_key="x", base_url="http://127.0.0.1:8000/v1")
    assert (
        identify_model(dumpd(served), served._get_invocation_params(), served._get_ls_params()).price == FREE
    )
    scripted = ScriptedChatModel(responses=["x"])
    local = identify_model(None, scripted._get_invocation_params(), scripted._get_ls_params())
    assert local.local and local.price == FREE


class HostedScripted(ScriptedChatModel):
    """A scripted model that presents itself as a hosted model (its name decides the price)."""

    @property
    def _llm_type(self) -> str:
        return "openai-chat"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        return {**super()._get_ls_params(stop=stop, **kwargs), "ls_model_name": self.model_name}


def test_usage_callback_adds_money_and_cache_hits(tmp_path: Path) -> None:
    cache = open_llm_cache(tmp_path / "llm.sqlite")
    model = HostedScripted(responses=lambda m: "a fairly short answer", model_name="gpt-4o-mini", cache=cache)
    usage = LLMUsageCallback()
    for prompt in ("first question", "second question", "first question"):
        model.invoke(prompt, config={"callbacks": [usage], "tags": ["ranker"]})
    total = usage.totals()
    assert (total.calls, total.cache_hits, total.cache_misses) == (3, 1, 2)
    paid = [call.response for call in model.calls]
    assert len(paid) == 2  # the repeat never reached the model
    expected = (total.prompt_tokens * 0.15 + total.completion_tokens * 0.60) / 1e6
    assert 0 < total.cost_usd < expected  # the cached third call is free
    assert usage.as_dict()["ranker"]["cache_hits"] == 1
    unknown = HostedScripted(responses=["x"], model_name="mystery-model-y")
    with pytest.warns(UserWarning, match="mystery-model-y"):
        unknown.invoke("q", config={"callbacks": [usage]})
    assert usage.totals().cost_usd is None
