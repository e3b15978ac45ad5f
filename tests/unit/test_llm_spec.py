"""LLMSpec layering (settings <- spec string <- overrides) and make_chat_model's backend choice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from starrec.llm import EndpointChatModel, LLMSpec, LocalChatModel, ScriptedChatModel, make_chat_model


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "STARREC_LLM",
        "STARREC_LLM_MODEL",
        "STARREC_BASE_URL",
        "OPENAI_BASE_URL",
        "STARREC_API_KEY",
        "OPENAI_API_KEY",
        "STARREC_LLM_CONCURRENCY",
        "STARREC_LLM_TIMEOUT_S",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults_come_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STARREC_LLM", "openai")
    monkeypatch.setenv("STARREC_LLM_MODEL", "deepseek-chat")
    monkeypatch.setenv("OPENAI_BASE_URL", "https://api.deepseek.com")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("STARREC_LLM_CONCURRENCY", "3")
    spec = LLMSpec.from_settings()
    assert (spec.backend, spec.model, spec.base_url, spec.api_key) == (
        "openai",
        "deepseek-chat",
        "https://api.deepseek.com",
        "sk-test",
    )
    assert spec.concurrency == 3
    assert "sk-test" not in repr(spec) and "api_key" not in spec.to_dict()


def test_overrides_win_and_none_means_keep() -> None:
    spec = LLMSpec.from_settings(temperature=0.7, model=None, max_tokens=32)
    assert (spec.backend, spec.model, spec.temperature, spec.max_tokens) == ("local", "smollm2", 0.7, 32)


@pytest.mark.parametrize(
    ("text", "backend", "model", "script"),
    [
        ("local", "local", "smollm2", None),
        ("local:/models/student", "local", "/models/student", None),
        ("openai:deepseek-chat", "openai", "deepseek-chat", None),
        ("openai", "openai", "smollm2", None),
        ("scripted:runs/rec.jsonl", "scripted", "smollm2", "runs/rec.jsonl"),
    ],
)
def test_parse_spec_strings(text: str, backend: str, model: str, script: str | None) -> None:
    spec = LLMSpec.parse(text)
    assert (spec.backend, spec.model, spec.script) == (backend, model, script)


def test_parse_keeps_the_settings_model_for_the_same_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STARREC_LLM", "openai")
    monkeypatch.setenv("STARREC_LLM_MODEL", "gpt-4o-mini")
    assert LLMSpec.parse("openai").model == "gpt-4o-mini"
    assert LLMSpec.parse("local").model == "smollm2"  # not the endpoint's model name


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "llamafile"}, "Unknown LLM backend"),
        ({"structured_method": "xml"}, "structured_method"),
        ({"concurrency": 0}, "concurrency"),
    ],
)
def test_invalid_specs_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LLMSpec(**kwargs)


def test_a_malformed_spec_string_says_what_is_accepted() -> None:
    for text in ("ollama", "anthropic:", "bad provider!:m"):
        with pytest.raises(ValueError, match="PROVIDER:MODEL for any LangChain provider"):
            LLMSpec.parse(text)


def test_any_langchain_provider_goes_through_init_chat_model(monkeypatch: pytest.MonkeyPatch) -> None:
    import langchain.chat_models
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    calls: list[tuple[str, dict]] = []

    def fake_init(model: str, **kwargs: object) -> GenericFakeChatModel:
        calls.append((model, kwargs))
        return GenericFakeChatModel(messages=iter(["hello"]))

    monkeypatch.setattr(langchain.chat_models, "init_chat_model", fake_init)
    spec = LLMSpec.parse("anthropic:claude-sonnet-4", temperature=0.3, max_tokens=99)
    assert (spec.backend, spec.provider, spec.model) == ("langchain", "anthropic", "claude-sonnet-4")
    model = make_chat_model(spec)
    assert model.invoke("hi").content == "hello"
    [(name, kwargs)] = calls
    assert name == "claude-sonnet-4" and kwargs["model_provider"] == "anthropic"
    assert (kwargs["temperature"], kwargs["max_tokens"]) == (0.3, 99)


def test_a_provider_whose_package_is_missing_names_the_fix() -> None:
    with pytest.raises(ValueError, match=r"anthropic:claude-x: .*langchain-anthropic|langchain_anthropic"):
        make_chat_model("anthropic:claude-x")


def test_openai_backend_needs_a_key_or_a_local_endpoint() -> None:
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        make_chat_model("openai:gpt-4o-mini")
    model = make_chat_model(
        "openai:smollm2",
        base_url="http://127.0.0.1:9/v1",
        concurrency=4,
        timeout_s=7.0,
        max_retries=5,
        structured_method="json_schema",
    )
    assert isinstance(model, EndpointChatModel)
    assert (model.model_name, model.concurrency, model.request_timeout, model.max_retries) == (
        "smollm2",
        4,
        7.0,
        5,
    )
    assert model.structured_method == "json_schema"
    assert model.openai_api_key.get_secret_value() == "not-needed"


def test_local_backend_is_lazy() -> None:
    model = make_chat_model("local:/does/not/exist", threads=1, max_tokens=16, temperature=0.5)
    assert isinstance(model, LocalChatModel)  # nothing loaded yet
    assert (model.model, model.threads, model.max_new_tokens, model.temperature) == (
        "/does/not/exist",
        1,
        16,
        0.5,
    )
    with pytest.raises(FileNotFoundError, match="/does/not/exist"):
        model.invoke("hi")


def test_scripted_backend_replays_a_recording(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scripted:PATH"):
        make_chat_model("scripted")
    with pytest.raises(FileNotFoundError, match=r"missing\.jsonl"):
        make_chat_model(f"scripted:{tmp_path / 'missing.jsonl'}")
    recording = tmp_path / "rec.jsonl"
    recording.write_text(json.dumps({"key": None, "response": {"role": "ai", "content": "hello"}}) + "\n")
    model = make_chat_model(f"scripted:{recording}", latency_s=0.0)
    assert isinstance(model, ScriptedChatModel)
    assert model.invoke("hi").content == "hello"


def test_spec_object_with_overrides() -> None:
    base = LLMSpec(backend="openai", model="m", base_url="http://127.0.0.1:9/v1")
    model = make_chat_model(base, model="other")
    assert model.model_name == "other" and base.model == "m"


def test_settings_follow_the_environment_and_are_the_callers_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """get_settings is memoised per environment: a changed variable still takes effect at once."""
    from starrec.config import get_settings

    monkeypatch.setenv("STARREC_LLM_CONCURRENCY", "3")
    first = get_settings()
    first.llm_concurrency = 99  # a caller's change stays in its copy
    assert get_settings().llm_concurrency == 3
    monkeypatch.setenv("STARREC_LLM_CONCURRENCY", "5")
    assert get_settings().llm_concurrency == 5
    monkeypatch.setenv("OPENAI_BASE_URL", "http://vllm:8000/v1")
    assert get_settings().base_url == "http://vllm:8000/v1"
    monkeypatch.delenv("STARREC_LLM_CONCURRENCY")
    assert get_settings().llm_concurrency == 8
