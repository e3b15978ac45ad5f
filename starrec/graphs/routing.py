"""Named, pure routing functions: which node runs next, from the state and the context alone."""

from __future__ import annotations

from langgraph.runtime import Runtime

from starrec.contract.roster import AGENT_NODES as FIXED_AGENT_ORDER
from starrec.graphs.context import Context
from starrec.graphs.state import State

PLANNER = "planner"
REFLECTOR = "reflector"
RANKER = "ranker"


def context_of(runtime: Runtime[Context]) -> Context:
    """The run's context (defaults when the caller passed none)."""
    return runtime.context if runtime.context is not None else Context()


def planned_agents(state: State) -> list[str]:
    """The agents of the current round: the plan on round 0, the flagged agents in a correction round."""
    if state.round > 0:
        return [agent for agent in (state.plan or FIXED_AGENT_ORDER) if agent in state.corrections]
    return list(state.plan or FIXED_AGENT_ORDER)


def next_agent(state: State) -> str | None:
    """The first agent of the current round that has not run yet."""
    remaining = [agent for agent in planned_agents(state) if agent not in state.done]
    return remaining[0] if remaining else None


def after_agents(state: State, context: Context) -> str:
    """Where a finished round goes: reflect (first pass, or more rounds allowed) or rank."""
    if not context.use_reflector:
        return RANKER
    if state.round > 0 and state.round >= context.max_correction_rounds:
        # The last allowed correction round ran: its output goes straight to ranking.
        return RANKER
    return REFLECTOR


def route_after_abstractor(state: State, runtime: Runtime[Context]) -> str:
    if context_of(runtime).use_planner:
        return PLANNER
    return next_agent(state) or after_agents(state, context_of(runtime))


def route_to_next_agent(state: State, runtime: Runtime[Context]) -> str:
    """After the planner or an agent: the next planned agent, else reflection/ranking."""
    return next_agent(state) or after_agents(state, context_of(runtime))


def route_after_reflector(state: State, runtime: Runtime[Context]) -> str:
    """Pass (or no rounds left) -> ranker; fail -> the first flagged agent of the new round."""
    if state.reflection.get("verdict") == "fail" and state.corrections:
        return next_agent(state) or RANKER
    return RANKER
