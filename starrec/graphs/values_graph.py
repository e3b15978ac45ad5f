"""The ZOOM value miner as a LangGraph subgraph: summarise -> evaluate -> supervise (debate) -> finalise.

``supervise`` runs one debate round and loops on itself until the supervisors agree or
``max_rounds`` is reached (:func:`after_supervise`); :mod:`starrec.agents.values_miner` holds the
consensus rule and the fallback. Each node reports its step as a :data:`VALUES_STEP_EVENT`, so a
:class:`~starrec.graphs.recording.TrajectoryRecorder` built with :data:`MINER_NODES` records a run
like a MARS run. The module-level :data:`graph` is what ``langgraph.json`` exports as ``values``.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from langchain_core.callbacks import adispatch_custom_event
from langchain_core.language_models import BaseChatModel
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from pydantic import ConfigDict

from starrec.agents.env import AgentEnv, Counters
from starrec.agents.values_miner import agree, fallback_profile, merged, parse_decoding, propose, supervise
from starrec.contract.values import ValueProfile, uniform_profile
from starrec.data.user_view import HistoryEntry, UserView
from starrec.graphs.state import add_counts

GRAPH_NAME = "values"
MINER_NODES = ("summarise", "evaluate", "supervise", "finalise")
VALUES_STEP_EVENT = "values_step"
"""Custom event each miner node dispatches once (``{node, round, output, repairs, ...}``)."""


@dataclass(kw_only=True)
class MinerContext:
    """Run-time knobs of one mining run (Studio's context form)."""

    llm: str = field(default="local", metadata={"help": "Chat model spec (starrec.llm.make_chat_model)."})
    base_url: str | None = field(default=None, metadata={"help": "Endpoint for the openai backend."})
    decodings: list[str] = field(
        default_factory=lambda: ["greedy", "sample:0.7:0.9"],
        metadata={"help": "One evaluator per decoding: 'greedy' or 'sample:T:P' (temperature, top-p)."},
    )
    supervisors: int = field(
        default=2, metadata={"help": "Supervisors in the debate (decode like the evaluators, in turn)."}
    )
    max_rounds: int = field(default=3, metadata={"help": "Debate rounds before the fallback decides."})
    top_n: int = field(
        default=3, metadata={"help": "Consensus: the supervisors' top-n values must be the same set."}
    )
    tolerance: float = field(
        default=0.2, metadata={"help": "Consensus: largest weight gap allowed per value."}
    )
    max_history: int = field(default=40, metadata={"help": "Only the user's latest N items are mined."})
    summary_chars: int = field(default=120, metadata={"help": "Longest item summary (title, categories)."})
    max_new_tokens: int = field(default=512, metadata={"help": "Generation budget per LLM call."})
    constrained_decoding: Literal["none", "vllm"] = field(
        default="none",
        metadata={"help": "'vllm': answers constrained by a JSON schema with value and id enums."},
    )

    def __post_init__(self) -> None:
        if not self.decodings:
            raise ValueError("MinerContext.decodings: give at least one decoding (e.g. greedy)")
        for text in self.decodings:
            parse_decoding(text)
        if self.supervisors < 1 or self.max_rounds < 1 or self.top_n < 1:
            raise ValueError("MinerContext: supervisors, max_rounds and top_n must be >= 1")
        if not 0.0 <= self.tolerance <= 1.0:
            raise ValueError(f"MinerContext.tolerance must be in [0, 1], got {self.tolerance}")


@dataclass(kw_only=True)
class MinerInput:
    __pydantic_config__ = ConfigDict(use_attribute_docstrings=True)

    user_id: str = ""
    """The user whose values are mined."""
    domain: str = "item"
    """What items are (movie, book, ...)."""
    history: list[HistoryEntry] = field(default_factory=list)
    """The user's leakage-free history, oldest first (the graph's, for test users cut before the answer)."""


@dataclass(kw_only=True)
class MinerState(MinerInput):
    summaries: dict[str, str] = field(default_factory=dict)
    """Item id -> its short summary."""
    proposals: list[dict[str, Any] | None] = field(default_factory=list)
    """The evaluators' proposals (ValueProfile dicts; None = unusable), in decoding order."""
    round: int = 0
    """Debate rounds run."""
    answers: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    """Supervisor number -> its latest answer."""
    consensus: bool = False
    fallback: bool = False
    profile: dict[str, Any] = field(default_factory=dict)
    """The final ValueProfile (to_dict form)."""
    repairs: Annotated[dict[str, int], add_counts] = field(default_factory=dict)
    warnings: Annotated[list[str], operator.add] = field(default_factory=list)


def item_summary(entry: HistoryEntry, max_chars: int) -> str:
    """A bounded one-line summary of one item from its metadata (title and categories)."""
    text = str(entry.get("title") or entry.get("item_id", ""))
    if entry.get("categories"):
        text += f" ({', '.join(entry['categories'][:3])})"
    return text[:max_chars]


def view_text(state: MinerState) -> str:
    """The summarised history the evaluators and supervisors read."""
    recent = [
        {
            **entry,
            "title": state.summaries.get(str(entry.get("item_id")), entry.get("title", "")),
            "categories": [],
        }
        for entry in state.history
    ]
    return UserView(state.user_id, state.domain, "", recent, []).history_text()


def known_ids(state: MinerState) -> list[str]:
    return [str(entry["item_id"]) for entry in state.history if entry.get("item_id")]


class MinerNodes:
    """Node functions bound to the chat model (explicit, or built from the context on first use)."""

    def __init__(self, chat_model: BaseChatModel | None = None) -> None:
        self.chat_model = chat_model
        self._built: dict[tuple[Any, ...], BaseChatModel] = {}

    def env(self, context: MinerContext, domain: str) -> AgentEnv:
        model = self.chat_model
        if model is None:
            key = (context.llm, context.base_url, context.max_new_tokens, context.constrained_decoding)
            if key not in self._built:
                from starrec.llm import make_chat_model

                extra = (
                    {"constrained_decoding": context.constrained_decoding}
                    if context.constrained_decoding != "none"
                    else {}
                )
                self._built[key] = make_chat_model(
                    context.llm, base_url=context.base_url, max_tokens=context.max_new_tokens, **extra
                )
            model = self._built[key]
        return AgentEnv(model=model, domain=domain, max_tool_calls=0, structured="json")

    @staticmethod
    async def report(
        node: str, state: MinerState, counters: Counters, output: dict[str, Any]
    ) -> dict[str, Any]:
        await adispatch_custom_event(
            VALUES_STEP_EVENT,
            {"node": node, "round": state.round, "output": output, "repairs": dict(counters.repairs)},
        )
        return {"repairs": dict(counters.repairs), "warnings": [f"{node}: {w}" for w in counters.warnings]}

    async def summarise(self, state: MinerState, runtime: Runtime[MinerContext]) -> dict[str, Any]:
        context = runtime.context or MinerContext()
        if not state.user_id:
            raise ValueError("values miner: input field 'user_id' is empty")
        history = list(state.history)[-context.max_history :]
        summaries = {
            str(entry["item_id"]): state.summaries.get(str(entry["item_id"]))
            or item_summary(entry, context.summary_chars)
            for entry in history
            if entry.get("item_id")
        }
        counters = Counters()
        update = {"history": history, "summaries": summaries}
        return {**update, **await self.report("summarise", state, counters, {"items": len(summaries)})}

    async def evaluate(self, state: MinerState, runtime: Runtime[MinerContext]) -> dict[str, Any]:
        context = runtime.context or MinerContext()
        env, counters = self.env(context, state.domain), Counters()
        text, ids = view_text(state), known_ids(state)
        candidates = []
        for decoding in context.decodings:
            profile = await propose(env, parse_decoding(decoding), state.user_id, text, ids, counters)
            candidates.append(profile.to_dict() if profile else None)
        output = {"proposals": candidates, "decodings": list(context.decodings)}
        return {"proposals": candidates, **await self.report("evaluate", state, counters, output)}

    async def supervise(self, state: MinerState, runtime: Runtime[MinerContext]) -> dict[str, Any]:
        context = runtime.context or MinerContext()
        env, counters = self.env(context, state.domain), Counters()
        text, ids = view_text(state), known_ids(state)
        candidates = [ValueProfile.from_dict(c) if c else None for c in state.proposals]
        previous = {int(k): (ValueProfile.from_dict(v) if v else None) for k, v in state.answers.items()}
        answers: dict[str, dict[str, Any] | None] = {}
        for number in range(1, context.supervisors + 1):
            decoding = parse_decoding(context.decodings[(number - 1) % len(context.decodings)])
            profile = await supervise(
                env,
                decoding,
                number,
                context.supervisors,
                state.user_id,
                text,
                ids,
                candidates,
                previous,
                counters,
            )
            answers[str(number)] = profile.to_dict() if profile else None
        usable = [ValueProfile.from_dict(a) for a in answers.values() if a]
        consensus = len(usable) == len(answers) and agree(usable, context.top_n, context.tolerance)
        update = {"answers": answers, "round": state.round + 1, "consensus": consensus}
        output = {"answers": answers, "consensus": consensus}
        return {
            **update,
            **await self.report(
                "supervise", MinerState(**{**state.__dict__, "round": state.round + 1}), counters, output
            ),
        }

    async def finalise(self, state: MinerState, runtime: Runtime[MinerContext]) -> dict[str, Any]:
        counters = Counters()
        candidates = [ValueProfile.from_dict(c) if c else None for c in state.proposals]
        fallback = not state.consensus
        if state.consensus:
            chosen: ValueProfile | None = merged(
                state.user_id, [ValueProfile.from_dict(a) for a in state.answers.values() if a]
            )
        else:
            chosen = fallback_profile(candidates)
            counters.count("debate_fallback")
        meta = {
            "consensus": state.consensus,
            "fallback": fallback,
            "rounds": state.round,
            "evaluators": len(candidates),
        }
        if chosen is None:
            counters.count("no_usable_proposal")
            profile = uniform_profile(state.user_id, 0.0, {**meta, "empty": True})
        else:
            profile = ValueProfile(state.user_id, chosen.scores, meta)
        output = {"profile": profile.to_dict()}
        return {
            "profile": profile.to_dict(),
            "fallback": fallback,
            **await self.report("finalise", state, counters, output),
        }


def after_supervise(state: MinerState, runtime: Runtime[MinerContext]) -> Literal["supervise", "finalise"]:
    """Another debate round unless the supervisors agree or the round limit is reached."""
    context = runtime.context or MinerContext()
    return "finalise" if state.consensus or state.round >= context.max_rounds else "supervise"


def build_values_graph(
    *, chat_model: BaseChatModel | None = None, name: str = GRAPH_NAME
) -> CompiledStateGraph:
    """Compile the miner; ``chat_model`` overrides the context's ``llm`` spec."""
    nodes = MinerNodes(chat_model)
    builder = StateGraph(MinerState, context_schema=MinerContext, input_schema=MinerInput)
    builder.add_node("summarise", nodes.summarise)
    builder.add_node("evaluate", nodes.evaluate)
    builder.add_node("supervise", nodes.supervise)
    builder.add_node("finalise", nodes.finalise)
    builder.add_edge(START, "summarise")
    builder.add_edge("summarise", "evaluate")
    builder.add_edge("evaluate", "supervise")
    builder.add_conditional_edges("supervise", after_supervise, ["supervise", "finalise"])
    builder.add_edge("finalise", END)
    return builder.compile(name=name).with_config(recursion_limit=64)


graph = build_values_graph()
"""The miner ``langgraph.json`` exports: the model is built from the run context on first use."""
