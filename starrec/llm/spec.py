"""Which chat model to use: ``LLMSpec`` (a TRL-style config dataclass) and ``make_chat_model``.

Layered like the rest of starrec: dataclass defaults <- ``starrec.config.get_settings()`` (``STARREC_*``
and ``OPENAI_*`` environment variables) <- a spec string such as ``"openai:deepseek-chat"`` <- keyword
overrides (command-line flags).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel

from starrec.config import Settings, get_settings
from starrec.llm.constraints import CONSTRAINED_DECODING

Backend = Literal["openai", "local", "scripted", "langchain"]
BACKENDS: tuple[str, ...] = ("openai", "local", "scripted", "langchain")
"""``langchain`` is any provider LangChain's ``init_chat_model`` knows (``anthropic:…``, ``ollama:…``)."""
_LOCAL_KEY = "not-needed"  # local OpenAI-compatible servers accept any non-empty key


@dataclass
class LLMSpec:
    """Everything needed to build a chat model for one of the backends."""

    backend: Backend = field(
        default="local",
        metadata={
            "help": "openai (any OpenAI-compatible endpoint) | local | scripted | langchain (any provider of "
            "LangChain's init_chat_model; specs like 'anthropic:MODEL' or 'ollama:MODEL' select it)."
        },
    )
    provider: str | None = field(
        default=None,
        metadata={"help": "langchain backend: init_chat_model's provider (anthropic, ollama, ...)."},
    )
    model: str = field(
        default="smollm2",
        metadata={
            "help": "openai: the served model name (deepseek-chat, gpt-4o-mini, vLLM --served-model-name). "
            "local: 'smollm2', 'tiny' or a Hugging Face folder. scripted: unused."
        },
    )
    base_url: str | None = field(
        default=None, metadata={"help": "OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1."}
    )
    api_key: str | None = field(
        default=None,
        repr=False,
        metadata={"help": "Endpoint key; defaults to OPENAI_API_KEY/STARREC_API_KEY."},
    )
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy/deterministic."})
    max_tokens: int = field(default=512, metadata={"help": "Most tokens generated per call."})
    timeout_s: float = field(default=120.0, metadata={"help": "Per-request timeout (openai backend)."})
    max_retries: int = field(
        default=3, metadata={"help": "Retries with exponential backoff per request (openai backend)."}
    )
    concurrency: int = field(default=8, metadata={"help": "Most requests in flight (openai backend)."})
    requests_per_second: float | None = field(
        default=None,
        metadata={
            "help": "Most requests started per second (openai backend; hosted APIs' rate limits). "
            "None = no limit."
        },
    )
    structured_method: str = field(
        default="function_calling",
        metadata={
            "help": "How the openai backend gets structured output: json_schema (vLLM), function_calling "
            "(llama.cpp server, DeepSeek, OpenAI), json_mode, or text (prompt + repair + retry)."
        },
    )
    supports_tool_calling: bool = field(
        default=True,
        metadata={
            "help": "Endpoint returns native tool calls; false makes MARS use the <tool_call> text protocol."
        },
    )
    supports_structured_output: bool = field(
        default=True, metadata={"help": "False makes agents prompt for JSON and repair it themselves."}
    )
    constrained_decoding: str = field(
        default="none",
        metadata={
            "help": "openai backend: 'vllm' when the endpoint is a vLLM server (starrec serve): answers are "
            "constrained with its structured_outputs field (enums of candidate ids and agent names, "
            "tool-call structural tags) instead of repaired; 'none' otherwise."
        },
    )
    dtype: str = field(default="bfloat16", metadata={"help": "Local backend weights dtype."})
    threads: int | None = field(
        default=None, metadata={"help": "Local backend torch threads (None = default)."}
    )
    seed: int | None = field(
        default=None, metadata={"help": "Sampling seed (local: torch; openai: request seed)."}
    )
    script: str | None = field(
        default=None,
        metadata={"help": "Scripted backend: a recording (JSON lines) to replay, in call order."},
    )
    latency_s: float = field(default=0.0, metadata={"help": "Scripted backend: seconds each call sleeps."})
    cache: str | None = field(
        default=None,
        metadata={
            "help": "SQLite file of the persistent LLM call cache (starrec.llm.cache), keyed on model, "
            "messages and sampling parameters; None = no cache. With temperature > 0 and no seed it "
            "replays one sample."
        },
    )

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"Unknown LLM backend {self.backend!r}; choose one of {', '.join(BACKENDS)}.")
        valid_methods = ("json_schema", "function_calling", "json_mode", "text")
        if self.structured_method not in valid_methods:
            raise ValueError(f"structured_method {self.structured_method!r} is not one of {valid_methods}.")
        if self.constrained_decoding not in CONSTRAINED_DECODING:
            raise ValueError(
                f"constrained_decoding {self.constrained_decoding!r} is not one of {CONSTRAINED_DECODING}."
            )
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}.")
        if self.requests_per_second is not None and self.requests_per_second <= 0:
            raise ValueError(f"requests_per_second must be > 0, got {self.requests_per_second}.")

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **overrides: Any) -> LLMSpec:
        """Defaults from the environment (``STARREC_LLM``, ``STARREC_LLM_MODEL``, ``OPENAI_BASE_URL``...)."""
        settings = settings or get_settings()
        values: dict[str, Any] = {
            "backend": settings.llm,
            "model": settings.llm_model,
            "base_url": settings.base_url,
            "api_key": settings.api_key,
            "timeout_s": settings.llm_timeout_s,
            "max_retries": settings.llm_max_retries,
            "concurrency": settings.llm_concurrency,
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)

    @classmethod
    def parse(cls, text: str, settings: Settings | None = None, **overrides: Any) -> LLMSpec:
        """``"local"``, ``"local:/path/to/model"``, ``"openai:deepseek-chat"``, ``"scripted:rec.jsonl"``."""
        backend, _, rest = text.strip().partition(":")
        if backend not in BACKENDS or backend == "langchain":
            provider = rest.partition(":")[0] if backend == "langchain" else backend
            model = rest.partition(":")[2] if backend == "langchain" else rest
            plain = provider.replace("_", "").replace("-", "")
            if not provider or not model or not plain.isalnum():
                raise ValueError(
                    f"LLM spec {text!r}: use openai:MODEL, local[:DIR], scripted[:FILE], or PROVIDER:MODEL "
                    "for any LangChain provider (anthropic:claude-..., ollama:llama3, ...)."
                )
            chosen = {"backend": "langchain", "provider": provider, "model": model}
            return cls.from_settings(settings, **chosen, **overrides)
        parsed: dict[str, Any] = {"backend": backend}
        if backend == "scripted" and rest:
            parsed["script"] = rest
        elif rest:
            parsed["model"] = rest
        elif backend != (settings or get_settings()).llm:
            parsed["model"] = "smollm2"  # the settings' model name belongs to the other backend
        return cls.from_settings(settings, **parsed, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """Printable/serialisable settings (the key is never included)."""
        values = dataclasses.asdict(self)
        values.pop("api_key")
        return values


ENDPOINT_SEPARATOR = "@"
"""``SPEC@URL``: a model spec with its own endpoint (``openai:star-planner@http://127.0.0.1:8001/v1``)."""


def split_endpoint(text: str) -> tuple[str, str | None]:
    """``("openai:MODEL", "http://...")`` for ``openai:MODEL@http://...``; ``(text, None)`` without an
    ``@http(s)://`` suffix (an ``@`` elsewhere, as in a folder name, stays part of the spec)."""
    spec, sep, url = text.strip().rpartition(ENDPOINT_SEPARATOR)
    if sep and spec and url.startswith(("http://", "https://")):
        return spec, url
    return text.strip(), None


def make_chat_model(spec: LLMSpec | str | None = None, **overrides: Any) -> BaseChatModel:
    """A chat model for ``spec`` (``None``: from the environment; a string: :meth:`LLMSpec.parse`)."""
    if spec is None:
        spec = LLMSpec.from_settings(**overrides)
    elif isinstance(spec, str):
        spec = LLMSpec.parse(spec, **overrides)
    elif overrides:
        spec = dataclasses.replace(spec, **overrides)
    builders = {
        "openai": _openai_model,
        "local": _local_model,
        "scripted": _scripted_model,
        "langchain": _langchain_model,
    }
    return builders[spec.backend](spec)


def _cache_option(spec: LLMSpec) -> dict[str, Any]:
    """``{"cache": the opened cache}`` when the spec asks for one (every backend takes ``cache=``)."""
    if not spec.cache:
        return {}
    from starrec.llm.cache import open_llm_cache

    return {"cache": open_llm_cache(spec.cache)}


def _langchain_model(spec: LLMSpec) -> BaseChatModel:
    """Any provider LangChain supports, through ``init_chat_model`` (its package must be installed)."""
    try:
        from langchain.chat_models import init_chat_model
    except ImportError as error:
        raise ValueError(
            f"--llm {spec.provider}:{spec.model} uses LangChain's init_chat_model: "
            "pip install 'starrec[providers]' and the provider's package (e.g. langchain-anthropic)"
        ) from error
    kwargs: dict[str, Any] = {"temperature": spec.temperature, "max_tokens": spec.max_tokens,
                              "timeout": spec.timeout_s, "max_retries": spec.max_retries,
                              **_cache_option(spec)}  # fmt: skip
    if spec.base_url:
        kwargs["base_url"] = spec.base_url
    if spec.api_key:
        kwargs["api_key"] = spec.api_key
    if spec.requests_per_second is not None:
        from langchain_core.rate_limiters import InMemoryRateLimiter

        kwargs["rate_limiter"] = InMemoryRateLimiter(requests_per_second=spec.requests_per_second)
    try:
        return init_chat_model(spec.model, model_provider=spec.provider, **kwargs)
    except ImportError as error:
        raise ValueError(f"--llm {spec.provider}:{spec.model}: {error}") from error


def _openai_model(spec: LLMSpec) -> BaseChatModel:
    from starrec.llm.openai import EndpointChatModel

    api_key = spec.api_key or (_LOCAL_KEY if spec.base_url else None)
    if api_key is None:
        raise ValueError(
            "The openai backend needs an API key for api.openai.com: set OPENAI_API_KEY or STARREC_API_KEY, "
            "or point --base-url at a local OpenAI-compatible server."
        )
    optional: dict[str, Any] = {"seed": spec.seed} if spec.seed is not None else {}
    optional.update(_cache_option(spec))
    if spec.requests_per_second is not None:
        from langchain_core.rate_limiters import InMemoryRateLimiter

        optional["rate_limiter"] = InMemoryRateLimiter(
            requests_per_second=spec.requests_per_second,
            check_every_n_seconds=min(0.1, 0.5 / spec.requests_per_second),
            max_bucket_size=1,
        )
    return EndpointChatModel(
        model=spec.model,
        base_url=spec.base_url,
        api_key=api_key,
        temperature=spec.temperature,
        max_tokens=spec.max_tokens,
        timeout=spec.timeout_s,
        max_retries=spec.max_retries,
        concurrency=spec.concurrency,
        structured_method=spec.structured_method,
        supports_tool_calling=spec.supports_tool_calling,
        supports_structured_output=spec.supports_structured_output,
        constrained_decoding=spec.constrained_decoding,
        **optional,
    )


def _local_model(spec: LLMSpec) -> BaseChatModel:
    from starrec.llm.local import LocalChatModel

    return LocalChatModel(
        model=spec.model,
        dtype=spec.dtype,
        max_new_tokens=spec.max_tokens,
        temperature=spec.temperature,
        threads=spec.threads,
        seed=spec.seed,
        supports_tool_calling=spec.supports_tool_calling,
        supports_structured_output=spec.supports_structured_output,
        **_cache_option(spec),
    )


def _scripted_model(spec: LLMSpec) -> BaseChatModel:
    from starrec.llm.scripted import ScriptedChatModel

    if not spec.script:
        raise ValueError(
            "The scripted backend replays a recording: pass 'scripted:PATH.jsonl' (recorded with "
            "RecordingChatModel), or build ScriptedChatModel(responses=...) in code."
        )
    if not Path(spec.script).is_file():
        raise FileNotFoundError(f"Scripted LLM recording {spec.script} does not exist.")
    return ScriptedChatModel.from_recording(
        spec.script,
        latency_s=spec.latency_s,
        supports_tool_calling=spec.supports_tool_calling,
        supports_structured_output=spec.supports_structured_output,
        **_cache_option(spec),
    )
