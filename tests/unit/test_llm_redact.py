"""Redaction: URL credentials, key shapes and environment keys become ***, ordinary text survives."""

from __future__ import annotations

import pytest

from starrec.llm.redact import MASK, is_secret_name, redact, redact_url, redact_value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://user:secret@host:8000/v1", "http://***@host:8000/v1"),
        ("https://token@host/v1", "https://***@host/v1"),
        ("http://host/v1?api_key=abc&model=m", "http://host/v1?api_key=***&model=m"),
        ("http://host/v1?access_token=a&client_secret=b&password=c",
         "http://host/v1?access_token=***&client_secret=***&password=***"),
        ("http://localhost:8000/v1", "http://localhost:8000/v1"),
        ("http://host/v1?model=m&author=x", "http://host/v1?model=m&author=x"),
    ],
)
def test_urls(text: str, expected: str) -> None:
    assert redact_url(text) == expected
    assert redact(f"calling {text}: failed") == f"calling {expected}: failed"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Incorrect API key provided: sk-proj-abc123*****xyz9.", "Incorrect API key provided: ***."),
        ("Authorization: Bearer eyJhbGciOi.J9x", "Authorization: Bearer ***"),
        ("token hf_abcdefghijklmnopqrstuvwxyzABCD", "token ***"),
        ('{"api_key": "abcd1234", "password": "hunter22"}', '{"api_key": "***", "password": "***"}'),
        ("The Bearer of Bad News; sk-learn-compatible; max_new_tokens=512; author=Tolkien",
         "The Bearer of Bad News; sk-learn-compatible; max_new_tokens=512; author=Tolkien"),
    ],
)
def test_key_shapes_and_ordinary_text(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_environment_keys_are_masked_but_placeholders_are_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "plain-key-without-shape")
    assert redact("server said: bad key plain-key-without-shape") == f"server said: bad key {MASK}"
    monkeypatch.setenv("OPENAI_API_KEY", "EMPTY")
    assert redact("EMPTY response") == "EMPTY response"


def test_values_nested_and_secret_named_fields() -> None:
    value = {"base_url": "http://u:p@h/v1", "api_key": "zzz", "author": "Tolkien", "prompt_tokens": 5,
             "token": None, "steps": [{"error": "Bearer abc12345678"}], "pair": ("sk-abc123456789", 1)}
    assert redact_value(value) == {"base_url": "http://***@h/v1", "api_key": MASK, "author": "Tolkien",
                                   "prompt_tokens": 5, "token": None, "steps": [{"error": "Bearer ***"}],
                                   "pair": [MASK, 1]}
    assert is_secret_name("OPENAI_API_KEY") and is_secret_name("x-api-key") and not is_secret_name("author")
    assert redact(redact("http://u:p@h/v1?key=1")) == "http://***@h/v1?key=***"  # idempotent
