"""Per-node models: each MARS node calls the model assigned to it, and usage is reported per model."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import typer
from mars_fixtures import FakeEvidence, build_movie_dataset, default_script, make_request, make_task

from starrec.contract.roster import AGENT_NODES
from starrec.contract.trajectory import Trajectory
from starrec.eval.commands import parse_node_models
from starrec.eval.harness import evaluate
from starrec.eval.methods import MethodOptions, make_method
from starrec.graphs.context import Context
from starrec.graphs.graph import build_mars_graph
from starrec.graphs.recommender import MarsRecommender
from starrec.graphs.recording import TrajectoryRecorder
from starrec.graphs.runner import summarise_runs
from starrec.graphs.state import input_from_request
from starrec.llm.scripted import ScriptedChatModel
from starrec.llm.spec import split_endpoint
from starrec.llm.usage import LLMUsageCallback


@pytest.fixture
def setup() -> dict[str, Any]:
    dataset = build_movie_dataset()
    task = make_task(dataset, "u4")
    request = make_request(dataset, task)
    return {"dataset": dataset, "task": task, "request": request, "candidates": list(request.candidates)}


def scripted(name: str, script: dict[str, Any]) -> ScriptedChatModel:
    return ScriptedChatModel(responses=script, cycle=True, model_name=name)


def run_graph(
    setup: dict[str, Any], context: Context, callbacks: list[Any] | None = None, **graph_models: Any
) -> tuple[dict[str, Any], Trajectory]:
    compiled = build_mars_graph(context, evidence=FakeEvidence(setup["dataset"]), **graph_models)
    recorder = TrajectoryRecorder()
    state = asyncio.run(
        compiled.ainvoke(
            input_from_request(setup["request"], setup["dataset"]),
            context=context,
            config={"callbacks": [recorder, *(callbacks or [])]},
        )
    )
    trajectory = recorder.trajectory(
        state, task_id=setup["task"].task_id, ground_truth=setup["task"].ground_truth,
        settings=context.settings(),
    )  # fmt: skip
    return state, trajectory


def test_each_node_calls_its_own_model_and_usage_is_attributed_per_model(setup: dict[str, Any]) -> None:
    script = default_script(setup["candidates"], plan=["recent_interest", "user_profile"])
    teacher, planner = scripted("teacher", script), scripted("small", script)
    ranker = scripted("strong", script)
    usage = LLMUsageCallback()
    state, trajectory = run_graph(
        setup, Context(chunk_size=3), [usage], chat_model=teacher,
        chat_models={"planner": planner, "ranker": ranker},
    )  # fmt: skip
    assert [call.key for call in planner.calls] == ["planner"]
    assert [call.key for call in ranker.calls] == ["ranker"]
    teacher_nodes = {call.key for call in teacher.calls}
    assert teacher_nodes == {"abstractor", "recent_interest", "user_profile", "reflector"}
    assert state["plan"] == ["recent_interest", "user_profile"]
    served = {step.node: {call.model for call in step.llm_calls} for step in trajectory.steps}
    assert served["planner"] == {"small"} and served["ranker"] == {"strong"}
    assert served["abstractor"] == served["reflector"] == {"teacher"}

    per_model = summarise_runs([trajectory]).as_dict()["per_model"]
    assert set(per_model) == {"teacher", "small", "strong"}
    assert per_model["small"]["nodes"] == ["planner"] and per_model["small"]["llm_calls"] == 1
    assert per_model["strong"]["nodes"] == ["ranker"] and per_model["strong"]["llm_calls"] == 1
    assert per_model["teacher"]["nodes"] == ["abstractor", "recent_interest", "user_profile", "reflector"]
    assert sum(row["llm_calls"] for row in per_model.values()) == trajectory.llm_calls
    tokens = sum(row["prompt_tokens"] + row["completion_tokens"] for row in per_model.values())
    assert tokens == trajectory.prompt_tokens + trajectory.completion_tokens > 0
    assert all(row["cost_usd"] == 0.0 for row in per_model.values())  # scripted = in-process, free

    by_model = usage.as_dict(by="model")
    assert by_model["small"]["calls"] == 1 and by_model["strong"]["calls"] == 1
    assert by_model["teacher"]["calls"] == len(teacher.calls)
    assert by_model["small"]["prompt_tokens"] == per_model["small"]["prompt_tokens"]


def test_context_spec_serves_its_node_over_the_default_instance(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    recording = tmp_path / "planner.jsonl"
    plan = {"thinking": "recent only", "agents": ["recent_interest"]}
    recording.write_text(json.dumps({"response": json.dumps(plan)}) + "\n")
    teacher = scripted("teacher", default_script(setup["candidates"]))
    context = Context(chunk_size=3, models={"planner": f"scripted:{recording}"})
    state, trajectory = run_graph(setup, context, chat_model=teacher)
    assert state["plan"] == ["recent_interest"]
    assert "planner" not in {call.key for call in teacher.calls}
    assert trajectory.nodes == ["abstractor", "planner", "recent_interest", "reflector", "ranker"]
    assert trajectory.settings["models"] == {"planner": f"scripted:{recording}"}


def test_unknown_node_names_are_rejected_with_the_valid_ones(setup: dict[str, Any]) -> None:
    teacher = scripted("teacher", default_script(setup["candidates"]))
    valid = r"unknown node 'planer'; valid nodes: abstractor, planner, .*user_profile"
    with pytest.raises(ValueError, match=valid):
        run_graph(setup, Context(models={"planer": "local"}), chat_model=teacher)
    with pytest.raises(ValueError, match=r"build_mars_graph.*unknown node 'critic'"):
        build_mars_graph(chat_model=teacher, chat_models={"critic": teacher})
    with pytest.raises(typer.BadParameter, match="unknown node 'critic'; valid nodes: abstractor"):
        parse_node_models(["critic=local"])
    with pytest.raises(typer.BadParameter, match="expected NODE=SPEC"):
        parse_node_models(["planner"])
    with pytest.raises(typer.BadParameter, match="LLM spec"):
        parse_node_models(["planner=nonsense"])
    with pytest.raises(ValueError, match=r"Context\.models must map node names"):
        Context(models={"planner": ""})


def test_specs_take_their_own_endpoint() -> None:
    assert split_endpoint("openai:star-planner@http://127.0.0.1:8001/v1") == (
        "openai:star-planner",
        "http://127.0.0.1:8001/v1",
    )
    assert split_endpoint("local:/models/run@2") == ("local:/models/run@2", None)
    assert parse_node_models(["planner=openai:star@http://h:1/v1", "ranker = local:/m"]) == {
        "planner": "openai:star@http://h:1/v1",
        "ranker": "local:/m",
    }
    context = Context(llm="openai:teacher", base_url="http://t:1/v1",
                      models={"planner": "openai:star@http://p:2/v1", "ranker": "openai:strong"})  # fmt: skip
    assert context.model_for("planner") == ("openai:star", "http://p:2/v1")
    assert context.model_for("ranker") == ("openai:strong", "http://t:1/v1")
    assert context.model_for(AGENT_NODES[0]) == context.model_for(None) == ("openai:teacher", "http://t:1/v1")
    assert Context.help()["models"].startswith("Per-node chat model")


def test_mars_planner_method_needs_the_fine_tuned_planner() -> None:
    with pytest.raises(ValueError, match="--llm-for planner=local:DIR"):
        make_method("mars_planner", MethodOptions())
    with pytest.raises(ValueError, match="drop use_planner=false"):
        off = MethodOptions(models={"planner": "local:/p"}, extra={"use_planner": "false"})
        make_method("mars_planner", off)
    chosen = MethodOptions(llm="openai", model="teacher", models={"planner": "local:/p"})
    method = make_method("mars_planner", chosen)
    assert method.name == "mars_planner"
    assert method.context.llm == "openai:teacher" and method.context.models == {"planner": "local:/p"}


def test_eval_stats_report_usage_per_model() -> None:
    dataset = build_movie_dataset()
    tasks = [make_task(dataset, user, i) for i, user in enumerate(("u1", "u2"))]
    teacher, planner = scripted("teacher", default_script([])), scripted("star-planner", default_script([]))
    method = MarsRecommender(
        Context(chunk_size=3), chat_model=teacher, chat_models={"planner": planner},
        evidence=FakeEvidence(dataset),
    )  # fmt: skip
    report = evaluate(method, tasks, dataset, seed=0, progress=False)
    per_model = report["method_stats"]["per_model"]
    assert per_model["star-planner"]["llm_calls"] == 2 and per_model["star-planner"]["nodes"] == ["planner"]
    assert "planner" not in per_model["teacher"]["nodes"]


def test_studio_form_shows_the_per_node_models() -> None:
    from pydantic import TypeAdapter

    field = TypeAdapter(Context).json_schema()["properties"]["models"]
    assert field["type"] == "object" and field["additionalProperties"] == {"type": "string"}
    assert "planner" in field["description"] and "@http" in field["description"]
