"""Constrained decoding: answer schemas with enums, tool-call constraints, and MARS sending them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_core.utils.function_calling import convert_to_openai_tool
from mars_fixtures import FakeEvidence, analysis, build_movie_dataset, default_script, make_request, make_task

from starrec.agents.planner import Plan
from starrec.agents.ranker import Ranking
from starrec.agents.reflector import Reflection
from starrec.contract.roster import ROSTER
from starrec.graphs.context import Context
from starrec.llm.constraints import (
    answer_schema,
    constrained,
    tool_call_schema,
    tool_call_tag,
    vllm_request_fields,
)
from starrec.llm.scripted import ScriptedChatModel
from starrec.tools.langchain_tools import make_cf_tools


def test_ranking_schema_allows_only_candidates_and_all_of_them() -> None:
    schema = answer_schema(Ranking, enums={"ranking": ["a", "b", "c"]}, lengths={"ranking": (3, 3)})
    ranking = schema["properties"]["ranking"]
    assert ranking["items"] == {"enum": ["a", "b", "c"]}
    assert (ranking["minItems"], ranking["maxItems"]) == (3, 3)
    assert schema["required"] == ["thinking", "ranking"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["thinking"]["maxLength"] > 0


def test_nested_enum_and_refs_are_inlined() -> None:
    schema = answer_schema(Reflection, enums={"issues.agent": ["user_profile"]}, lengths={"issues": (0, 1)})
    assert "$defs" not in json.dumps(schema) and "$ref" not in json.dumps(schema)
    issue = schema["properties"]["issues"]["items"]
    assert issue["properties"]["agent"] == {"title": "Agent", "enum": ["user_profile"]}
    assert schema["properties"]["verdict"]["enum"] == ["pass", "fail"]


def test_unknown_field_and_empty_enum_are_refused() -> None:
    with pytest.raises(KeyError, match="not a field"):
        answer_schema(Plan, enums={"agent_names": ["x"]})
    with pytest.raises(ValueError, match="no allowed values"):
        answer_schema(Plan, enums={"agents": []})


def test_tool_call_schema_pins_names_and_argument_values() -> None:
    tools = [convert_to_openai_tool(tool) for tool in make_cf_tools(None)[:2]]
    schema = tool_call_schema(tools, {"item_id": ["m1", "m2"], "user_id": ["u4"]})
    item_cf, user_cf = schema["anyOf"]
    assert item_cf["properties"]["name"] == {"const": "item_cf"}
    assert item_cf["properties"]["arguments"]["properties"]["item_id"]["enum"] == ["m1", "m2"]
    assert user_cf["properties"]["arguments"]["properties"]["user_id"]["enum"] == ["u4"]
    tag = tool_call_tag(tools)
    assert tag["triggers"] == ["<tool_call>"] and tag["structures"][0]["end"] == "</tool_call>"


def test_request_fields_and_unsupported_models() -> None:
    fields = vllm_request_fields(json_schema={"type": "object"})
    assert fields["structured_outputs"]["json"] == {"type": "object"}
    tag = vllm_request_fields(structural_tag={"type": "structural_tag"})
    assert json.loads(tag["structured_outputs"]["structural_tag"]) == {"type": "structural_tag"}
    with pytest.raises(ValueError, match="exactly one"):
        vllm_request_fields()
    assert constrained(ScriptedChatModel(responses=["x"]), json_schema={"type": "object"}) is None


def _structured_outputs(call: Any) -> dict[str, Any]:
    return call.kwargs.get("extra_body", {}).get("structured_outputs", {})


def test_mars_sends_enum_constraints_and_forced_valid_tool_calls() -> None:
    dataset = build_movie_dataset()
    task = make_task(dataset, "u4")
    request = make_request(dataset, task)
    candidates = list(request.candidates)
    script = default_script(candidates)
    tool_call = json.dumps({"name": "item_cf", "arguments": {"item_id": "m1"}})
    for agent in ROSTER.names:
        script[agent] = [tool_call, analysis(f"{agent} says")]
    model = ScriptedChatModel(responses=script, cycle=True, constrained_decoding="vllm")
    from tests.unit.test_mars_graph import run

    context = Context(chunk_size=3, tool_protocol="text", tool_choice="required", max_tool_calls=1)
    setup = {"dataset": dataset, "task": task, "request": request, "candidates": candidates}
    state, trajectory, model = run(setup, script, context, FakeEvidence(dataset), constrained_decoding="vllm")
    by_node: dict[str, list[Any]] = {}
    for call in model.calls:
        by_node.setdefault(call.key or "", []).append(call)
    planner = _structured_outputs(by_node["planner"][0])["json"]
    # The evidence stores no value profiles, so user_values is not on the planner's menu.
    assert planner["properties"]["agents"]["items"]["enum"] == [a.name for a in ROSTER.agents if not a.lookup]
    ranker = _structured_outputs(by_node["ranker"][-1])["json"]
    assert sorted(ranker["properties"]["ranking"]["items"]["enum"]) == sorted(candidates)
    first = _structured_outputs(by_node["user_profile"][0])["json"]
    assert {option["properties"]["name"]["const"] for option in first["anyOf"]} >= {"item_cf", "user_cf"}
    profile = next(step for step in trajectory.steps if step.node == "user_profile")
    assert [call.name for call in profile.tool_calls] == ["item_cf"]
    assert not profile.tool_calls[0].error
    assert sorted(state["ranking"]) == sorted(candidates)
    # The run's history opens every agent's system turn: one shared prefix for the server's cache.
    prefixes = {call.messages[0].content[:200] for node, calls in by_node.items() if node != "abstractor"
                for call in calls}  # fmt: skip
    assert len(prefixes) == 1


def test_local_backend_enforces_the_schema_with_xgrammar() -> None:
    pytest.importorskip("xgrammar")
    from langchain_core.messages import HumanMessage, SystemMessage

    from starrec.llm import make_chat_model

    model = make_chat_model("local:tiny", max_tokens=48)
    assert model.constrained_decoding == "vllm"
    schema = answer_schema(
        Plan,
        enums={"agents": ["user_profile", "recent_interest"]},
        lengths={"agents": (1, 2)},
        max_text_chars=8,
    )
    bound = constrained(model, json_schema=schema)
    assert bound is not None
    # A random 3M-parameter model writes noise unconstrained; under the grammar it writes a valid plan.
    answer = json.loads(bound.invoke([SystemMessage("Plan."), HumanMessage("Which analysts?")]).content)
    assert set(answer) == {"thinking", "agents"} and len(answer["thinking"]) <= 8
    assert 1 <= len(answer["agents"]) <= 2 and set(answer["agents"]) <= {"user_profile", "recent_interest"}
