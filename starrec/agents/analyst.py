"""What the execution agents of the roster share: one output model and one way of running."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, field_validator

from starrec.agents.env import AgentEnv, Counters
from starrec.agents.structured_answer import Constraint, ask
from starrec.agents.templates import render
from starrec.contract.roster import AgentSpec
from starrec.data.user_view import UserView
from starrec.llm.constraints import answer_schema

MAX_CONCLUSIONS = 6


class Analysis(BaseModel):
    """Key conclusions of one execution agent."""

    thinking: str = Field(default="", description="Short reasoning behind the conclusions.")
    conclusions: list[str] = Field(default_factory=list, max_length=12, description="Key conclusions.")
    evidence_ids: list[str] = Field(default_factory=list, description="Item ids supporting them.")

    @field_validator("conclusions", "evidence_ids", mode="before")
    @classmethod
    def _strings(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list):
            return [v if isinstance(v, str) else str(v) for v in value]
        return value


def analysis_constraint(view: UserView) -> Constraint:
    """Conclusions bounded in number and length; evidence ids and tool anchors from this user's view."""
    known = [str(entry.get("item_id", entry.get("id", ""))) for entry in (*view.recent, *view.candidates)]
    known = [item for item in known if item]
    return Constraint(
        answer_schema(
            Analysis,
            enums={"evidence_ids": known or ["none"]},
            lengths={"conclusions": (1, MAX_CONCLUSIONS), "evidence_ids": (0, MAX_CONCLUSIONS)},
        ),
        tool_arguments={"user_id": [view.user_id], **({"item_id": known} if known else {})},
    )


def fallback_analysis(text: str) -> Analysis:
    """Unparseable answer: keep the model's own words as a single conclusion rather than nothing."""
    sentence = " ".join(text.split())[:300]
    return Analysis(thinking="", conclusions=[sentence] if sentence else [])


async def analyse(
    env: AgentEnv,
    agent: AgentSpec,
    view: UserView,
    counters: Counters,
    correction: str | None = None,
    previous: dict[str, Any] | None = None,
    looked_up: str = "",
) -> Analysis:
    """Run one execution agent of the roster: its prompt, and its focus on the data.

    The focus is the agent-specific digest of the data (rating habits, category counts, ...)
    appended to the shared view of the user.
    """
    system = render(agent.template, env.words)
    focus = "\n\n".join(part for part in (agent.focus(view), looked_up) if part)
    user = focus or "Analyse the history above."
    if correction:
        earlier = "\n".join(f"- {c}" for c in (previous or {}).get("conclusions", [])) or "- (none)"
        user += (
            f"\n\nYour previous conclusions:\n{earlier}\n\nA reviewer asked you to revise them: "
            f"{correction}\nGive corrected conclusions."
        )
    output, _ = await ask(
        env, system, user, Analysis, fallback_analysis, counters,
        shared=view.history_text(), constraint=lambda: analysis_constraint(view),
    )  # fmt: skip
    if len(output.conclusions) > MAX_CONCLUSIONS:
        counters.count("conclusions_truncated")
        output = output.model_copy(update={"conclusions": output.conclusions[:MAX_CONCLUSIONS]})
    return output


def format_analyses(analyses: dict[str, dict[str, Any]]) -> str:
    """The execution agents' conclusions as prompt text, in the order they ran."""
    blocks = []
    for agent, output in analyses.items():
        conclusions = output.get("conclusions") or []
        lines = "\n".join(f"  - {text}" for text in conclusions) or "  - (no conclusions)"
        blocks.append(f"{agent}:\n{lines}")
    return "\n".join(blocks) or "(no analyses)"
