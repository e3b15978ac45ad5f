"""The graph's nodes: each turns the state into one agent call and a small state update.

Every node also reports its step (structured output, thinking, counted repairs) to the trajectory
recorder as a LangChain custom event (:data:`~starrec.graphs.recording.STEP_EVENT`), so a
trajectory never depends on parsing logs and the graph state carries no recorder side channel.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from langchain_core.callbacks import adispatch_custom_event
from langgraph.runtime import Runtime

from starrec.agents.abstractor import abstract
from starrec.agents.analyst import analyse
from starrec.agents.env import AgentEnv, Counters
from starrec.agents.planner import plan
from starrec.agents.ranker import (
    candidate_prior,
    cf_hint,
    compact_evidence,
    finalise,
    llm_ranking,
    neighbour_list_scores,
    order_by_score,
)
from starrec.agents.reflector import reflect
from starrec.contract.roster import ABSTRACTOR, PLANNER, RANKER, REFLECTOR, ROSTER, AgentSpec, Roster
from starrec.data.user_view import UserView
from starrec.eval.fusion import value_prior
from starrec.graphs.context import Context
from starrec.graphs.recording import STEP_EVENT
from starrec.graphs.resources import Resources
from starrec.graphs.routing import context_of, enabled_agents, planned_agents
from starrec.graphs.state import State
from starrec.tools.value_profiles import candidate_affinity


def view_of(state: State, env: AgentEnv) -> UserView:
    return UserView(
        user_id=state.user_id,
        domain=env.domain,
        summary=state.summary,
        recent=list(state.recent),
        candidates=list(state.candidates),
    )


async def step_update(
    node: str,
    state: State,
    counters: Counters,
    output: dict[str, Any],
    thinking: str = "",
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    """The bookkeeping part of every node's update; the step itself is reported to the recorder."""
    report = {
        "node": node,
        "round": state.round,
        "output": output,
        "thinking": thinking,
        "repairs": dict(counters.repairs),
        "llm_calls": counters.llm_calls,
        "tool_calls": counters.tool_calls,
        "tool_errors": counters.tool_errors,
    }
    await adispatch_custom_event(STEP_EVENT, report)
    all_warnings = [*(warnings or []), *counters.warnings]
    return {"repairs": dict(counters.repairs), "warnings": [f"{node}: {text}" for text in all_warnings]}


def validate_input(state: State) -> None:
    """Bad input gets an error naming the field, before any LLM call is made."""
    if not state.candidates:
        raise ValueError(f"task {state.task_id!r}: input field 'candidates' is empty; MARS needs candidates")
    ids = [c.get("id") for c in state.candidates]
    if any(not isinstance(item, str) or not item for item in ids):
        raise ValueError(f"task {state.task_id!r}: every entry of 'candidates' needs a non-empty string 'id'")
    if len(set(ids)) != len(ids):
        raise ValueError(f"task {state.task_id!r}: 'candidates' contains duplicate ids")


class MarsNodes:
    """Node functions bound to the graph's :class:`Resources` and agent roster."""

    def __init__(self, resources: Resources, roster: Roster = ROSTER) -> None:
        self.resources = resources
        self.roster = roster

    async def abstractor(self, state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        """Chunk + fuse the history into the hybrid input (long-term summary + last chunk)."""
        validate_input(state)
        context = context_of(runtime)
        self.roster.check_nodes(context.models, "Context.models")
        env, warnings = self.resources.env(context, state.domain, with_tools=False, node=ABSTRACTOR)
        counters = Counters()
        result = await abstract(env, state.history, context.chunk_size, context.max_history, counters)
        output = {
            "summary": result.summary,
            "recent": [entry.get("item_id") for entry in result.recent],
            "chunk_summaries": result.chunk_summaries,
            "chunks": len(result.chunk_summaries) + (1 if result.recent else 0),
        }
        return {
            "summary": result.summary,
            "recent": result.recent,
            "agents": [agent.name for agent in self.roster.agents if self.enabled(agent, context)],
            **await step_update("abstractor", state, counters, output, warnings=warnings),
        }

    def enabled(self, agent: AgentSpec, context: Context) -> bool:
        """Whether ``agent`` may run: its switch is on and its lookup (if any) has data."""
        if agent.switch and not getattr(context, agent.switch):
            return False
        return not agent.lookup or self.resources.lookup_tool(agent.lookup, context, agent.name) is not None

    async def planner(self, state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        context = context_of(runtime)
        env, warnings = self.resources.env(context, state.domain, with_tools=False, node=PLANNER)
        counters = Counters()
        roster = self.roster.only(enabled_agents(state, self.roster))
        result = await plan(env, view_of(state, env), counters, roster)
        return {
            "plan": result.agents,
            **await step_update(
                "planner", state, counters, {"agents": result.agents}, result.thinking, warnings
            ),
        }

    def agent_node(self, name: str) -> Callable[[State, Runtime[Context]], Awaitable[dict[str, Any]]]:
        """The node for execution agent ``name`` of the roster (first pass and correction rounds)."""
        agent = self.roster.agent(name)

        async def run_agent(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
            context = context_of(runtime)
            env, warnings = self.resources.env(context, state.domain, with_tools=True, node=name)
            counters = Counters()
            correction = state.corrections.get(name) if state.round > 0 else None
            view = view_of(state, env)
            looked_up = ""
            tool = (
                self.resources.lookup_tool(agent.lookup, context, agent.name, state.domain)
                if agent.lookup
                else None
            )
            if tool is not None:
                counters.tool_calls += 1
                call = {
                    "name": tool.name,
                    "args": {"user_id": state.user_id},
                    "id": "lookup",
                    "type": "tool_call",
                }
                message = await tool.ainvoke(call)
                looked_up = str(message.content)
                artifact = getattr(message, "artifact", None)
                if context.values_live_mining and artifact is not None:  # what the live fallback did
                    if artifact.source == "live":
                        counters.count("values_live_cached" if artifact.cached else "values_mined_live")
                    elif artifact.source == "none":
                        counters.count("values_live_missed")
            result = await analyse(
                env, agent, view, counters, correction, state.analyses.get(name), looked_up=looked_up
            )
            output = {"conclusions": result.conclusions, "evidence_ids": result.evidence_ids}
            if correction:
                output["correction"] = correction
            return {
                "analyses": {name: {**output, "thinking": result.thinking}},
                "done": [*state.done, name],
                **await step_update(name, state, counters, output, result.thinking, warnings),
            }

        run_agent.__name__ = name
        return run_agent

    async def reflector(self, state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        """Pass, or open a correction round for the flagged agents (bounded by the context)."""
        context = context_of(runtime)
        env, warnings = self.resources.env(context, state.domain, with_tools=False, node=REFLECTOR)
        counters = Counters()
        executed = {
            agent: state.analyses[agent]
            for agent in planned_agents(state, enabled_agents(state, self.roster))
            if agent in state.analyses
        }
        result = await reflect(env, view_of(state, env), executed, counters)
        issues = [issue.model_dump() for issue in result.issues]
        # Recorded in the STAR chain's reflection format ({"passed", "feedback"}).
        output = {"passed": result.verdict == "pass", "feedback": issues}
        update: dict[str, Any] = {
            "reflection": {"verdict": result.verdict, "issues": issues, "thinking": result.thinking}
        }
        if result.verdict == "fail" and state.round < context.max_correction_rounds:
            update.update(
                round=state.round + 1,
                done=[],
                corrections={issue.agent: issue.suggestion for issue in result.issues},
            )
        elif result.verdict == "fail":
            update.update(corrections={}, correction_bound_reached=True)
            counters.count("correction_bound_reached")
        report = await step_update("reflector", state, counters, output, result.thinking, warnings)
        return {**update, **report}

    async def ranker(self, state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        """LLM ranking grounded in the candidate-CF prior, fused by ``ranker_fusion``."""
        context = context_of(runtime)
        env, warnings = self.resources.env(context, state.domain, with_tools=False, node=RANKER)
        counters = Counters()
        candidates = [c["id"] for c in state.candidates]
        scores: dict[str, float] = {}
        cf_order: list[str] = []
        traces: list[Any] = []
        notes: dict[str, str] = {}
        hint = ""
        evidence = self.resources.evidence(context) if context.use_tools else None
        if evidence is not None and context.ranker_prior == "candidate_cf":
            history = [e["item_id"] for e in state.history if e.get("item_id")]
            prior = await candidate_prior(evidence, state.user_id, history, candidates)
            scores = {entry.id: entry.item_cf for entry in prior.scores}
            cf_order, traces, notes = list(prior.order), list(prior.queries), compact_evidence(prior)
        elif evidence is not None:
            recent_ids = [e["item_id"] for e in state.recent][-context.cf_recent_items :]
            scores, traces = await asyncio.to_thread(
                neighbour_list_scores, evidence, recent_ids, candidates, context.cf_k
            )
            cf_order = order_by_score(scores, candidates)
            hint = cf_hint(scores, cf_order)
        elif context.ranker_fusion != "llm":
            warnings.append(
                f"ranker_fusion={context.ranker_fusion} without CF evidence (use_tools off or no data_dir): "
                "LLM order used"
            )
        prior_order, prior_scores = cf_order, scores if context.ranker_prior == "candidate_cf" else None
        affinity: dict[str, float] = {}
        if context.value_weight > 0 and cf_order:
            profiles = await asyncio.to_thread(self.resources.value_profiles, context)
            if profiles is None:
                warnings.append("value_weight > 0 but no item value profiles (value_profiles or data_dir)")
            else:
                history_ids = [e["item_id"] for e in state.history if e.get("item_id")]
                affinity = candidate_affinity(history_ids, candidates, profiles)
                weight = context.value_weight
                prior_order, prior_scores = value_prior(cf_order, affinity, weight, prior_scores)
        analyses = {agent: state.analyses[agent] for agent in planned_agents_all(state)}
        shown = prior_order if context.ranker_prior == "candidate_cf" and prior_order else None
        raw, thinking = await llm_ranking(
            env, view_of(state, env), analyses, hint, counters, order=shown, notes=notes
        )
        llm_order, final, agreement = finalise(
            raw,
            candidates,
            prior_order,
            context.ranker_fusion,
            context.rrf_k,
            counters,
            context.fusion_max_weight,
            prior_scores,
        )
        output = {
            "raw_ranking": raw,
            "llm_ranking": llm_order,
            "cf_ranking": cf_order,
            "ranking": final,
            "fusion": context.ranker_fusion if cf_order else "llm",
            "fusion_details": agreement.as_dict() if agreement else {},
            "shown_order": shown or candidates,
            "cf_scores": {item: round(score, 4) for item, score in scores.items() if score},
            "cf_queries": [trace.model_dump() for trace in traces],
        }
        if affinity:
            output["value_ranking"] = prior_order
            output["value_affinity"] = {item: round(score, 4) for item, score in affinity.items()}
        return {
            "llm_ranking": llm_order,
            "cf_ranking": cf_order,
            "ranking": final,
            **await step_update("ranker", state, counters, output, thinking, warnings),
        }


def planned_agents_all(state: State) -> list[str]:
    """Every agent with an analysis, in plan order (correction rounds replaced their outputs)."""
    order = list(state.plan) + [agent for agent in state.analyses if agent not in state.plan]
    return [agent for agent in order if agent in state.analyses]
