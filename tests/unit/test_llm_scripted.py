"""Scripted chat model: replay, tools, structured output repair/retry, failures, latency, recording."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from pydantic import BaseModel, Field

from starrec.llm import LLMUsageCallback, StructuredOutputError, llm_capabilities
from starrec.llm.scripted import (
    RecordingChatModel,
    ScriptedChatModel,
    ScriptExhaustedError,
    load_recording,
)
from starrec.llm.toolcall_syntax import format_tool_call


@tool
def item_cf(item_id: str, k: int = 10) -> str:
    """Items most often co-consumed with ``item_id``."""
    return f"neighbours of {item_id}"


@tool
def user_cf(user_id: str) -> str:
    """What users similar to ``user_id`` liked."""
    return f"similar to {user_id}"


class Ranking(BaseModel):
    ranking: list[str] = Field(description="candidate ids, best first")
    reason: str = Field(description="one sentence")


def test_list_is_replayed_in_order_and_logged() -> None:
    model = ScriptedChatModel(responses=["first", "second"])
    assert model.invoke("a").content == "first"
    assert model.invoke([("system", "s"), ("user", "b")]).content == "second"
    assert [call.index for call in model.calls] == [1, 2]
    assert model.calls[1].prompt == "s\nb"
    assert isinstance(model.calls[1].messages[0], SystemMessage)
    assert model.calls[1].response.content == "second"


def test_exhausted_script_raises_clearly_unless_cycling() -> None:
    model = ScriptedChatModel(responses=["only"])
    model.invoke("a")
    with pytest.raises(ScriptExhaustedError, match="only 1 response"):
        model.invoke("b")
    assert model.calls[-1].error.startswith("ScriptExhaustedError")
    cycling = ScriptedChatModel(responses=["x", "y"], cycle=True)
    assert [cycling.invoke("q").content for _ in range(5)] == ["x", "y", "x", "y", "x"]


def test_callable_script_sees_the_messages() -> None:
    model = ScriptedChatModel(responses=lambda messages: f"echo {messages[-1].content}")
    assert model.invoke("hello").content == "echo hello"


def test_dict_script_keyed_by_prompt_substring_and_default() -> None:
    model = ScriptedChatModel(
        responses={"planner": ["plan-1", "plan-2"], "ranker": "ranked", "*": ["fallback"]}
    )
    assert model.invoke("You are the planner.").content == "plan-1"
    assert model.invoke("You are the ranker.").content == "ranked"
    assert model.invoke("You are the planner again").content == "plan-2"
    assert model.invoke("unrelated").content == "fallback"
    assert [call.key for call in model.calls] == ["planner", "ranker", "planner", "*"]


def test_dict_script_without_match_names_the_keys() -> None:
    model = ScriptedChatModel(responses={"planner": "p"})
    with pytest.raises(ScriptExhaustedError, match="no script key matches"):
        model.invoke("something else")


def test_dict_script_keyed_by_langgraph_node() -> None:
    model = ScriptedChatModel(responses={"summarise": "from node", "*": "other"})

    def summarise(state: MessagesState) -> dict:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState).add_node("summarise", summarise)
    graph = graph.add_edge(START, "summarise").add_edge("summarise", END).compile()
    result = graph.invoke({"messages": [HumanMessage(content="no keyword in here")]})
    assert result["messages"][-1].content == "from node"
    assert model.calls[0].key == "summarise"


def test_matcher_function_picks_the_key() -> None:
    model = ScriptedChatModel(
        responses={"long": "L", "short": "S"},
        matcher=lambda messages, metadata: "long" if len(messages[-1].content) > 5 else "short",
    )
    assert model.invoke("abc").content == "S"
    assert model.invoke("abcdefgh").content == "L"


def test_text_tool_calls_become_tool_calls_when_tools_are_bound() -> None:
    text = "Checking. " + format_tool_call("item_cf", {"item_id": "42"})
    model = ScriptedChatModel(responses=[text, text])
    bound = model.bind_tools([item_cf, user_cf])
    message = bound.invoke("find neighbours")
    assert message.content == "Checking."
    assert [(call["name"], call["args"]) for call in message.tool_calls] == [("item_cf", {"item_id": "42"})]
    assert model.calls[0].tools == ["item_cf", "user_cf"]
    assert model.invoke("unbound").tool_calls == []  # without tools the text is left alone


def test_a_tools_schema_is_converted_once_and_bound_schemas_parse_like_tools() -> None:
    from langchain_core.utils.function_calling import convert_to_openai_tool

    from starrec.llm.messages import openai_tools

    first, again = openai_tools([item_cf, user_cf]), openai_tools([item_cf])
    assert first == [convert_to_openai_tool(item_cf), convert_to_openai_tool(user_cf)]
    assert again[0] is first[0]  # memoised per tool object

    @tool
    def item_cf_v2(item_id: str) -> str:
        """Another tool, another schema."""
        return item_id

    assert openai_tools([item_cf_v2])[0]["function"]["name"] == "item_cf_v2"
    text = format_tool_call("item_cf", {"item_id": "42"})
    message = ScriptedChatModel(responses=[text]).bind_tools(first).invoke("find neighbours")
    assert [(call["name"], call["args"]) for call in message.tool_calls] == [("item_cf", {"item_id": "42"})]


def test_native_ai_message_tool_calls_pass_through() -> None:
    scripted = AIMessage(content="", tool_calls=[{"name": "user_cf", "args": {"user_id": "u1"}, "id": "c1"}])
    model = ScriptedChatModel(responses=[scripted])
    message = model.bind_tools([user_cf]).invoke("go")
    assert message.tool_calls[0]["args"] == {"user_id": "u1"}
    assert message is not scripted  # a copy: replaying cannot mutate the script


def test_unknown_or_malformed_tool_calls_are_invalid_not_dropped() -> None:
    text = format_tool_call("web_search", {"q": "x"}) + "<tool_call>{not json at all}</tool_call>"
    message = ScriptedChatModel(responses=[text]).bind_tools([item_cf]).invoke("go")
    assert message.tool_calls == []
    errors = [call["error"] for call in message.invalid_tool_calls]
    assert "unknown tool 'web_search'" in errors[0]
    assert "not valid JSON" in errors[1]


def test_tool_call_argument_types_are_coerced_and_counted() -> None:
    message = (
        ScriptedChatModel(
            responses=['<tool_call>{"name": "item_cf", "arguments": {"item_id": 42, "k": "5"}}</tool_call>']
        )
        .bind_tools([item_cf])
        .invoke("go")
    )
    assert message.tool_calls[0]["args"] == {"item_id": "42", "k": 5}
    assert message.response_metadata["tool_call_repairs"] == ["coerced_types"]


def test_tool_messages_round_trip_through_a_react_loop() -> None:
    model = ScriptedChatModel(responses=[format_tool_call("item_cf", {"item_id": "7"}), "final answer"])
    bound = model.bind_tools([item_cf])
    messages = [HumanMessage(content="rank")]
    reply = bound.invoke(messages)
    messages += [reply, ToolMessage(content=item_cf.invoke(reply.tool_calls[0]["args"]), tool_call_id="x")]
    assert bound.invoke(messages).content == "final answer"
    assert isinstance(model.calls[1].messages[-1], ToolMessage)


def test_structured_output_clean_json() -> None:
    model = ScriptedChatModel(responses=['{"ranking": ["a", "b"], "reason": "fits"}'])
    result = model.with_structured_output(Ranking).invoke("rank a, b")
    assert result == Ranking(ranking=["a", "b"], reason="fits")
    assert model.repair_counts == {}
    assert "Answer with one JSON object" in model.calls[0].messages[0].content
    assert '"ranking"' in model.calls[0].messages[0].content


def test_structured_output_repair_is_counted() -> None:
    model = ScriptedChatModel(responses=["Here:\n```json\n{'ranking': ['a'], 'reason': 'x',}\n```"])
    assert model.with_structured_output(Ranking).invoke("rank").ranking == ["a"]
    assert model.repair_counts == {"json_repair": 1}


def test_structured_output_retry_shows_the_error_and_is_counted() -> None:
    model = ScriptedChatModel(responses=['{"ranking": "a"}', '{"ranking": ["a"], "reason": "ok"}'])
    usage = LLMUsageCallback()
    result = model.with_structured_output(Ranking).invoke(
        "rank", config={"callbacks": [usage], "tags": ["ranker"]}
    )
    assert result.ranking == ["a"]
    retry_prompt = model.calls[1].messages
    assert isinstance(retry_prompt[-2], AIMessage) and retry_prompt[-2].content == '{"ranking": "a"}'
    assert "could not be used" in retry_prompt[-1].content and "reason" in retry_prompt[-1].content
    assert model.repair_counts == {"structured_retry": 1}
    assert usage.as_dict()["ranker"]["repairs"] == {"structured_retry": 1}
    assert usage.as_dict()["ranker"]["calls"] == 2


def test_structured_output_failure_after_retry_raises_and_is_counted() -> None:
    model = ScriptedChatModel(responses=["no idea", "still no idea"])
    with pytest.raises(StructuredOutputError, match="after 2 attempt") as caught:
        model.with_structured_output(Ranking).invoke("rank")
    assert caught.value.raw == "still no idea"
    assert model.repair_counts == {"structured_retry": 1, "structured_failure": 1}


def test_structured_output_include_raw_reports_instead_of_raising() -> None:
    model = ScriptedChatModel(responses=["nope", "nope again"])
    result = model.with_structured_output(Ranking, include_raw=True).invoke("rank")
    assert result["parsed"] is None and result["attempts"] == 2
    assert isinstance(result["parsing_error"], ValueError)
    assert result["repairs"] == ["structured_retry", "structured_failure"]
    assert result["raw"].content == "nope again"


def test_structured_output_with_json_schema_dict() -> None:
    schema = {
        "title": "Plan",
        "type": "object",
        "properties": {"agents": {"type": "array"}},
        "required": ["agents"],
    }
    model = ScriptedChatModel(responses=['{"agents": ["user_profile"]}', '{"other": 1}', '{"other": 2}'])
    assert model.with_structured_output(schema).invoke("plan") == {"agents": ["user_profile"]}
    with pytest.raises(StructuredOutputError, match="missing required field"):
        model.with_structured_output(schema).invoke("plan")


def test_structured_output_async_path() -> None:
    model = ScriptedChatModel(responses=["bad", '{"ranking": ["z"], "reason": "r"}'])
    result = asyncio.run(model.with_structured_output(Ranking).ainvoke("rank"))
    assert result.ranking == ["z"] and model.repair_counts == {"structured_retry": 1}


def test_scripted_failures_raise_timeout_at_the_given_calls() -> None:
    model = ScriptedChatModel(responses=["a", "b", "c"], fail_at=[2])
    assert model.invoke("1").content == "a"
    with pytest.raises(TimeoutError, match="call 2"):
        model.invoke("2")
    assert model.invoke("3").content == "b"  # a failed call consumes no response
    assert model.calls[1].error.startswith("TimeoutError")


def test_exceptions_in_the_script_are_raised() -> None:
    model = ScriptedChatModel(responses=[ValueError("boom"), ConnectionError, "ok"])
    with pytest.raises(ValueError, match="boom"):
        model.invoke("1")
    with pytest.raises(ConnectionError):
        model.invoke("2")
    assert model.invoke("3").content == "ok"


def test_latency_sync_and_async_concurrency() -> None:
    model = ScriptedChatModel(responses=["x"], cycle=True, latency_s=0.05)
    started = time.perf_counter()
    model.invoke("a")
    assert time.perf_counter() - started >= 0.05

    async def many() -> list:
        return await asyncio.gather(*(model.ainvoke(str(index)) for index in range(20)))

    started = time.perf_counter()
    replies = asyncio.run(many())
    elapsed = time.perf_counter() - started
    assert len(replies) == 20
    assert elapsed < 20 * 0.05  # the sleeps overlap: async calls do not block each other


def test_usage_metadata_is_filled() -> None:
    message = ScriptedChatModel(responses=["three word answer"]).invoke("two words")
    assert message.usage_metadata["output_tokens"] == 3
    assert message.usage_metadata["input_tokens"] == 2


def test_capability_flags_are_configurable() -> None:
    model = ScriptedChatModel(responses=["x"], supports_tool_calling=False, supports_structured_output=False)
    capabilities = llm_capabilities(model.bind(stop=["x"]))
    assert not capabilities.supports_tool_calling and not capabilities.supports_structured_output
    assert capabilities.structured_method == "text"


def test_recording_then_replay_by_sequence_and_by_node(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    inner = ScriptedChatModel(
        responses=[
            format_tool_call("item_cf", {"item_id": "1"}),
            "plain",
            '{"ranking": ["b"], "reason": "r"}',
        ]
    )
    recorder = RecordingChatModel(inner=inner, path=path)

    def agent(state: MessagesState) -> dict:
        return {"messages": [recorder.bind_tools([item_cf]).invoke(state["messages"])]}

    graph = StateGraph(MessagesState).add_node("agent", agent).add_edge(START, "agent").add_edge("agent", END)
    graph.compile().invoke({"messages": [HumanMessage(content="go")]})
    recorder.invoke("second")
    recorder.with_structured_output(Ranking).invoke("rank")

    records = load_recording(path)
    assert [record["key"] for record in records] == ["agent", None, None]
    assert records[0]["response"]["tool_calls"] == [{"name": "item_cf", "args": {"item_id": "1"}}]
    assert inner.calls[0].tools == ["item_cf"]

    replay = ScriptedChatModel.from_recording(path)
    assert replay.bind_tools([item_cf]).invoke("x").tool_calls[0]["args"] == {"item_id": "1"}
    assert replay.invoke("y").content == "plain"
    assert replay.with_structured_output(Ranking).invoke("rank").ranking == ["b"]

    by_node = ScriptedChatModel.from_recording(path, by="node")
    assert set(by_node.responses) == {"agent", "*"}


def test_bad_recording_lines_are_named(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    path.write_text(json.dumps({"response": {"content": "ok"}}) + "\n{broken\n")
    with pytest.raises(ValueError, match=r"rec.jsonl:2"):
        load_recording(path)
    path.write_text(json.dumps({"no": "response"}) + "\n")
    with pytest.raises(ValueError, match="needs a 'response'"):
        load_recording(path)


def test_usage_callback_attributes_calls_tokens_and_errors_to_graph_nodes() -> None:
    model = ScriptedChatModel(responses={"plan": ["one two three"], "rank": [TimeoutError("slow")]})
    usage = LLMUsageCallback()

    def planner(state: MessagesState) -> dict:
        return {"messages": [model.invoke("plan this")]}

    def ranker(state: MessagesState) -> dict:
        with pytest.raises(TimeoutError):
            model.invoke("rank this")
        return {}

    graph = StateGraph(MessagesState).add_node("planner", planner).add_node("ranker", ranker)
    graph = graph.add_edge(START, "planner").add_edge("planner", "ranker").add_edge("ranker", END).compile()
    graph.invoke({"messages": [HumanMessage(content="go")]}, config={"callbacks": [usage]})
    by_node = usage.as_dict()
    assert by_node["planner"]["calls"] == 1 and by_node["planner"]["completion_tokens"] == 3
    assert by_node["planner"]["prompt_tokens"] == 2 and by_node["planner"]["errors"] == 0
    assert by_node["ranker"]["errors"] == 1
    assert usage.totals().calls == 2
