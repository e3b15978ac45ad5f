"""Constrained decoding: what an answer may contain, and how a server is told to enforce it.

A small model writes malformed JSON, ids that are not candidates and agent names that do not
exist; repairing that afterwards loses what it meant. Where the server can constrain decoding,
the answer is made valid by construction instead:

* :func:`answer_schema` turns an agent's pydantic output model into a JSON schema whose id and
  name lists are *enums* of the ids and names valid for this call (candidate ids, the roster's
  agent names), with bounded array lengths and bounded free text;
* :func:`tool_call_tag` is a vLLM ``structural_tag``: free text, but whatever follows
  ``<tool_call>`` is a JSON call of one of the bound tools with valid arguments;
* :func:`constrained` binds either to a chat model that can enforce them (``constrained_decoding
  == "vllm"``: vLLM's ``structured_outputs`` request field, xgrammar behind it) and returns None
  for one that cannot, so callers fall back to repair, and count it.

Uniqueness of ids is not expressible in JSON schema; duplicates are still removed (and counted)
by :func:`starrec.eval.repair.repair_ranking`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from langchain_core.runnables import Runnable
from pydantic import BaseModel

from starrec.llm.toolcall_syntax import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

ConstrainedDecoding = Literal["none", "vllm"]
CONSTRAINED_DECODING: tuple[str, ...] = ("none", "vllm")

MAX_TEXT_CHARS = 200
"""Longest free-text field a constrained answer may write (keeps small models from rambling)."""


def _inline_refs(node: Any, definitions: Mapping[str, Any]) -> Any:
    """The schema with every ``$ref`` replaced by its definition (enums are set per path below)."""
    if isinstance(node, dict):
        reference = node.get("$ref")
        if isinstance(reference, str):
            return _inline_refs(definitions[reference.rsplit("/", 1)[-1]], definitions)
        return {key: _inline_refs(value, definitions) for key, value in node.items() if key != "$defs"}
    if isinstance(node, list):
        return [_inline_refs(value, definitions) for value in node]
    return node


def _bound_text(node: Any, max_chars: int) -> None:
    """Give every free string a ``maxLength`` (enums and consts are already bounded)."""
    if isinstance(node, dict):
        if node.get("type") == "string" and "enum" not in node and "const" not in node:
            node.setdefault("maxLength", max_chars)
        for value in node.values():
            _bound_text(value, max_chars)
    elif isinstance(node, list):
        for value in node:
            _bound_text(value, max_chars)


def _field(schema: dict[str, Any], path: str) -> dict[str, Any]:
    """The sub-schema at a dotted path of object properties (array items are stepped through)."""
    node = schema
    for part in path.split("."):
        if node.get("type") == "array":
            node = node["items"]
        properties = node.get("properties", {})
        if part not in properties:
            raise KeyError(f"answer_schema: {path!r} is not a field of the schema ({sorted(properties)})")
        node = properties[part]
    return node


def answer_schema(
    model: type[BaseModel],
    *,
    enums: Mapping[str, Sequence[str]] | None = None,
    lengths: Mapping[str, tuple[int, int]] | None = None,
    max_text_chars: int = MAX_TEXT_CHARS,
) -> dict[str, Any]:
    """``model``'s JSON schema, constrained for one call.

    ``enums``: dotted field path -> the only values allowed (for an array field, for its items);
    ``lengths``: path of an array field -> (minItems, maxItems). Every field becomes required, so
    the server writes each one (defaults are a repair tool, not an answer).
    """
    raw = model.model_json_schema()
    schema = _inline_refs(copy.deepcopy(raw), raw.get("$defs", {}))
    _require_all(schema)
    _bound_text(schema, max_text_chars)
    for path, values in (enums or {}).items():
        target = _field(schema, path)
        choices = list(dict.fromkeys(str(value) for value in values))
        if not choices:
            raise ValueError(f"answer_schema: no allowed values for {path!r}")
        target_items = target["items"] if target.get("type") == "array" else target
        for key in ("type", "maxLength", "anyOf", "default"):
            target_items.pop(key, None)
        target_items["enum"] = choices
    for path, (low, high) in (lengths or {}).items():
        target = _field(schema, path)
        if target.get("type") != "array":
            raise ValueError(f"answer_schema: {path!r} is not an array field")
        target.pop("default", None)
        target["minItems"], target["maxItems"] = low, high
    schema.pop("title", None)
    schema["title"] = model.__name__
    return schema


def _require_all(node: Any) -> None:
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            node["required"] = list(node["properties"])
            node["additionalProperties"] = False
            for child in node["properties"].values():
                child.pop("default", None)
        for value in node.values():
            _require_all(value)
    elif isinstance(node, list):
        for value in node:
            _require_all(value)


def tool_call_schema(
    tools: Sequence[Mapping[str, Any]], argument_enums: Mapping[str, Sequence[str]] | None = None
) -> dict[str, Any]:
    """The JSON schema of one ``{"name": ..., "arguments": {...}}`` call of one of ``tools``.

    ``tools`` are OpenAI-format tool dicts (``{"type": "function", "function": {name, parameters}}``);
    ``argument_enums``: argument name -> the only values it may take in this call (an item id of the
    user's history, the user's own id), applied to every tool that has that argument.
    """
    calls = []
    for tool in tools:
        function = tool.get("function", tool)
        parameters = copy.deepcopy(dict(function.get("parameters") or {"type": "object", "properties": {}}))
        parameters.pop("title", None)
        parameters["additionalProperties"] = False
        for name, values in (argument_enums or {}).items():
            argument = parameters.get("properties", {}).get(name)
            choices = list(dict.fromkeys(str(value) for value in values))
            if argument is None or not choices:
                continue
            target = argument["items"] if argument.get("type") == "array" else argument
            target.pop("type", None)
            target["enum"] = choices
        calls.append(
            {
                "type": "object",
                "properties": {"name": {"const": function["name"]}, "arguments": parameters},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    if not calls:
        raise ValueError("tool_call_schema: no tools to constrain")
    return calls[0] if len(calls) == 1 else {"anyOf": calls}


def tool_call_tag(
    tools: Sequence[Mapping[str, Any]], argument_enums: Mapping[str, Sequence[str]] | None = None
) -> dict[str, Any]:
    """A vLLM ``structural_tag``: free text, but after ``<tool_call>`` only a valid call (see
    :func:`tool_call_schema`) and its closing tag."""
    body = tool_call_schema(tools, argument_enums)
    return {
        "type": "structural_tag",
        "structures": [{"begin": TOOL_CALL_OPEN, "schema": body, "end": TOOL_CALL_CLOSE}],
        "triggers": [TOOL_CALL_OPEN],
    }


def decoding_of(model: Any) -> str:
    """How ``model`` (or the model under a ``.bind()``) can constrain decoding: ``vllm`` or ``none``."""
    bound = getattr(model, "bound", model)
    return str(getattr(bound, "constrained_decoding", "none"))


def vllm_request_fields(
    *, json_schema: Mapping[str, Any] | None = None, structural_tag: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The ``extra_body`` of a vLLM chat request for one constraint (exactly one must be given)."""
    if (json_schema is None) == (structural_tag is None):
        raise ValueError("vllm_request_fields: give exactly one of json_schema and structural_tag")
    if json_schema is not None:
        # Without this, xgrammar lets a small model spend its budget on newlines between tokens.
        return {"structured_outputs": {"json": dict(json_schema), "disable_any_whitespace": True}}
    return {"structured_outputs": {"structural_tag": json.dumps(structural_tag)}}


def constrained(
    model: Any,
    *,
    json_schema: Mapping[str, Any] | None = None,
    structural_tag: Mapping[str, Any] | None = None,
    presence_penalty: float = 0.0,
) -> Runnable | None:
    """``model`` bound to enforce the constraint, or None when it cannot (callers then repair).

    ``presence_penalty`` (OpenAI/vLLM sampling parameter, generated tokens only) is sent when > 0.
    """
    if decoding_of(model) != "vllm":
        return None
    sampling = {"presence_penalty": presence_penalty} if presence_penalty > 0 else {}
    fields = vllm_request_fields(json_schema=json_schema, structural_tag=structural_tag)
    return model.bind(extra_body=fields, **sampling)
