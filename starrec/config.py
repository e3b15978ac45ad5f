"""One documented configuration for everything that is not a per-run knob.

Layered as RecBole does: defaults here -> environment variables (``STARREC_*``, plus the
standard ``NEO4J_*`` and ``OPENAI_*`` names) -> command-line flags, which override per call.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STARREC_", extra="ignore")

    cache_dir: Path = Field(
        default=Path.home() / ".cache" / "starrec",
        description="Where fetched datasets, extracted models, graphs and evidence are cached.",
    )
    seed: int = Field(default=0, description="Default seed for shuffling, sampling and training.")

    llm: str = Field(default="local", description="LLM backend: openai | local | scripted.")
    llm_model: str = Field(
        default="smollm2",
        description="Model name for the openai backend, or a HF directory / 'smollm2' for the local backend.",
    )
    base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("STARREC_BASE_URL", "OPENAI_BASE_URL"),
        description="OpenAI-compatible endpoint (vLLM, llama.cpp server, DeepSeek, OpenAI).",
    )
    api_key: str | None = Field(
        default=None,
        validation_alias=AliasChoices("STARREC_API_KEY", "OPENAI_API_KEY"),
        description="Key for the endpoint; local servers accept any non-empty string.",
    )
    llm_timeout_s: float = Field(default=120.0, description="Per-request timeout for endpoint calls.")
    llm_max_retries: int = Field(default=3, description="Retries with exponential backoff per LLM call.")
    llm_concurrency: int = Field(default=8, description="At most this many LLM requests in flight.")
    prices: Path | None = Field(
        default=None,
        description="JSON price table (the shape of starrec/llm/prices.json) whose models replace or add "
        "to the packaged list prices.",
    )

    neo4j_uri: str = Field(
        default="bolt://localhost:7687", validation_alias=AliasChoices("STARREC_NEO4J_URI", "NEO4J_URI")
    )
    neo4j_user: str = Field(
        default="neo4j", validation_alias=AliasChoices("STARREC_NEO4J_USER", "NEO4J_USER")
    )
    neo4j_password: str = Field(
        default="", validation_alias=AliasChoices("STARREC_NEO4J_PASSWORD", "NEO4J_PASSWORD")
    )
    neo4j_database: str | None = Field(
        default=None, validation_alias=AliasChoices("STARREC_NEO4J_DATABASE", "NEO4J_DATABASE")
    )


_ENVIRONMENT_PREFIXES = ("STARREC_", "NEO4J_", "OPENAI_")


def _settings_environment() -> tuple[tuple[str, str], ...]:
    """The variables :class:`Settings` can read (names are case-insensitive), plus ``HOME``."""
    return tuple(
        sorted(
            (name.upper(), value)
            for name, value in os.environ.items()
            if name.upper().startswith(_ENVIRONMENT_PREFIXES) or name == "HOME"
        )
    )


@lru_cache(maxsize=8)
def _settings_for(environment: tuple[tuple[str, str], ...]) -> Settings:
    return Settings()


def get_settings() -> Settings:
    """Settings from the current environment, as a copy the caller may change.

    Building them costs about a millisecond (pydantic-settings reads the whole environment) and the
    price lookup asks on every LLM call, so they are built once per distinct environment: a changed
    or monkeypatched variable still takes effect at the next call.
    """
    return _settings_for(_settings_environment()).model_copy()
