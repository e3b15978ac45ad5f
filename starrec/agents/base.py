"""The machinery every MARS agent shares: a bounded tool loop and a structured answer.

An agent is a prompt plus a pydantic output model. :func:`ask` runs it against any LangChain
chat model:

1. **Tools.** With tools enabled the model may call ``item_cf``/``user_cf``, natively
   (``bind_tools``, LangChain tool calling) when the model implements it, otherwise through the
   ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` text protocol of
   :mod:`starrec.llm.textproto` (the same syntax STAR trajectories use). At most
   ``max_tool_calls`` calls run; a failing call is fed back to the model as an error and counted.
2. **Answer.** The final message is parsed as JSON into the output model. If that fails, a model
   that supports ``with_structured_output`` is asked once for the structure; otherwise the model
   gets one repair turn quoting the error. Still invalid: the agent's documented fallback is used.
   Every retry and fallback is counted in :class:`Counters` and ends up in the trajectory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any, Literal, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ValidationError

from starrec.contract.tool_names import ITEM_CF
from starrec.data.user_view import domain_words
from starrec.llm import textproto

OutputT = TypeVar("OutputT", bound=BaseModel)

@dataclass
class Counters:
    """What one agent call did, for the trajectory and the stats."""

    repairs: dict[str, int] = field(default_factory=dict)
    tool_calls: int = 0
    tool_errors: int = 0
    llm_calls: int = 0
    warnings: list[str] = field(default_factory=list)

    def count(self, name: str, amount: int = 1) -> None:
        if amount:
            self.repairs[name] = self.repairs.get(name, 0) + amount


@dataclass
class AgentEnv:
    """What an agent runs with: the model, the tools it may call and how to talk to both."""

    model: BaseChatModel
    tools: Sequence[BaseTool] = ()
    domain: str = "item"
    max_tool_calls: int = 2
    tool_protocol: Literal["native", "text"] = "text"
    tool_choice: Literal["auto", "required"] = "auto"
    structured: Literal["native", "json"] = "json"

    @property
    def words(self) -> dict[str, str]:
        return domain_words(self.domain)


@cache
def load_prompt(template: str | Path) -> str:
    """A prompt template: ``starrec/agents/prompts/<name>.md`` for a name, or the file a path names."""
    packaged = resources.files("starrec.agents") / "prompts" / f"{template}.md"
    path = template if isinstance(template, Path) else packaged
    if not path.is_file():
        raise FileNotFoundError(f"prompt template {str(template)!r} not found at {path}")
    return path.read_text(encoding="utf-8").strip()


def render(template: str | Path, words: dict[str, str], **values: str) -> str:
    """Fill a prompt template (``$name`` placeholders, so JSON braces need no escaping)."""
    return Template(load_prompt(template)).substitute({**words, **values})


def message_text(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)


def _tool_instructions(tools: Sequence[BaseTool], budget: int) -> str:
    """The text-protocol section of the system prompt (shared wording from :mod:`textproto`)."""
    return (
        "\n\n"
        + textproto.describe_tools([convert_to_openai_tool(tool) for tool in tools])
        + f"\nYou may make at most {budget} tool calls. Then give the final JSON answer."
    )


async def _run_tool(tools: dict[str, BaseTool], name: str, arguments: Any, counters: Counters) -> str:
    """Execute one tool call; errors come back as text for the model and are counted."""
    counters.tool_calls += 1
    if isinstance(arguments, MalformedCall):
        counters.tool_errors += 1
        counters.count("tool_call_malformed")
        example = textproto.format_tool_call(ITEM_CF, {"item_id": "ID"})
        return f"Error: malformed tool call: {arguments.error}. Write it like {example}."
    tool = tools.get(name)
    if tool is None:
        counters.tool_errors += 1
        counters.count("tool_error")
        return f"Error: unknown tool {name!r}; available: {', '.join(tools)}."
    if not isinstance(arguments, dict):
        counters.tool_errors += 1
        counters.count("tool_error")
        return f"Error: arguments of {name} must be a JSON object, got {arguments!r}."
    try:
        # Invoked as a ToolCall so the recorder sees the tool's artifact (the CFResult with its Cypher).
        result = await tool.ainvoke(
            {"name": name, "args": arguments, "id": f"call_{counters.tool_calls}", "type": "tool_call"}
        )
    except Exception as error:
        counters.tool_errors += 1
        counters.count("tool_error")
        return f"Error: {name} failed: {type(error).__name__}: {error}"
    return result if isinstance(result, str) else str(getattr(result, "content", result))


async def invoke_model(model: Any, messages: list[BaseMessage], counters: Counters) -> AIMessage:
    counters.llm_calls += 1
    response = await model.ainvoke(messages)
    if not isinstance(response, AIMessage):
        response = AIMessage(content=message_text(response))
    return response


async def tool_loop(
    env: AgentEnv, messages: list[BaseMessage], counters: Counters, *, answer_when_spent: bool = True
) -> AIMessage | None:
    """Let the model call tools until it answers or the budget is spent; returns its final message.

    ``messages`` is extended in place with every call and response, so the caller can continue
    the conversation and the recorder sees what the model saw. With ``answer_when_spent=False``
    the loop returns None once the budget is spent instead of asking for a free-text answer (the
    caller then asks for the structure directly, which saves a long generation).
    """
    tools = {tool.name: tool for tool in env.tools} if env.max_tool_calls > 0 else {}
    budget = env.max_tool_calls if tools else 0
    native = env.tool_protocol == "native" and bool(tools)
    bound = env.model.bind_tools(list(tools.values())) if native else env.model
    forced = env.model.bind_tools(list(tools.values()), tool_choice="required") if native else env.model
    if tools and not native:
        messages[0] = SystemMessage(content=message_text(messages[0]) + _tool_instructions(env.tools, budget))
    first_turn = True
    while True:
        allow_tools = budget > 0
        if not allow_tools and tools and not answer_when_spent:
            return None
        model = (
            (forced if first_turn and env.tool_choice == "required" else bound) if allow_tools else env.model
        )
        # One call per turn: generation stops at the closing tag (the parser accepts the unclosed call).
        response = await invoke_model(
            model.bind(stop=[textproto.TOOL_CALL_CLOSE]) if allow_tools else model, messages, counters
        )
        first_turn = False
        messages.append(response)
        calls = _tool_calls(response, native, counters)
        if not calls:
            return response
        if not allow_tools:
            # Called a tool after being told none are left: count it and treat the text as the answer.
            counters.count("tool_budget_exceeded")
            return response
        results: list[str] = []
        for name, arguments, call_id in calls:
            if budget <= 0:
                counters.count("tool_budget_exceeded")
                text = "Error: tool budget exhausted; this call was not executed."
            else:
                budget -= 1
                text = await _run_tool(tools, name, arguments, counters)
            if native:
                messages.append(ToolMessage(content=text, tool_call_id=call_id, name=name))
            else:
                results.append(f"<tool_response>{text}</tool_response>")
        if not native:
            messages.append(HumanMessage(content="\n".join(results)))
        if budget <= 0:
            messages.append(HumanMessage(content="No tool calls are left. Give the final JSON answer now."))


def _tool_calls(response: AIMessage, native: bool, counters: Counters) -> list[tuple[str, Any, str | None]]:
    """(name, arguments, call id) of every tool call in a model response.

    A malformed text-protocol call keeps its parse error as the "arguments" so that the model is
    told what was wrong (and the error is counted) instead of the call vanishing.
    """
    if native:
        return [
            (call["name"], call["args"], call.get("id") or f"call_{counters.tool_calls + i}")
            for i, call in enumerate(response.tool_calls)
        ]
    calls: list[tuple[str, Any, str | None]] = []
    for call in textproto.parse_tool_calls(message_text(response), repair=True):
        if call.repairs:
            counters.count("tool_call_repaired")
        calls.append((call.name, call.arguments if call.ok else MalformedCall(call.error or "invalid"), None))
    return calls


@dataclass(frozen=True)
class MalformedCall:
    """Stands in for the arguments of a ``<tool_call>`` whose body could not be parsed."""

    error: str


# Extraction fixes that are not repairs of the JSON itself (prose around it, a code fence).
_BENIGN_EXTRACTIONS = frozenset({"surrounding_text", "code_fence"})


def parse_output(
    text: str, schema: type[OutputT], counters: Counters | None = None
) -> tuple[OutputT | None, str]:
    """Parse the JSON object in ``text`` into ``schema``; returns (value or None, error message).

    JSON that needed repairing (quotes, commas, truncation) is accepted and counted as ``json_repaired``.
    """
    try:
        extraction = textproto.extract_json_with_repairs(text, expect=dict)
    except textproto.JSONExtractionError as error:
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
            text = message_text(final)
            output, error = parse_output(text, schema, counters)
            if output is not None:
                return output, text
        output, raw = await _structured_call(env, messages, schema, counters)
        if output is not None:
            return output, raw
        text = raw or text
    else:
        final = await tool_loop(env, messages, counters)
        text = message_text(final) if final is not None else ""
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
        text = message_text(retry)
        output, error = parse_output(text, schema, counters)
        if output is not None:
            return output, text
    counters.count("fallback")
    counters.warnings.append(
        f"{schema.__name__}: unusable answer after one retry ({error}); fallback used "
        f"after {time.perf_counter() - started:.1f} s"
    )
    return fallback(text), text


def format_analyses(analyses: dict[str, dict[str, Any]]) -> str:
    """The execution agents' conclusions as prompt text, in the order they ran."""
    blocks = []
    for agent, output in analyses.items():
        conclusions = output.get("conclusions") or []
        lines = "\n".join(f"  - {text}" for text in conclusions) or "  - (no conclusions)"
        blocks.append(f"{agent}:\n{lines}")
    return "\n".join(blocks) or "(no analyses)"
