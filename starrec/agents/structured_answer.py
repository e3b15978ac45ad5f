"""An agent's structured answer: constrained where the server can, else parsed, retried once, or the
agent's fallback.

:func:`ask` runs one agent turn: the tool loop (if the agent has tools), then the final message is
parsed as JSON into the agent's output model.

* On a server that constrains decoding (:mod:`starrec.llm.constraints`), tool calls are written
  under a structural tag and the answer under the agent's JSON schema with enums of the valid ids
  and names: valid by construction, one call (``constrained_answer`` counts them).
* Otherwise, if parsing fails, a model that supports ``with_structured_output`` is asked once for
  the structure, or the model gets one repair turn quoting the error.

Still invalid: the agent's documented fallback is used. Every retry and fallback is counted in
:class:`~starrec.agents.env.Counters` and ends up in the trajectory.

Prompts are laid out for prefix caching: the ``shared`` text (the user's history, the same for
every agent of a run) opens the system turn, so a server with prefix caching computes it once per
run, not once per agent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ValidationError

from starrec.agents.env import AgentEnv, Counters
from starrec.agents.tool_loop import invoke_model, tool_loop
from starrec.llm.constraints import constrained, decoding_of, tool_call_schema, tool_call_tag
from starrec.llm.json_repair import JSONExtractionError, extract_json_with_repairs
from starrec.llm.messages import flatten_content

OutputT = TypeVar("OutputT", bound=BaseModel)


# Extraction fixes that are not repairs of the JSON itself (prose around it, a code fence).
_BENIGN_EXTRACTIONS = frozenset({"surrounding_text", "code_fence"})


def parse_output(
    text: str, schema: type[OutputT], counters: Counters | None = None
) -> tuple[OutputT | None, str]:
    """Parse the JSON object in ``text`` into ``schema``; returns (value or None, error message).

    JSON that needed repairing (quotes, commas, truncation) is accepted and counted as ``json_repaired``.
    """
    try:
        extraction = extract_json_with_repairs(text, expect=dict)
    except JSONExtractionError as error:
        return None, str(error).split(". Model text was")[0]
    try:
        value = schema.model_validate(extraction.value)
    except ValidationError as error:
        first = error.errors()[0]
        return (
            None,
            f"the JSON does not match the schema: {first['msg']} at {'.'.join(map(str, first['loc']))}",
        )
    if counters is not None and set(extraction.repairs) - _BENIGN_EXTRACTIONS:
        counters.count("json_repaired")
    return value, ""


_STRUCTURED: dict[tuple[int, type], tuple[BaseChatModel, Any]] = {}


def structured_runnable(model: BaseChatModel, schema: type[BaseModel]) -> Any:
    """``model.with_structured_output(schema)``, built once per (model, schema): building it renders
    the JSON schema, which costs more than the rest of a scripted run."""
    key = (id(model), schema)
    cached = _STRUCTURED.get(key)
    if cached is None or cached[0] is not model:
        cached = (model, model.with_structured_output(schema))
        _STRUCTURED[key] = cached
    return cached[1]


async def _structured_call(
    env: AgentEnv, messages: list[BaseMessage], schema: type[OutputT], counters: Counters
) -> tuple[OutputT | None, str]:
    """``with_structured_output`` once; returns (object or None, the raw text when it failed)."""
    counters.llm_calls += 1
    try:
        result = await structured_runnable(env.model, schema).ainvoke(messages)
    except Exception as error:
        counters.warnings.append(f"with_structured_output failed: {type(error).__name__}: {error}")
        return None, str(getattr(error, "raw", "") or "")
    try:
        return (result if isinstance(result, schema) else schema.model_validate(result)), ""
    except ValidationError as error:
        return None, str(error)


ANSWER_PRESENCE_PENALTY = 0.6
RANKING_PRESENCE_PENALTY = 1.5
"""Stronger for the ranker: every id should appear once, and JSON schema cannot say so."""

SHARED_CONTEXT_HEADER = "You are one agent of MARS, a team of agents that recommends to one user."


def agent_messages(system: str, user: str, shared: str = "") -> list[BaseMessage]:
    """``[system, user]`` with the run's shared text first, so every agent's prompt has one prefix."""
    if shared:
        system = f"{SHARED_CONTEXT_HEADER}\n\n{shared}\n\n---\nYour role:\n{system}"
    return [SystemMessage(content=system), HumanMessage(content=user)]


@dataclass(frozen=True)
class Constraint:
    """What this call's answer and tool calls may contain (see :mod:`starrec.llm.constraints`)."""

    answer: dict[str, Any]
    """The JSON schema of the answer, enums included."""
    tool_arguments: dict[str, list[str]] = field(default_factory=dict)
    """Tool argument name -> the values valid in this call (for the tool-call structural tag)."""
    presence_penalty: float = ANSWER_PRESENCE_PENALTY
    """Sampling penalty on tokens the answer already used. Under a grammar only the free choices
    feel it (which id next, which word), not the forced JSON punctuation, so a small model stops
    writing one id twenty times or one conclusion six times."""


async def _constrained_ask(
    env: AgentEnv,
    messages: list[BaseMessage],
    schema: type[OutputT],
    constraint: Constraint,
    answer_model: Any,
    counters: Counters,
) -> tuple[OutputT | None, str, str]:
    """Tool calls under a structural tag, then (unless the model already answered validly) one
    answer under the JSON schema. Returns (output or None, raw text, error)."""
    if env.tools and env.max_tool_calls > 0:
        tool_env = env
        if env.tool_protocol == "text":
            specs = [convert_to_openai_tool(tool) for tool in env.tools]
            tag = tool_call_tag(specs, constraint.tool_arguments)
            call = tool_call_schema(specs, constraint.tool_arguments)
            tool_env = replace(
                env,
                model=constrained(env.model, structural_tag=tag),
                forced_call_model=constrained(env.model, json_schema=call),
            )
        final = await tool_loop(tool_env, messages, counters, answer_when_spent=False)
        if final is not None:
            text = flatten_content(final)
            output, _ = parse_output(text, schema, counters)
            if output is not None:
                return output, text, ""
            messages.append(HumanMessage(content="Now give your final answer as the JSON object only."))
    counters.count("constrained_answer")
    retry = await invoke_model(answer_model, messages, counters)
    text = flatten_content(retry)
    output, error = parse_output(text, schema, counters)
    return output, text, error


async def ask(
    env: AgentEnv,
    system: str,
    user: str,
    schema: type[OutputT],
    fallback: Callable[[str], OutputT],
    counters: Counters,
    *,
    shared: str = "",
    constraint: Callable[[], Constraint] | None = None,
) -> tuple[OutputT, str]:
    """Run one agent turn and return (validated output, the model's final raw text).

    ``shared``: the run's common prompt text (opens the system turn); ``constraint``: builds the
    answer's schema with this call's enums, called only when the model's server can enforce it.
    """
    messages = agent_messages(system, user, shared)
    started = time.perf_counter()
    if constraint is not None and decoding_of(env.model) != "none":
        built = constraint()
        answer_model = constrained(
            env.model, json_schema=built.answer, presence_penalty=built.presence_penalty
        )
        output, text, error = await _constrained_ask(env, messages, schema, built, answer_model, counters)
        if output is not None:
            return output, text
    elif env.structured == "native":
        # Tools first (if any), then the structure is asked for directly: one constrained call
        # instead of a free-text answer plus a conversion. The backend repairs/retries it itself.
        text, error = "", "with_structured_output gave no valid object"
        final = None
        if env.tools and env.max_tool_calls > 0:
            final = await tool_loop(env, messages, counters, answer_when_spent=False)
        if final is not None:
            text = flatten_content(final)
            output, error = parse_output(text, schema, counters)
            if output is not None:
                return output, text
        output, raw = await _structured_call(env, messages, schema, counters)
        if output is not None:
            return output, raw
        text = raw or text
    else:
        final = await tool_loop(env, messages, counters)
        text = flatten_content(final) if final is not None else ""
        output, error = parse_output(text, schema, counters)
        if output is not None:
            return output, text
        counters.count("json_retry")
        messages.append(
            HumanMessage(
                content=f"Your answer could not be used: {error}. Reply with only the JSON object, "
                f"keys: {', '.join(schema.model_fields)}."
            )
        )
        retry = await invoke_model(env.model, messages, counters)
        messages.append(retry)
        text = flatten_content(retry)
        output, error = parse_output(text, schema, counters)
        if output is not None:
            return output, text
    counters.count("fallback")
    counters.warnings.append(
        f"{schema.__name__}: unusable answer after one retry ({error}); fallback used "
        f"after {time.perf_counter() - started:.1f} s"
    )
    return fallback(text), text
