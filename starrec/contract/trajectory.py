"""The recorded-run schema: written by MARS (one JSON line per run), read by distillation and serving.

One :class:`Trajectory` per (task, pass). The graph's recording callback fills it; the
serialiser in :mod:`starrec.distill.chain` turns it into the tagged chain of thought. Old
``runs.jsonl`` files must keep loading: fields are only ever added, with defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

HIT_KS: tuple[int, ...] = (1, 3, 5)
"""The cut-offs every run is scored at (``hit@1``, ``hit@3``, ``hit@5``; AgentRecBench's HR@k)."""


def hit_at_k(ranking: Sequence[str], ground_truth: str | None, k: int) -> bool:
    """The ground truth is among the first ``k`` of ``ranking`` (False without a ground truth)."""
    return ground_truth is not None and ground_truth in list(ranking)[:k]


def hit_flags(ranking: Sequence[str], ground_truth: str | None) -> dict[str, bool]:
    """``{"hit@1": ..., "hit@3": ..., "hit@5": ...}``; empty when there is no ground truth."""
    if ground_truth is None:
        return {}
    return {f"hit@{k}": hit_at_k(ranking, ground_truth, k) for k in HIT_KS}


class QueryTrace(BaseModel):
    """One Cypher query a tool ran, kept for inspection and for trajectories."""

    name: str = Field(description="Name of the .cypher file the query was loaded from.")
    cypher: str = Field(description="The query text exactly as sent.")
    params: dict[str, Any] = Field(default_factory=dict)
    row_count: int = 0
    seconds: float = 0.0
    engine: Literal["cypher", "index"] = Field(
        default="cypher",
        description="cypher: the backend ran it; index: answered from the in-memory index of the same graph "
        "(tested equal to the Cypher answer).",
    )


class ToolCallRecord(BaseModel):
    name: str = Field(description="item_cf or user_cf.")
    arguments: dict[str, Any] = Field(default_factory=dict)
    response: str = Field(default="", description="The evidence text the agent received.")
    queries: list[QueryTrace] = Field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None


class LLMCallRecord(BaseModel):
    node: str
    messages: list[dict[str, Any]] = Field(
        default_factory=list, description="Prompt messages (role, content)."
    )
    response: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    model: str = Field(default="", description="The model name the call asked for.")
    cache: Literal["hit", "miss"] | None = Field(
        default=None, description="hit/miss in the LLM call cache; None = the run had no cache."
    )
    cost_usd: float | None = Field(
        default=None,
        description="Dollars from the price table (0 for local models and cache hits); None = unknown "
        "(a hosted model without a price, or a line recorded before costs were).",
    )


class StepRecord(BaseModel):
    """One executed node of the graph."""

    node: str
    round: int = Field(default=0, description="0 on the first pass, n in correction round n.")
    output: dict[str, Any] = Field(default_factory=dict, description="The node's structured output.")
    thinking: str = Field(default="", description="Free-text reasoning the node produced, if any.")
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    llm_calls: list[LLMCallRecord] = Field(default_factory=list)
    repairs: dict[str, int] = Field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None


class Trajectory(BaseModel):
    """A full MARS run for one task; also one line of ``runs.jsonl``."""

    model_config = ConfigDict(populate_by_name=True)

    task_id: str
    pass_: int = Field(default=0, alias="pass")
    user_id: str = ""
    scenario: str = ""
    domain: str = "item"
    candidates: list[str] = Field(
        default_factory=list, description="Candidates in the (shuffled) order shown."
    )
    ground_truth: str | None = None
    prompt: dict[str, Any] = Field(
        default_factory=dict,
        description="What the run was asked: long-term summary, recent items, candidate titles.",
    )
    ranking: list[str] = Field(default_factory=list, description="Final repaired ranking, all candidates.")
    hits: dict[str, bool] = Field(
        default_factory=dict, description='{"hit@1": ..., "hit@3": ..., "hit@5": ...}'
    )
    nodes: list[str] = Field(default_factory=list, description="Executed node names in order.")
    steps: list[StepRecord] = Field(default_factory=list)
    repairs: dict[str, int] = Field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_cache_hits: int = Field(default=0, description="LLM calls answered from the LLM call cache.")
    llm_cache_misses: int = Field(default=0, description="LLM calls the cache did not have (then stored).")
    cost_usd: float | None = Field(
        default=None,
        description="Dollars the run's LLM calls cost (sum of the calls'); None = unknown for some call.",
    )
    settings: dict[str, Any] = Field(
        default_factory=dict, description="Context/ablation settings of the run."
    )
    model: str = ""

    def to_line(self) -> dict[str, Any]:
        """The JSON object for ``runs.jsonl`` (flat hit flags for easy filtering)."""
        line = self.model_dump(by_alias=True, mode="json")
        line.update({key: bool(value) for key, value in self.hits.items()})
        return line

