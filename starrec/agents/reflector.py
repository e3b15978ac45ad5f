"""Reflector: consistency, rationality and completeness check; pass, or fail with fixes per agent."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from starrec.agents.analyst import format_analyses
from starrec.agents.env import AgentEnv, Counters
from starrec.agents.structured_answer import Constraint, ask
from starrec.agents.templates import render
from starrec.data.user_view import UserView
from starrec.llm.constraints import answer_schema


class Issue(BaseModel):
    agent: str
    suggestion: str = ""


class Reflection(BaseModel):
    thinking: str = ""
    verdict: Literal["pass", "fail"] = "pass"
    issues: list[Issue] = Field(default_factory=list)

    @field_validator("verdict", mode="before")
    @classmethod
    def _verdict(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value


def sanitise_reflection(reflection: Reflection, executed: list[str], counters: Counters) -> Reflection:
    """Keep issues about agents that actually ran (once each); a fail with none left becomes a pass."""
    issues: list[Issue] = []
    for issue in reflection.issues:
        name = issue.agent.strip().lower().replace(" ", "_").replace("-", "_")
        if name in executed and name not in {i.agent for i in issues}:
            issues.append(
                Issue(agent=name, suggestion=issue.suggestion.strip() or "Re-check your conclusions.")
            )
        else:
            counters.count("reflection_invalid_agent")
    if reflection.verdict == "fail" and not issues:
        counters.count("reflection_fail_without_issues")
        return Reflection(thinking=reflection.thinking, verdict="pass", issues=[])
    if reflection.verdict == "pass":
        issues = []
    return Reflection(thinking=reflection.thinking, verdict=reflection.verdict, issues=issues)


async def reflect(
    env: AgentEnv, view: UserView, analyses: dict[str, dict[str, Any]], counters: Counters
) -> Reflection:
    system = render("reflector", env.words)
    user = (
        f"Analysts' conclusions:\n{format_analyses(analyses)}\n\n"
        f"Candidates to rank:\n{view.candidates_text()}"
    )
    executed = list(analyses) or ["none"]
    # Unusable answer: pass (the ranker still runs on what exists; the fallback is counted).
    output, _ = await ask(
        env, system, user, Reflection, lambda _text: Reflection(verdict="pass"), counters,
        shared=view.history_text(),
        constraint=lambda: Constraint(answer_schema(
            Reflection, enums={"issues.agent": executed}, lengths={"issues": (0, len(executed))}
        )),
    )  # fmt: skip
    return sanitise_reflection(output, list(analyses), counters)
