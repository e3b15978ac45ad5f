"""Named, pure routing functions: which node runs next, from the state, the context and the roster alone.

Agent node names come from the roster, so the routers' return types are ``Literal`` for the fixed
nodes and :data:`AgentName` for the agents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from langgraph.runtime import Runtime

from starrec.contract.roster import ROSTER, Roster
from starrec.graphs.context import Context
from starrec.graphs.state import State

AgentName = str
"""An execution agent of the graph's roster (its names are data, not a ``Literal``)."""


def context_of(runtime: Runtime[Context]) -> Context:
    """The run's context (defaults when the caller passed none)."""
    return runtime.context if runtime.context is not None else Context()


def enabled_agents(state: State, roster: Roster) -> list[str]:
    """The agents this run may use, in roster order (the abstractor sets them; the roster before it)."""
    return list(state.agents) or list(roster.names)


def planned_agents(state: State, fixed_order: Sequence[str]) -> list[str]:
    """The agents of the current round: the plan (or ``fixed_order`` without a planner) on round 0,
    the flagged agents in a correction round."""
    if state.round > 0:
        return [agent for agent in (state.plan or fixed_order) if agent in state.corrections]
    return list(state.plan or fixed_order)


def next_agent(state: State, fixed_order: Sequence[str]) -> AgentName | None:
    """The first agent of the current round that has not run yet."""
    remaining = [agent for agent in planned_agents(state, fixed_order) if agent not in state.done]
    return remaining[0] if remaining else None


def after_agents(state: State, context: Context) -> Literal["reflector", "ranker"]:
    """Where a finished round goes: reflect (first pass, or more rounds allowed) or rank."""
    if not context.use_reflector:
        return "ranker"
    if state.round > 0 and state.round >= context.max_correction_rounds:
        # The last allowed correction round ran: its output goes straight to ranking.
        return "ranker"
    return "reflector"


ROUTING_FIELDS = frozenset({"agents", "plan", "done", "round", "corrections", "reflection"})
"""The state fields the routers read; all are plain overwrite channels (no reducer)."""


def advanced(state: State, update: Mapping[str, Any]) -> State:
    """``state`` as the next node will see it, as far as routing goes: ``update``'s routing fields
    applied (they overwrite, so no reducer is needed)."""
    changed = {key: value for key, value in update.items() if key in ROUTING_FIELDS}
    return replace(state, **changed) if changed else state


@dataclass(frozen=True)
class Routes:
    """The graph's three routers, bound to its roster (the agent order used when the planner is off).

    Each node calls its router on the state its own update leads to and returns a
    ``Command(goto=...)``: a conditional edge would be a traced runnable of its own on every step,
    and those seven extra callback runs per run were the largest item of the orchestration overhead
    left after the nodes (benchmarks/results/mars.md).
    """

    roster: Roster = ROSTER

    def after_abstractor(
        self, state: State, context: Context
    ) -> Literal["planner", "reflector", "ranker"] | AgentName:
        if context.use_planner:
            return "planner"
        return next_agent(state, enabled_agents(state, self.roster)) or after_agents(state, context)

    def to_next_agent(self, state: State, context: Context) -> Literal["reflector", "ranker"] | AgentName:
        """After the planner or an agent: the next planned agent, else reflection/ranking."""
        return next_agent(state, enabled_agents(state, self.roster)) or after_agents(state, context)

    def after_reflector(self, state: State, context: Context) -> Literal["ranker"] | AgentName:
        """Pass (or no rounds left) -> ranker; fail -> the first flagged agent of the new round."""
        if state.reflection.get("verdict") == "fail" and state.corrections:
            return next_agent(state, enabled_agents(state, self.roster)) or "ranker"
        return "ranker"
