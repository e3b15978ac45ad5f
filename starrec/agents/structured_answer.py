"""An agent's structured answer: parse the model's JSON, retry once, else the agent's fallback.

:func:`ask` runs one agent turn: the tool loop (if the agent has tools), then the final message is
parsed as JSON into the agent's output model. If that fails, a model that supports
``with_structured_output`` is asked once for the structure; otherwise the model gets one repair
turn quoting the error. Still invalid: the agent's documented fallback is used. Every retry and
fallback is counted in :class:`~starrec.agents.env.Counters` and ends up in the trajectory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, ValidationError

from starrec.agents.env import AgentEnv, Counters
from starrec.agents.tool_loop import invoke_model, tool_loop
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


async def ask(
    env: AgentEnv,
    system: str,
    user: str,
    schema: type[OutputT],
    fallback: Callable[[str], OutputT],
    counters: Counters,
) -> tuple[OutputT, str]:
    """Run one agent turn and return (validated output, the model's final raw text)."""
    messages: list[BaseMessage] = [SystemMessage(content=system), HumanMessage(content=user)]
    started = time.perf_counter()
    if env.structured == "native":
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
