"""Structured output by prompting for JSON: the path for models without constrained decoding.

``with_json_output(model, Schema)`` returns a runnable that asks for a JSON object shaped like the
schema, recovers it with :func:`starrec.llm.json_repair.extract_json_with_repairs`, validates it with
pydantic, and on failure retries once with the error shown to the model. Every repair, retry and
failure is counted in a :class:`RepairLog` and announced as a ``starrec.repair`` custom callback event
(so trajectory recorders see it per node); nothing is silently dropped.
"""

from __future__ import annotations

import functools
import json
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import adispatch_custom_event, dispatch_custom_event
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from pydantic import BaseModel, ValidationError

from starrec.llm.json_repair import JSONExtractionError, extract_json_with_repairs
from starrec.llm.messages import as_messages, join_text_blocks, openai_tools

REPAIR_EVENT = "starrec.repair"
"""Name of the custom callback event fired for every repair/retry/failure (data: kind, detail, schema)."""


class StructuredOutputError(ValueError):
    """The model did not produce valid structured output, even after the retry."""

    def __init__(self, schema_name: str, attempts: int, error: Exception, raw: str) -> None:
        snippet = raw if len(raw) <= 300 else raw[:300] + "…"
        super().__init__(
            f"No valid {schema_name} after {attempts} attempt(s): {error}. Last model text: {snippet!r}"
        )
        self.schema_name = schema_name
        self.attempts = attempts
        self.raw = raw


@dataclass
class RepairLog:
    """Thread-safe counters of structured-output repairs; ``snapshot()`` feeds run statistics."""

    counts: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, kind: str, amount: int = 1) -> None:
        with self._lock:
            self.counts[kind] += amount

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


@dataclass(frozen=True)
class LLMCapabilities:
    """What a chat model can do natively; MARS picks tool-calling and structured-output paths from it."""

    supports_tool_calling: bool
    supports_structured_output: bool
    structured_method: str


def llm_capabilities(model: BaseChatModel | Runnable) -> LLMCapabilities:
    """Capabilities of a starrec chat model (its fields); for any other LangChain model, tool calling and
    structured output count as supported when the class implements ``bind_tools`` (LangChain's default
    ``with_structured_output`` is built on it)."""
    bound = getattr(model, "bound", model)  # a RunnableBinding from .bind()/.bind_tools()
    implements_tools = type(bound).bind_tools is not BaseChatModel.bind_tools
    return LLMCapabilities(
        supports_tool_calling=bool(getattr(bound, "supports_tool_calling", implements_tools)),
        supports_structured_output=bool(getattr(bound, "supports_structured_output", implements_tools)),
        structured_method=str(getattr(bound, "structured_method", "function_calling")),
    )


# ---------------------------------------------------------------------------------------------
# Prompting for JSON
# ---------------------------------------------------------------------------------------------


def schema_json(schema: type[BaseModel] | Mapping[str, Any]) -> dict[str, Any]:
    """The JSON schema of ``schema`` (for a model class, computed once; callers must not mutate it)."""
    if isinstance(schema, Mapping):
        return dict(schema)
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return _model_schema(schema)
    raise TypeError(f"Structured output needs a pydantic model class or a JSON-schema dict, got {schema!r}")


@functools.cache
def _model_schema(model: type[BaseModel]) -> dict[str, Any]:
    # Generating a pydantic JSON schema costs about a millisecond; MARS asks for one on every call.
    return model.model_json_schema()


def schema_name(schema: type[BaseModel] | Mapping[str, Any]) -> str:
    if isinstance(schema, Mapping):
        return str(schema.get("title", "JSON object"))
    return schema.__name__


def _resolve(node: Mapping[str, Any], definitions: Mapping[str, Any]) -> Mapping[str, Any]:
    reference = node.get("$ref")
    if isinstance(reference, str):
        return definitions.get(reference.rsplit("/", 1)[-1], {})
    options = node.get("anyOf") or node.get("oneOf")
    if options:
        concrete = [option for option in options if option.get("type") != "null"]
        return _resolve(concrete[0] if concrete else options[0], definitions)
    return node


def _skeleton(node: Mapping[str, Any], definitions: Mapping[str, Any], depth: int = 0) -> Any:
    """An example value shaped like the schema (descriptions as placeholder strings)."""
    node = _resolve(node, definitions)
    if depth > 6:
        return "..."
    if "enum" in node:
        return " | ".join(str(choice) for choice in node["enum"])
    kind = node.get("type")
    if kind == "object" or "properties" in node:
        return {
            name: _skeleton(child, definitions, depth + 1)
            for name, child in node.get("properties", {}).items()
        }
    if kind == "array":
        items = dict(_resolve(node.get("items", {}), definitions))
        if "description" in node and items.get("type", "string") == "string" and "description" not in items:
            items["description"] = node["description"]
        return [_skeleton(items, definitions, depth + 1)]
    placeholders = {"integer": 0, "number": 0.0, "boolean": True}
    if kind in placeholders:
        return placeholders[kind]
    return f"<{node.get('description') or node.get('title') or 'text'}>"


def json_instructions(schema: type[BaseModel] | Mapping[str, Any], *, include_schema: bool = False) -> str:
    """The system-prompt section asking for one JSON object shaped like ``schema``.

    Small models copy a full JSON schema back instead of filling it in, so by default only an
    example shape (descriptions as placeholders) is shown.
    """
    as_json = schema_json(schema)
    example = json.dumps(_skeleton(as_json, as_json.get("$defs", {})), ensure_ascii=False)
    text = (
        "Answer with one JSON object and nothing else (no prose, no code fence). "
        f"Use exactly this shape, replacing the <placeholders> with your content:\n{example}"
    )
    if include_schema:
        text += f"\nJSON schema of the answer:\n{json.dumps(as_json, ensure_ascii=False)}"
    return text


def with_json_instructions(messages: list[BaseMessage], instructions: str) -> list[BaseMessage]:
    """Messages with ``instructions`` appended to the system turn (or a new one)."""
    if messages and isinstance(messages[0], SystemMessage):
        merged = SystemMessage(content=f"{join_text_blocks(messages[0])}\n\n{instructions}")
        return [merged, *messages[1:]]
    return [SystemMessage(content=instructions), *messages]


def retry_messages(messages: list[BaseMessage], answer: str, error: Exception) -> list[BaseMessage]:
    """The conversation plus the failed answer and what was wrong with it."""
    feedback = (
        f"Your answer could not be used: {error}\n"
        "Reply again with only the corrected JSON object, matching the schema exactly."
    )
    return [*messages, AIMessage(content=answer), HumanMessage(content=feedback)]


def validate_structured(schema: type[BaseModel] | Mapping[str, Any], value: Any) -> Any:
    """A pydantic instance (or the checked dict for a JSON-schema dict); raises ``ValueError``."""
    if isinstance(schema, Mapping):
        if schema.get("type", "object") == "object":
            if not isinstance(value, dict):
                raise ValueError(f"expected a JSON object, got {type(value).__name__}")
            missing = [key for key in schema.get("required", []) if key not in value]
            if missing:
                raise ValueError(f"missing required field(s) {missing}")
        return value
    return schema.model_validate(value)


# ---------------------------------------------------------------------------------------------
# The runnable
# ---------------------------------------------------------------------------------------------


@dataclass
class _Attempt:
    raw: AIMessage
    parsed: Any = None
    error: Exception | None = None
    repairs: tuple[str, ...] = ()


def _parse_attempt(schema: Any, raw: AIMessage) -> _Attempt:
    text = join_text_blocks(raw)
    try:
        extraction = extract_json_with_repairs(text, expect=dict if _wants_object(schema) else None)
        return _Attempt(raw, validate_structured(schema, extraction.value), None, extraction.repairs)
    except (JSONExtractionError, ValidationError, ValueError) as exc:
        return _Attempt(raw, None, exc)


def _wants_object(schema: Any) -> bool:
    return not isinstance(schema, Mapping) or schema.get("type", "object") == "object"


@dataclass
class JSONOutputParser:
    """Prompt → invoke → extract → validate → (retry once) for one schema, with repair accounting."""

    model: Runnable
    schema: Any
    include_raw: bool = False
    max_retries: int = 1
    repair_log: RepairLog | None = None
    assistant_prefix: str = ""
    """Text the model's answer is forced to start with; the model must return it as part of its answer
    (the local model supports ``"{"``)."""

    def _invoke_kwargs(self) -> dict[str, Any]:
        return {"assistant_prefix": self.assistant_prefix} if self.assistant_prefix else {}

    def _record(self, kind: str, detail: str, config: RunnableConfig | None) -> dict[str, Any]:
        if self.repair_log is not None:
            self.repair_log.add(kind)
        return {"kind": kind, "detail": detail, "schema": schema_name(self.schema)}

    def _result(self, attempt: _Attempt, attempts: int, repairs: list[str]) -> Any:
        if self.include_raw:
            return {
                "raw": attempt.raw,
                "parsed": attempt.parsed,
                "parsing_error": attempt.error,
                "repairs": repairs,
                "attempts": attempts,
            }
        if attempt.error is not None:
            raise StructuredOutputError(
                schema_name(self.schema), attempts, attempt.error, join_text_blocks(attempt.raw)
            )
        return attempt.parsed

    def _events_for(self, attempt: _Attempt, attempt_index: int) -> list[tuple[str, str]]:
        events = [("json_repair", ",".join(attempt.repairs))] if attempt.repairs else []
        if attempt.error is not None:
            kind = "structured_retry" if attempt_index < self.max_retries else "structured_failure"
            events.append((kind, str(attempt.error)[:500]))
        return events

    def invoke(self, model_input: Any, config: RunnableConfig | None = None) -> Any:
        messages = with_json_instructions(as_messages(model_input), json_instructions(self.schema))
        repairs: list[str] = []
        for attempt_index in range(self.max_retries + 1):
            raw = self.model.invoke(messages, config=config, **self._invoke_kwargs())
            attempt = _parse_attempt(self.schema, raw)
            for kind, detail in self._events_for(attempt, attempt_index):
                repairs.append(kind)
                dispatch_custom_event(REPAIR_EVENT, self._record(kind, detail, config), config=config)
            if attempt.error is None:
                break
            messages = retry_messages(messages, join_text_blocks(raw), attempt.error)
        return self._result(attempt, attempt_index + 1, repairs)

    async def ainvoke(self, model_input: Any, config: RunnableConfig | None = None) -> Any:
        messages = with_json_instructions(as_messages(model_input), json_instructions(self.schema))
        repairs: list[str] = []
        for attempt_index in range(self.max_retries + 1):
            raw = await self.model.ainvoke(messages, config=config, **self._invoke_kwargs())
            attempt = _parse_attempt(self.schema, raw)
            for kind, detail in self._events_for(attempt, attempt_index):
                repairs.append(kind)
                await adispatch_custom_event(REPAIR_EVENT, self._record(kind, detail, config), config=config)
            if attempt.error is None:
                break
            messages = retry_messages(messages, join_text_blocks(raw), attempt.error)
        return self._result(attempt, attempt_index + 1, repairs)


def with_json_output(
    model: Runnable,
    schema: type[BaseModel] | Mapping[str, Any],
    *,
    include_raw: bool = False,
    max_retries: int = 1,
    repair_log: RepairLog | None = None,
    assistant_prefix: str = "",
) -> Runnable:
    """Structured output for any chat model by prompting for JSON (see module docstring).

    Returns the validated pydantic instance (a dict for a JSON-schema dict); with ``include_raw`` a dict
    ``{"raw", "parsed", "parsing_error", "repairs", "attempts"}`` instead of raising
    :class:`StructuredOutputError`.
    """
    schema_json(schema)  # fail fast on unsupported schema types
    parser = JSONOutputParser(model, schema, include_raw, max_retries, repair_log, assistant_prefix)
    return RunnableLambda(parser.invoke, afunc=parser.ainvoke, name=f"json_output[{schema_name(schema)}]")


class TextProtocolMixin:
    """``bind_tools`` and ``with_structured_output`` for chat models that speak the text protocols.

    Mixed in before ``BaseChatModel``: tools travel to ``_generate`` as OpenAI-format dicts (the model
    describes them in the prompt and parses ``<tool_call>`` text); structured output takes the JSON path
    of :func:`with_json_output`, counting repairs in the model's ``_repairs`` log.
    """

    _repairs: RepairLog

    @property
    def repair_counts(self) -> dict[str, int]:
        return self._repairs.snapshot()

    def json_answer_prefix(self, schema: type[BaseModel] | Mapping[str, Any]) -> str:
        """Text the JSON answer is forced to start with (models that can continue a prefix override this)."""
        return ""

    def bind_tools(self, tools: Any, *, tool_choice: Any = None, **kwargs: Any) -> Runnable:
        return self.bind(tools=openai_tools(tools), tool_choice=tool_choice, **kwargs)  # type: ignore[attr-defined]

    def with_structured_output(
        self, schema: Any = None, *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable:
        return with_json_output(
            self,  # type: ignore[arg-type]
            schema,
            include_raw=include_raw,
            max_retries=kwargs.pop("max_retries", 1),
            repair_log=self._repairs,
            assistant_prefix=self.json_answer_prefix(schema),
        )
