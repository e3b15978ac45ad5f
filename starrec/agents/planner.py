"""Planner: which execution agents run, in which order."""

from __future__ import annotations

from string import Template

from pydantic import BaseModel, Field, field_validator

from starrec.agents.env import AgentEnv, Counters
from starrec.agents.structured_answer import Constraint, ask
from starrec.agents.templates import render
from starrec.contract.roster import ROSTER, Roster
from starrec.data.user_view import UserView
from starrec.llm.constraints import answer_schema

NUMBER_WORDS = ("none", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


class Plan(BaseModel):
    thinking: str = Field(default="", description="Why these analysts, in this order.")
    agents: list[str] = Field(default_factory=list, description="Analyst names, most useful first.")

    @field_validator("agents", mode="before")
    @classmethod
    def _names(cls, value: object) -> object:
        return [str(v) for v in value] if isinstance(value, list) else value


def sanitise_plan(agents: list[str], counters: Counters, roster: Roster = ROSTER) -> list[str]:
    """Keep known agents once each, in order; an empty plan becomes the whole roster (counted)."""
    cleaned: list[str] = []
    for name in agents:
        key = name.strip().lower().replace(" ", "_").replace("-", "_")
        if key in roster.names and key not in cleaned:
            cleaned.append(key)
        else:
            counters.count("plan_invalid_agent")
    if not cleaned:
        counters.count("plan_empty")
        cleaned = list(roster.names)
    return cleaned


def analyst_list(roster: Roster, words: dict[str, str]) -> str:
    """The planner's menu: one line per agent of the roster, in roster order."""
    return "\n".join(f"- {agent.name}: {Template(agent.role).substitute(words)}" for agent in roster.agents)


async def plan(env: AgentEnv, view: UserView, counters: Counters, roster: Roster = ROSTER) -> Plan:
    """Ask the model for a plan; the result always names at least one valid agent."""
    count = len(roster.agents)
    system = render(
        "planner",
        env.words,
        analysts=analyst_list(roster, env.words),
        analyst_count=NUMBER_WORDS[count] if count < len(NUMBER_WORDS) else str(count),
    )
    user = f"Candidates to rank later: {len(view.candidates)} {env.words['items']}. Plan the analyses."
    output, _ = await ask(
        env, system, user, Plan, lambda _text: Plan(thinking="", agents=list(roster.names)), counters,
        shared=view.history_text(),
        constraint=lambda: Constraint(
            answer_schema(Plan, enums={"agents": roster.names}, lengths={"agents": (1, count)})
        ),
    )  # fmt: skip
    return Plan(thinking=output.thinking, agents=sanitise_plan(output.agents, counters, roster))
