"""The recorded-run schema: written by MARS (one JSON line per run), read by distillation.

One :class:`Trajectory` per (task, pass). The graph's recording callback fills it; the
serialiser in :mod:`starrec.distill` turns it into the tagged chain of thought.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from starrec.tools.base import QueryTrace

AGENT_NODES: tuple[str, ...] = (
    "user_profile",
    "historical_interest",
    "recent_interest",
    "interest_divergence",
)
"""The four execution agents, in the fixed order used when the planner is off."""

AGENT_TAGS: dict[str, str] = {
    "user_profile": "user_profile",
    "historical_interest": "historical_analysis",
    "recent_interest": "recent_analysis",
    "interest_divergence": "divergence_analysis",
}
"""Agent node name -> its tag in the serialised chain of thought."""


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
    settings: dict[str, Any] = Field(
        default_factory=dict, description="Context/ablation settings of the run."
    )
    model: str = ""

    def to_line(self) -> dict[str, Any]:
        """The JSON object for ``runs.jsonl`` (flat hit flags for easy filtering)."""
        line = self.model_dump(by_alias=True, mode="json")
        line.update({key: bool(value) for key, value in self.hits.items()})
        return line
