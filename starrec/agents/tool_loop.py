"""The bounded tool loop every tool-using agent runs before it answers.

With tools enabled the model may call ``item_cf``/``user_cf``, natively (``bind_tools``, LangChain
tool calling) when the model implements it, otherwise through the
``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` text protocol of
:mod:`starrec.llm.toolcall_syntax` (the same syntax STAR trajectories use). At most
``max_tool_calls`` calls run; a failing call is fed back to the model as an error and counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import BaseTool

from starrec.agents.env import AgentEnv, Counters
from starrec.contract.tool_names import ITEM_CF
from starrec.llm.messages import flatten_content, openai_tools
from starrec.llm.toolcall_syntax import (
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    describe_tools,
    format_tool_call,
    parse_tool_calls,
)


def _tool_instructions(tools: Sequence[BaseTool], budget: int) -> str:
    """The text-protocol section of the system prompt (shared wording from :mod:`toolcall_syntax`)."""
    return (
        "\n\n"
        + describe_tools(openai_tools(tools))
        + f"\nYou may make at most {budget} tool calls. Then give the final JSON answer."
    )


async def _run_tool(tools: dict[str, BaseTool], name: str, arguments: Any, counters: Counters) -> str:
    """Execute one tool call; errors come back as text for the model and are counted."""
    counters.tool_calls += 1
    if isinstance(arguments, MalformedCall):
        counters.tool_errors += 1
        counters.count("tool_call_malformed")
        example = format_tool_call(ITEM_CF, {"item_id": "ID"})
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
        response = AIMessage(content=flatten_content(response))
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
    # Bound as OpenAI-format dicts, converted once per tool (any chat model's bind_tools takes them).
    schemas = openai_tools(list(tools.values())) if native else []
    bound = env.model.bind_tools(schemas) if native else env.model
    forced: Any = None
    if env.tool_choice == "required":
        forced = (
            env.model.bind_tools(schemas, tool_choice="required")
            if native
            else (env.forced_call_model or env.model)
        )
    if tools and not native:
        instructions = _tool_instructions(env.tools, budget)
        messages[0] = SystemMessage(content=flatten_content(messages[0]) + instructions)
    first_turn = True
    while True:
        allow_tools = budget > 0
        if not allow_tools and tools and not answer_when_spent:
            return None
        forcing = first_turn and allow_tools and env.tool_choice == "required"
        model = (forced if forcing else bound) if allow_tools else env.model
        # One call per turn: generation stops at the closing tag (the parser accepts the unclosed call).
        response = await invoke_model(
            model.bind(stop=[TOOL_CALL_CLOSE]) if allow_tools else model, messages, counters
        )
        if forcing and not native and env.forced_call_model is not None:
            # The constrained model wrote the call's JSON only: give it the protocol's tags.
            response = AIMessage(content=f"{TOOL_CALL_OPEN}{flatten_content(response)}{TOOL_CALL_CLOSE}")
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
    for call in parse_tool_calls(flatten_content(response), repair=True):
        if call.repairs:
            counters.count("tool_call_repaired")
        calls.append((call.name, call.arguments if call.ok else MalformedCall(call.error or "invalid"), None))
    return calls


@dataclass(frozen=True)
class MalformedCall:
    """Stands in for the arguments of a ``<tool_call>`` whose body could not be parsed."""

    error: str
