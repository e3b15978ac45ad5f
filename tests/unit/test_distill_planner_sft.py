"""Planner SFT rows: the recorded planner step's exact prompt, and the plan the run went on with."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from distill_fixtures import make_trajectory
from mars_fixtures import FakeEvidence, build_movie_dataset, default_script, make_request, make_task

from starrec.contract.trajectory import LLMCallRecord
from starrec.distill.config import StarSFTConfig
from starrec.distill.planner_sft import CHAT_ROLES, planner_rows
from starrec.graphs.context import Context
from starrec.graphs.graph import build_mars_graph
from starrec.graphs.recording import TrajectoryRecorder
from starrec.graphs.state import input_from_request
from starrec.llm.messages import message_to_record
from starrec.llm.scripted import ScriptedChatModel

PLAN = ["recent_interest", "historical_interest"]


def recorded_run(planner: ScriptedChatModel, script: dict[str, Any]) -> Any:
    dataset = build_movie_dataset()
    task = make_task(dataset, "u4")
    teacher = ScriptedChatModel(responses=script, cycle=True)
    graph = build_mars_graph(
        chat_model=teacher, chat_models={"planner": planner}, evidence=FakeEvidence(dataset)
    )
    recorder = TrajectoryRecorder()
    state = asyncio.run(
        graph.ainvoke(
            input_from_request(make_request(dataset, task), dataset),
            context=Context(chunk_size=3),
            config={"callbacks": [recorder]},
        )
    )
    return recorder.trajectory(state, task_id=task.task_id, ground_truth=task.ground_truth)


def test_the_example_is_the_prompt_the_planner_node_sends() -> None:
    script = default_script([], plan=PLAN)
    trajectory = recorded_run(ScriptedChatModel(responses=script, cycle=True), script)
    [row] = planner_rows([trajectory])
    # Serving: the same MARS node asks a (fine-tuned) planner model; it sees exactly the training prompt.
    serving = ScriptedChatModel(responses=script, cycle=True)
    recorded_run(serving, script)
    [call] = serving.calls
    asked = [
        {"role": CHAT_ROLES[r["role"]], "content": r["content"]}
        for r in map(message_to_record, call.messages)
    ]
    assert row["prompt"] == asked
    assert [m["role"] for m in row["prompt"]] == ["system", "user"]
    assert "user_profile" in row["prompt"][0]["content"]  # the analyst menu
    assert json.loads(row["completion"][0]["content"])["agents"] == PLAN
    assert row["completion"][0]["content"] == script["planner"][0]  # the response, verbatim
    assert row["task_id"] == trajectory.task_id and row["ground_truth"] == trajectory.ground_truth


def test_a_repaired_plan_or_a_run_without_planner_gives_no_example() -> None:
    call = LLMCallRecord(
        node="planner",
        messages=[{"role": "system", "content": "plan"}, {"role": "human", "content": "go"}],
        response="<tool_call>...</tool_call>",
    )
    good = make_trajectory("t1")
    good.steps[1].llm_calls = [call]
    repaired = make_trajectory("t2")
    repaired.steps[1].llm_calls = [call]
    repaired.steps[1].repairs = {"plan_invalid_agent": 1}
    no_planner = make_trajectory("t3")
    no_planner.steps = [step for step in no_planner.steps if step.node != "planner"]
    [row] = planner_rows([good, repaired, no_planner])
    assert row["task_id"] == "t1"
    # A response that is no JSON plan (a native structured call) becomes the plan the run executed.
    assert json.loads(row["completion"][0]["content"]) == {
        "thinking": good.steps[1].thinking,
        "agents": good.steps[1].output["agents"],
    }
    with pytest.raises(ValueError, match=r"no planner example .*no planner step: 1, plan repaired: 1"):
        planner_rows([repaired, no_planner])


def test_target_is_checked() -> None:
    assert StarSFTConfig(target="planner").target == "planner"
    with pytest.raises(ValueError, match="SFT target 'ranker' is not one of star, planner"):
        StarSFTConfig(target="ranker")
    with pytest.raises(ValueError, match="no_planner runs have none"):
        StarSFTConfig(target="planner", ablation="no_planner")
