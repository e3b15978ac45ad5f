"""The user_values agent: the fifth plannable agent, reading stored value profiles through a lookup tool."""

from __future__ import annotations

import asyncio
from typing import Any

from mars_fixtures import FakeEvidence, analysis, build_movie_dataset, default_script, make_request, make_task

from starrec.contract.roster import ROSTER
from starrec.contract.values import profile_from_weights
from starrec.distill.chain import parse_chain, serialise_trajectory
from starrec.distill.rollout import ToolExecutor
from starrec.graphs.context import Context
from starrec.graphs.graph import build_mars_graph
from starrec.graphs.recording import TrajectoryRecorder
from starrec.graphs.state import input_from_request
from starrec.llm.scripted import ScriptedChatModel
from starrec.tools.base import ValuesResult

BASE = [agent.name for agent in ROSTER.agents if not agent.lookup]


class FakeValuesEvidence(FakeEvidence):
    """The fixture evidence plus one stored value profile (for u4)."""

    def value_profile(self, user_id: str) -> ValuesResult:
        if user_id != "u4":
            return ValuesResult(
                user_id=user_id, found=False, evidence=f"No value profile is stored for {user_id}."
            )
        profile = profile_from_weights(
            "u4", {"benevolence": 0.9}, {"benevolence": "family films"}, {"benevolence": ["m1"]}
        )
        return ValuesResult(user_id=user_id, found=True, evidence="benevolence 0.90: family films [m1]",
                            profile=profile.to_dict())  # fmt: skip

    def has_value_profiles(self) -> bool:
        return True


def run(
    evidence: FakeEvidence, context: Context, plan: list[str]
) -> tuple[dict[str, Any], Any, ScriptedChatModel]:
    dataset = evidence.dataset
    task = make_task(dataset, "u4")
    request = make_request(dataset, task)
    script = default_script(list(request.candidates), plan=plan)
    script["user_values"] = [analysis("cares for family: benevolence")]
    model = ScriptedChatModel(responses=script, cycle=True)
    graph = build_mars_graph(context, chat_model=model, evidence=evidence)
    recorder = TrajectoryRecorder()
    state = asyncio.run(
        graph.ainvoke(input_from_request(request, dataset), context=context, config={"callbacks": [recorder]})
    )
    trajectory = recorder.trajectory(state, task_id=task.task_id, ground_truth=task.ground_truth,
                                     settings=context.settings())  # fmt: skip
    return state, trajectory, model


def test_with_stored_profiles_the_planner_may_run_user_values_and_the_chain_carries_it() -> None:
    plan = ["user_values", *BASE]
    _, trajectory, model = run(FakeValuesEvidence(build_movie_dataset()), Context(chunk_size=3), plan)
    assert trajectory.nodes == ["abstractor", "planner", *plan, "reflector", "ranker"]
    planner_prompt = next(call for call in model.calls if call.key == "planner").messages[0].content
    assert "- user_values: the values" in planner_prompt and "Use all five when unsure." in planner_prompt
    (call,) = [call for call in model.calls if call.key == "user_values"]
    assert "benevolence 0.90: family films [m1]" in call.prompt  # the looked-up profile, in its focus
    step = next(step for step in trajectory.steps if step.node == "user_values")
    assert [tool.name for tool in step.tool_calls] == ["user_values"]
    assert step.output["conclusions"] == ["cares for family: benevolence"]
    text = serialise_trajectory(trajectory)
    assert "<values_analysis>" in text and "user_values" in text
    chain = parse_chain(text, trajectory.candidates)
    assert chain.errors == [] and chain.agents == plan and "values_analysis" in chain.order


def test_without_profiles_nothing_changes_and_no_values_switches_it_off() -> None:
    dataset = build_movie_dataset()
    _, plain, model = run(FakeEvidence(dataset), Context(chunk_size=3, use_planner=False), [])
    assert plain.nodes == ["abstractor", *BASE, "reflector", "ranker"]
    assert all(call.key != "user_values" for call in model.calls)
    ablated = Context(chunk_size=3, use_planner=False).with_ablation("no_values")
    _, off, _ = run(FakeValuesEvidence(dataset), ablated, [])
    assert off.nodes == plain.nodes and off.settings["use_values"] is False
    _, on, _ = run(FakeValuesEvidence(dataset), Context(chunk_size=3, use_planner=False), [])
    assert on.nodes == ["abstractor", *BASE, "user_values", "reflector", "ranker"]


def test_the_student_can_call_user_values_where_profiles_are_stored() -> None:
    executor = ToolExecutor(FakeValuesEvidence(build_movie_dataset()))
    text, ok = executor.run('{"name": "user_values", "arguments": {"user_id": "u4"}}')
    assert ok and "benevolence 0.90" in text
    text, ok = ToolExecutor(FakeEvidence(build_movie_dataset())).run(
        '{"name": "user_values", "arguments": {"user_id": "u4"}}'
    )
    assert not ok and "not available" in text


def test_student_prompt_lists_lookup_agents_only_when_asked() -> None:
    """The student's default instructions match the teacher runs without profiles (no values phase)."""
    from starrec.contract.roster import ROSTER
    from starrec.distill.student_prompt import star_system_prompt

    assert "<values_analysis>" not in star_system_prompt()
    assert "<values_analysis>" in star_system_prompt(roster=ROSTER)


class HistoryOnlyEvidence(FakeEvidence):
    """The fixture evidence with the user histories of a real graph and no stored value profile."""

    def __init__(self, dataset, graph) -> None:
        super().__init__(dataset)
        self.store = graph

    def value_profile(self, user_id: str) -> ValuesResult:
        return ValuesResult(user_id=user_id, found=False, evidence="none stored", source="none")

    def has_value_profiles(self) -> bool:
        return False


def miner_answer(weights: dict[str, float]) -> str:
    import json

    values = [
        {"value": v, "weight": w, "reason": f"{v} shows", "item_ids": ["m1"]} for v, w in weights.items()
    ]
    return json.dumps({"thinking": "t", "values": values})


def live_run(tmp_path, supervisors: list[str], **context: Any) -> tuple[Any, ScriptedChatModel]:
    from starrec.tools.toolkit import build_ladybug_graph

    dataset = build_movie_dataset()
    task = make_task(dataset, "u4")
    graph, _ = build_ladybug_graph(dataset.hide_from([task]), tmp_path / "g.lbdb")
    request = make_request(dataset, task)
    script = default_script(list(request.candidates), plan=[])
    script["user_values"] = [analysis("cares for family: benevolence")]
    script["value evaluator"] = [miner_answer({"benevolence": 0.9, "security": 0.5})]
    script["value supervisor"] = supervisors
    model = ScriptedChatModel(responses=script, cycle=True)
    evidence = HistoryOnlyEvidence(dataset, graph)
    mars = build_mars_graph(
        Context(chunk_size=3, use_planner=False, **context), chat_model=model, evidence=evidence
    )
    recorder = TrajectoryRecorder()
    try:
        for _ in range(2):  # the second run finds the profile mined by the first
            state = asyncio.run(mars.ainvoke(input_from_request(request, dataset),
                                             context=Context(chunk_size=3, use_planner=False, **context),
                                             config={"callbacks": [recorder]}))  # fmt: skip
    finally:
        graph.close()
    return recorder.trajectory(state, task_id=task.task_id, ground_truth=task.ground_truth), model


def test_live_mining_fills_a_missing_profile_once_and_counts_it(tmp_path) -> None:
    agree = [miner_answer({"benevolence": 0.9, "security": 0.5})]
    trajectory, model = live_run(tmp_path, agree, values_live_mining=True)
    assert "user_values" in trajectory.nodes
    keys = [call.key for call in model.calls]
    assert keys.count("value evaluator") == 2 and keys.count("value supervisor") == 2  # mined in run 1 only
    prompts = [call.prompt for call in model.calls if call.key == "user_values"]
    assert len(prompts) == 2 and all(
        "mined live" in prompt and "benevolence 0.90" in prompt for prompt in prompts
    )
    first, second = [step for step in trajectory.steps if step.node == "user_values"]
    assert first.repairs.get("values_mined_live") == 1 and "values_live_cached" not in first.repairs
    assert second.repairs.get("values_live_cached") == 1 and "values_mined_live" not in second.repairs


def test_a_user_with_no_graph_history_is_not_mined_and_is_counted(tmp_path) -> None:
    from starrec.graphs.values_live import LiveMiningValues, live_miner_context

    model = ScriptedChatModel(responses={}, cycle=True)
    live = LiveMiningValues(
        HistoryOnlyEvidence(build_movie_dataset(), None), lambda user: [], model,
        live_miner_context("scripted", None, 1, "none", 128),
    )  # fmt: skip
    result = asyncio.run(live.avalue_profile("ghost"))
    assert not result.found and result.source == "none" and model.calls == []
    assert live.counts == {"live_empty_history": 1}

    async def three_at_once() -> list[Any]:
        return await asyncio.gather(*(live.avalue_profile(user) for user in ("ghost", "ghost", "shade")))

    assert [r.found for r in asyncio.run(three_at_once())] == [False, False, False]
    assert live.counts == {"live_empty_history": 4}
    assert live._in_flight == {}  # no lock is kept per user once its callers are done


def test_live_mining_is_bounded_by_its_round_limit_and_off_by_default(tmp_path) -> None:
    # The two supervisors disagree in every round: one round, then the fallback decides.
    split = [miner_answer({"benevolence": 0.9}), miner_answer({"power": 0.9, "hedonism": 0.8})]
    _, model = live_run(tmp_path / "a", split, values_live_mining=True, values_live_rounds=1)
    assert [call.key for call in model.calls].count("value supervisor") == 2
    trajectory, model = live_run(tmp_path / "b", split)
    assert "user_values" not in trajectory.nodes
    assert all(call.key not in ("value evaluator", "value supervisor") for call in model.calls)
