"""The text tool-call protocol: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``.

Hermes/Qwen style, so TRL's tool handling and vLLM's ``hermes`` parser read it, with
``<tool_response>...</tool_response>`` for the answer. The MARS agents (text protocol), the local
and scripted chat models, the STAR serialiser and parser, the GRPO rollouts and the STAR serving
loop all write and read calls through this module; do not re-implement it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from starrec.llm.json_repair import JSONExtractionError, extract_json_with_repairs

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
TOOL_RESPONSE_OPEN = "<tool_response>"
TOOL_RESPONSE_CLOSE = "</tool_response>"

_TOOL_CALL_PATTERN = re.compile(r"<tool_call>(.*?)(</tool_call>|(?=<tool_call>)|\Z)", re.DOTALL)


def format_tool_call(name: str, arguments: Mapping[str, Any] | None = None, *, compact: bool = False) -> str:
    """``<tool_call>{"name": name, "arguments": {...}}</tool_call>``, name first.

    ``compact`` drops the spaces after ``:`` and ``,`` (the STAR chain, where every token is generated).
    """
    if not name:
        raise ValueError("format_tool_call needs a non-empty tool name.")
    separators = (",", ":") if compact else None
    body = json.dumps(
        {"name": name, "arguments": dict(arguments or {})}, ensure_ascii=False, separators=separators
    )
    return f"{TOOL_CALL_OPEN}{body}{TOOL_CALL_CLOSE}"


def format_tool_response(content: str | Mapping[str, Any] | Sequence[Any]) -> str:
    """``<tool_response>...</tool_response>``; non-string content is written as JSON."""
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    return f"{TOOL_RESPONSE_OPEN}{text}{TOOL_RESPONSE_CLOSE}"


@dataclass(slots=True)
class ParsedToolCall:
    """One ``<tool_call>`` found in model text: the only parsed-call type (agents, chain parser, serving).

    ``error`` is set (and ``name``/``arguments`` are best effort) when the body is not a valid call.
    The STAR chain parser fills ``phase`` and ``response`` and rejects tools outside the roster's.
    """

    name: str
    arguments: dict[str, Any]
    raw: str = field(default="", repr=False)
    """The call as written, tags included (the closing tag only if it was there)."""
    error: str | None = None
    closed: bool = True
    start: int = 0
    """Character offset of the ``<tool_call>`` tag in the text parsed."""
    end: int = 0
    repairs: tuple[str, ...] = ()
    phase: str = ""
    """The STAR phase the call sits in (chain parser only)."""
    response: str | None = None
    """The ``<tool_response>`` that followed it (chain parser only)."""

    @property
    def ok(self) -> bool:
        return self.error is None


def _tool_call_from_body(
    body: str, repair: bool, tool_parameters: Mapping[str, Sequence[str]] | None = None
) -> tuple[str, dict[str, Any], str | None, tuple[str, ...]]:
    """(name, arguments, error, repairs) for the JSON body of one ``<tool_call>``."""
    stripped = body.strip()
    if not stripped:
        return "", {}, "empty <tool_call> body", ()
    repairs: tuple[str, ...] = ()
    try:
        payload = json.loads(stripped)
    except json.JSONDecodeError as exc:
        if not repair:
            return "", {}, f"<tool_call> body is not valid JSON: {exc}", ()
        try:
            extraction = extract_json_with_repairs(stripped, expect=dict)
        except JSONExtractionError as repair_error:
            return "", {}, f"<tool_call> body is not valid JSON even after repair: {repair_error}", ()
        payload, repairs = extraction.value, extraction.repairs
    if not isinstance(payload, dict):
        return "", {}, f"<tool_call> body must be a JSON object, got {type(payload).__name__}", repairs
    name = payload.get("name")
    if not isinstance(name, str) or not name:
        return "", {}, '<tool_call> body has no string "name"', repairs
    arguments = payload.get("arguments", payload.get("parameters"))
    if isinstance(arguments, str) and repair:
        try:
            arguments = json.loads(arguments)
            repairs = (*repairs, "arguments_as_string")
        except json.JSONDecodeError:
            pass
    if arguments is None and repair:
        arguments, repairs = {}, (*repairs, "missing_arguments")
    parameters = (tool_parameters or {}).get(name) or ()
    if repair and parameters and isinstance(arguments, str | int | float):
        # {"name": "item_cf", "arguments": 50}: small models pass the lone value; bind it to the first
        # parameter of the tool's signature.
        arguments, repairs = {parameters[0]: arguments}, (*repairs, "scalar_arguments")
    if not isinstance(arguments, dict):
        return name, {}, f'<tool_call> "{name}" needs an "arguments" object', repairs
    return name, arguments, None, repairs


def parse_tool_calls(
    text: str, *, repair: bool = False, tool_parameters: Mapping[str, Sequence[str]] | None = None
) -> list[ParsedToolCall]:
    """Every ``<tool_call>`` in ``text``, in order.

    A call whose closing tag is missing (generation stopped at the ``</tool_call>`` stop string, or
    the next ``<tool_call>`` starts) is still parsed, with ``closed=False``. Bodies must be strict JSON
    unless ``repair=True``, which runs :func:`extract_json_with_repairs` on them and records the repairs;
    ``tool_parameters`` (tool name -> parameter names, required first) then also lets a scalar
    ``"arguments"`` value bind to the tool's first parameter.
    """
    calls: list[ParsedToolCall] = []
    for match in _TOOL_CALL_PATTERN.finditer(text):
        name, arguments, error, repairs = _tool_call_from_body(match.group(1), repair, tool_parameters)
        calls.append(
            ParsedToolCall(
                name=name,
                arguments=arguments,
                raw=match.group(0),
                error=error,
                closed=match.group(2) == TOOL_CALL_CLOSE,
                start=match.start(),
                end=match.end(),
                repairs=repairs,
            )
        )
    return calls


def strip_tool_calls(text: str) -> str:
    """``text`` without its ``<tool_call>`` blocks (the prose part of an answer)."""
    return _TOOL_CALL_PATTERN.sub("", text).strip()


def describe_tools(tools: Iterable[Mapping[str, Any]]) -> str:
    """A system-prompt section that teaches a model the text tool-call protocol.

    ``tools`` are OpenAI-format tool dicts (``{"type": "function", "function": {...}}``) or bare
    function dicts (``{"name", "description", "parameters"}``).
    """
    functions = [tool.get("function", tool) for tool in tools]
    if not functions:
        raise ValueError("describe_tools needs at least one tool.")
    signatures = "\n".join(json.dumps(function, ensure_ascii=False) for function in functions)
    example = format_tool_call(functions[0]["name"], _example_arguments(functions[0]))
    return (
        "You can call tools to gather evidence. The tools are described by these JSON signatures:\n"
        f"<tools>\n{signatures}\n</tools>\n"
        "To call a tool, write a line like the example below (a JSON object with the tool name and its "
        "arguments, inside tool_call tags), then stop; the result comes back inside tool_response tags.\n"
        f"Example:\n{example}\n"
        "When you have enough evidence, answer without calling a tool."
    )


def _example_arguments(function: Mapping[str, Any]) -> dict[str, Any]:
    properties = function.get("parameters", {}).get("properties", {})
    placeholders = {"integer": 10, "number": 1.0, "boolean": True, "array": [], "object": {}}
    return {
        name: placeholders.get(spec.get("type", "string"), "...") if isinstance(spec, dict) else "..."
        for name, spec in properties.items()
    }
