"""LangChain messages <-> plain chat turns for models that speak the text tool protocol.

Models without native tool calling (the local transformers model, the scripted double) see tools
as a system-prompt section and answer with ``<tool_call>`` text; these helpers do both directions.
"""

from __future__ import annotations

import re
import threading
import uuid
import weakref
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    convert_to_messages,
)
from langchain_core.prompt_values import PromptValue
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from starrec.llm.toolcall_syntax import (
    describe_tools,
    format_tool_call,
    format_tool_response,
    parse_tool_calls,
    strip_tool_calls,
)

_TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")


def as_messages(model_input: Any) -> list[BaseMessage]:
    """Messages for anything ``BaseChatModel.invoke`` accepts (string, messages, tuples, prompt value)."""
    if isinstance(model_input, PromptValue):
        return model_input.to_messages()
    if isinstance(model_input, str):
        return [HumanMessage(content=model_input)]
    return list(convert_to_messages(model_input))


def join_text_blocks(message: BaseMessage) -> str:
    """The message's string content, or its ``type == "text"`` blocks joined (other blocks dropped)."""
    if isinstance(message.content, str):
        return message.content
    parts = []
    for block in message.content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, Mapping) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
    return "".join(parts)


def flatten_content(message: BaseMessage) -> str:
    """Every part of the message's content as text: strings, any block's ``"text"``, ``str()`` of the rest.

    The agents read answers this way (a block of any type that carries text counts); contrast
    :func:`join_text_blocks`, which keeps only text blocks.
    """
    content = message.content
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)


def openai_tools(tools: Sequence[Any]) -> list[dict[str, Any]]:
    """OpenAI-format tool dicts for LangChain tools, pydantic models, functions or dicts.

    A ``BaseTool``'s schema is converted once per tool object: the agents bind the same CF tools
    on every call, and LangChain's conversion (JSON-schema dereferencing) cost about a millisecond
    and a half per MARS run. The dicts returned are shared; treat them as read-only.
    """
    return [
        _tool_schema(tool) if isinstance(tool, BaseTool) else convert_to_openai_tool(tool) for tool in tools
    ]


_TOOL_SCHEMAS: dict[int, tuple[weakref.ref[BaseTool], dict[str, Any]]] = {}
_TOOL_SCHEMAS_LOCK = threading.Lock()


def _tool_schema(tool: BaseTool) -> dict[str, Any]:
    key = id(tool)
    with _TOOL_SCHEMAS_LOCK:
        cached = _TOOL_SCHEMAS.get(key)
    if cached is not None and cached[0]() is tool:
        return cached[1]
    schema = convert_to_openai_tool(tool)
    with _TOOL_SCHEMAS_LOCK:
        _TOOL_SCHEMAS[key] = (weakref.ref(tool, lambda _, key=key: _TOOL_SCHEMAS.pop(key, None)), schema)
    return schema


def tool_names(tools: Sequence[Mapping[str, Any]] | None) -> list[str]:
    return [tool.get("function", tool)["name"] for tool in tools or ()]


def tool_parameters(tools: Sequence[Mapping[str, Any]] | None) -> dict[str, list[str]]:
    """Tool name -> parameter names, required ones first (for repairing scalar arguments)."""
    parameters: dict[str, list[str]] = {}
    for tool in tools or ():
        function = tool.get("function", tool)
        schema = function.get("parameters", {})
        required = list(schema.get("required", []))
        parameters[function["name"]] = required + [
            name for name in schema.get("properties", {}) if name not in required
        ]
    return parameters


def to_chat_turns(
    messages: Sequence[BaseMessage], tools: Sequence[Mapping[str, Any]] | None = None
) -> list[dict[str, str]]:
    """``[{"role", "content"}]`` for a chat template, tools described in the system turn.

    Assistant tool calls are written back in ``<tool_call>`` form and tool results become a user
    turn of ``<tool_response>`` blocks (Hermes convention), so the model sees its own protocol.
    """
    turns: list[dict[str, str]] = []
    for message in messages:
        text = join_text_blocks(message)
        if isinstance(message, SystemMessage):
            turns.append({"role": "system", "content": text})
        elif isinstance(message, AIMessage):
            calls = [format_tool_call(call["name"], call["args"]) for call in message.tool_calls]
            turns.append({"role": "assistant", "content": "\n".join(part for part in [text, *calls] if part)})
        elif isinstance(message, ToolMessage):
            response = format_tool_response(text)
            if turns and turns[-1]["role"] == "user" and turns[-1]["content"].startswith("<tool_response>"):
                turns[-1]["content"] += "\n" + response
            else:
                turns.append({"role": "user", "content": response})
        else:
            turns.append({"role": "user", "content": text})
    if tools:
        section = describe_tools(tools)
        if turns and turns[0]["role"] == "system":
            turns[0] = {"role": "system", "content": f"{turns[0]['content']}\n\n{section}"}
        else:
            turns.insert(0, {"role": "system", "content": section})
    return turns


def _tool_schemas(tools: Sequence[Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    return {
        tool.get("function", tool)["name"]: tool.get("function", tool)
        .get("parameters", {})
        .get("properties", {})
        for tool in tools or ()
    }


def coerce_arguments(arguments: dict[str, Any], properties: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """Scalars cast to the declared JSON type (``{"item_id": 50}`` for a string id); (arguments, changed)."""
    coerced = dict(arguments)
    changed = False
    for name, value in arguments.items():
        spec = properties.get(name)
        declared = spec.get("type") if isinstance(spec, Mapping) else None
        new_value = value
        if declared == "string" and isinstance(value, int | float) and not isinstance(value, bool):
            new_value = str(value)
        elif declared == "integer" and isinstance(value, str) and value.strip().lstrip("-").isdigit():
            new_value = int(value)
        if new_value is not value:
            coerced[name], changed = new_value, True
    return coerced, changed


def ai_message_from_text(
    text: str,
    tools: Sequence[Mapping[str, Any]] | None = None,
    **message_fields: Any,
) -> AIMessage:
    """An ``AIMessage`` for model text; with tools bound, ``<tool_call>`` blocks become ``tool_calls``.

    Bodies are repaired when possible (repairs are listed in ``response_metadata["tool_call_repairs"]``);
    unparseable bodies or unknown tool names become ``invalid_tool_calls`` so the caller can count them.
    """
    if not tools:
        return AIMessage(content=text, **message_fields)
    allowed = set(tool_names(tools))
    schemas = _tool_schemas(tools)
    tool_calls: list[dict[str, Any]] = []
    invalid: list[dict[str, Any]] = []
    repairs: list[str] = []
    for parsed in parse_tool_calls(text, repair=True, tool_parameters=tool_parameters(tools)):
        call_id = f"call_{uuid.uuid4().hex[:12]}"
        error = parsed.error
        if error is None and parsed.name not in allowed:
            error = f"unknown tool {parsed.name!r}; available: {sorted(allowed)}"
        if error is None:
            arguments, coerced = coerce_arguments(parsed.arguments, schemas.get(parsed.name, {}))
            tool_calls.append({"name": parsed.name, "args": arguments, "id": call_id, "type": "tool_call"})
            repairs.extend([*parsed.repairs, *(["coerced_types"] if coerced else [])])
        else:
            invalid.append(
                {
                    "name": parsed.name or None,
                    "args": parsed.raw,
                    "id": call_id,
                    "error": error,
                    "type": "invalid_tool_call",
                }
            )
    metadata = dict(message_fields.pop("response_metadata", {}) or {})
    if repairs:
        metadata["tool_call_repairs"] = repairs
    content = strip_tool_calls(text) if (tool_calls or invalid) else text
    return AIMessage(
        content=content,
        tool_calls=tool_calls,
        invalid_tool_calls=invalid,
        response_metadata=metadata,
        **message_fields,
    )


@lru_cache(maxsize=4096)
def approximate_token_count(text: str) -> int:
    """Words and punctuation marks: a tokenizer-free stand-in used by the scripted model.

    Cached: every agent of a run sends the same shared history text, and counting it again and
    again was the scripted model's largest cost in the overhead benchmark."""
    return len(_TOKEN_PATTERN.findall(text))


def message_to_record(message: BaseMessage) -> dict[str, Any]:
    """A JSON-friendly ``{"role", "content"[, "tool_calls"]}`` for logs and recordings."""
    record: dict[str, Any] = {"role": message.type, "content": join_text_blocks(message)}
    if isinstance(message, AIMessage) and message.tool_calls:
        record["tool_calls"] = [{"name": call["name"], "args": call["args"]} for call in message.tool_calls]
    if isinstance(message, ToolMessage):
        record["tool_call_id"] = message.tool_call_id
    return record
