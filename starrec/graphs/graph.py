"""The compiled MARS graph: Plan -> Execute -> Reflect -> (Correct) -> Rank.

``abstractor -> planner -> planned agents (in order) -> reflector -> [flagged agents with
suggestions, bounded] -> ranker -> END``. The module-level :data:`graph` (no checkpointer) is what
``langgraph.json`` exports for ``langgraph dev`` / Studio; apps call :func:`build_mars_graph` with
their own chat model, evidence source and checkpointer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Checkpointer, Command, RetryPolicy

from starrec.contract.roster import ABSTRACTOR, PLANNER, RANKER, REFLECTOR, ROSTER, Roster
from starrec.graphs.context import Context
from starrec.graphs.nodes import MarsNodes
from starrec.graphs.resources import Resources
from starrec.graphs.routing import Routes, advanced, context_of
from starrec.graphs.state import InputState, State
from starrec.tools.base import EvidenceSource
from starrec.tools.value_profiles import ItemValueProfiles

GRAPH_NAME = "mars"


def is_transient(error: Exception) -> bool:
    """Failures worth another attempt: timeouts, refused or reset connections, 429 and 5xx answers.

    The LangChain/OpenAI stack raises its own classes (``openai.APIConnectionError`` is neither a
    ``TimeoutError`` nor a ``ConnectionError``), so they are named here; programming errors are not.
    """
    if isinstance(error, TimeoutError | ConnectionError):
        return True
    try:
        import httpx
        import openai
    except ImportError:  # the endpoint extra is not installed: only the builtin classes apply
        return False
    if isinstance(error, openai.APIConnectionError | openai.RateLimitError | openai.InternalServerError):
        return True  # APITimeoutError is an APIConnectionError
    if isinstance(error, openai.APIStatusError):
        return error.status_code in (408, 409, 429) or error.status_code >= 500
    return isinstance(error, httpx.TransportError)


# Every retry is visible in the run's repairs as ``llm_error`` (the recorder counts failed attempts).
LLM_RETRY = RetryPolicy(max_attempts=3, initial_interval=1.0, backoff_factor=2.0, retry_on=is_transient)


Node = Callable[[State, Runtime[Context]], Awaitable[dict[str, Any]]]
Router = Callable[[State, Context], str]


def routed(
    node: Node, route: Router, destinations: Sequence[str]
) -> Callable[[State, Runtime[Context]], Awaitable[Command[str]]]:
    """``node`` that also names the next node: its update plus ``route`` of the state it leads to.

    LangGraph draws ``destinations`` but does not enforce them, so a route outside them is an error
    here (it would otherwise run on until the recursion limit).
    """
    allowed = frozenset(destinations)

    async def run(state: State, runtime: Runtime[Context]) -> Command[str]:
        update = await node(state, runtime)
        goto = route(advanced(state, update), context_of(runtime))
        if goto not in allowed:
            raise RuntimeError(
                f"{getattr(route, '__name__', 'router')} routed {run.__name__} to {goto!r}, which is not "
                f"one of its declared destinations {sorted(allowed)}: fix the router or the graph"
            )
        return Command(update=update, goto=goto)

    run.__name__ = getattr(node, "__name__", "node")
    return run


def add_routed_node(
    builder: StateGraph, name: str, node: Node, route: Router, destinations: Sequence[str]
) -> None:
    """A node that routes itself (:func:`routed`), retried on transient LLM errors, drawn with its
    destinations."""
    builder.add_node(
        name, routed(node, route, destinations), retry_policy=LLM_RETRY, destinations=tuple(destinations)
    )


def recursion_limit(context: Context | None = None, roster: Roster = ROSTER) -> int:
    """Supersteps one run can need: abstractor, planner, every agent, reflector, ranker, plus per
    correction round every agent again and a reflector; doubled as a safety margin."""
    rounds = (context or Context()).max_correction_rounds
    agents = len(roster.agents)
    return 2 * (agents + 4 + (agents + 1) * rounds) + 2


def build_mars_graph(
    context: Context | None = None,
    *,
    chat_model: BaseChatModel | None = None,
    evidence: EvidenceSource | None = None,
    chat_models: Mapping[str, BaseChatModel] | None = None,
    checkpointer: Checkpointer = None,
    name: str = GRAPH_NAME,
    roster: Roster = ROSTER,
    value_profiles: ItemValueProfiles | None = None,
) -> CompiledStateGraph:
    """Compile the MARS graph.

    ``chat_model``/``evidence`` override what the run context would build lazily (``llm`` spec,
    ``data_dir``); ``chat_models`` gives single nodes their own instance (``{"planner": model}``,
    names checked against the roster), over ``Context.models``. ``context`` only sets the default
    recursion limit; pass the run's context to ``invoke(..., context=...)``.
    ``roster`` lists the execution agents (default: the house four). ``value_profiles``: item value
    profiles for the ranker's value prior (``Context.value_weight``), over ``Context.value_profiles``.
    """
    roster.check_nodes(chat_models or {}, "build_mars_graph(chat_models=...)")
    resources = Resources(
        chat_model=chat_model, evidence=evidence, chat_models=chat_models, value_profiles=value_profiles
    )
    nodes = MarsNodes(resources, roster)
    routes = Routes(roster)
    agents = roster.names
    after_planning = (*agents, REFLECTOR, RANKER)
    builder = StateGraph(State, context_schema=Context, input_schema=InputState)
    builder.add_edge(START, ABSTRACTOR)
    after_abstractor = (PLANNER, *after_planning)
    add_routed_node(builder, ABSTRACTOR, nodes.abstractor, routes.after_abstractor, after_abstractor)
    add_routed_node(builder, PLANNER, nodes.planner, routes.to_next_agent, after_planning)
    for agent in agents:
        others = [node for node in after_planning if node != agent]
        add_routed_node(builder, agent, nodes.agent_node(agent), routes.to_next_agent, others)
    add_routed_node(builder, REFLECTOR, nodes.reflector, routes.after_reflector, (*agents, RANKER))
    builder.add_node(RANKER, nodes.ranker, retry_policy=LLM_RETRY)
    builder.add_edge(RANKER, END)
    compiled = builder.compile(checkpointer=checkpointer, name=name)
    return compiled.with_config(recursion_limit=recursion_limit(context, roster))


def final_output(state: dict[str, Any]) -> dict[str, Any]:
    """The fields an app usually wants from a finished run."""
    keys = ("task_id", "ranking", "llm_ranking", "cf_ranking", "plan", "reflection", "repairs", "warnings")
    return {key: state.get(key) for key in keys}


graph = build_mars_graph()
"""The graph ``langgraph.json`` exports: the model is built from the run context on first use."""
