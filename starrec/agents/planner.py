"""Planner: which execution agents run, in which order."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from starrec.agents.base import AgentEnv, Counters, UserView, ask, render
from starrec.contract.roster import AGENT_NODES


class Plan(BaseModel):
    thinking: str = Field(default="", description="Why these analysts, in this order.")
    agents: list[str] = Field(default_factory=list, description="Analyst names, most useful first.")

    @field_validator("agents", mode="before")
    @classmethod
    def _names(cls, value: object) -> object:
        return [str(v) for v in value] if isinstance(value, list) else value


def sanitise_plan(agents: list[str], counters: Counters) -> list[str]:
    """Keep known agents once each, in order; an empty plan becomes all four (counted)."""
    cleaned: list[str] = []
    for name in agents:
        key = name.strip().lower().replace(" ", "_").replace("-", "_")
        if key in AGENT_NODES and key not in cleaned:
            cleaned.append(key)
        else:
            counters.count("plan_invalid_agent")
    if not cleaned:
        counters.count("plan_empty")
        cleaned = list(AGENT_NODES)
    return cleaned


async def plan(env: AgentEnv, view: UserView, counters: Counters) -> Plan:
    """Ask the model for a plan; the result always names at least one valid agent."""
    system = render("planner", env.words)
    user = f"{view.history_text()}\n\nCandidates to rank later: {len(view.candidates)} {env.words['items']}."
    output, _ = await ask(
        env, system, user, Plan, lambda _text: Plan(thinking="", agents=list(AGENT_NODES)), counters
    )
    return Plan(thinking=output.thinking, agents=sanitise_plan(output.agents, counters))
