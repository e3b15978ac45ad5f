"""The MARS state machine with a scripted model: flow, planner, reflection loop, tools, repairs."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from mars_fixtures import FakeEvidence, analysis, build_movie_dataset, default_script, make_request, make_task

from starrec.contract.roster import ROSTER
from starrec.contract.trajectory import Trajectory
from starrec.graphs.context import Context
from starrec.graphs.graph import build_mars_graph, graph, recursion_limit
from starrec.graphs.recording import TrajectoryRecorder
from starrec.graphs.state import input_from_request
from starrec.llm.scripted import ScriptedChatModel

AGENT_NODES = tuple(agent.name for agent in ROSTER.agents if not agent.lookup)
"""The agents that run with an evidence source that stores no value profiles (user_values does not)."""


@pytest.fixture
def setup() -> dict[str, Any]:
    dataset = build_movie_dataset()
    task = make_task(dataset, "u4")
    request = make_request(dataset, task)
    return {"dataset": dataset, "task": task, "request": request, "candidates": list(request.candidates)}


def run(
    setup: dict[str, Any],
    script: dict[str, Any],
    context: Context | None = None,
    evidence: Any = None,
    **model_fields: Any,
) -> tuple[dict[str, Any], Trajectory, ScriptedChatModel]:
    model = ScriptedChatModel(responses=script, cycle=True, **model_fields)
    evidence = evidence if evidence is not None else FakeEvidence(setup["dataset"])
    compiled = build_mars_graph(context, chat_model=model, evidence=evidence)
    recorder = TrajectoryRecorder()
    context = context or Context(chunk_size=3)
    state = asyncio.run(
        compiled.ainvoke(
            input_from_request(setup["request"], setup["dataset"]),
            context=context,
            config={"callbacks": [recorder]},
        )
    )
    trajectory = recorder.trajectory(
        state,
        task_id=setup["task"].task_id,
        ground_truth=setup["task"].ground_truth,
        settings=context.settings(),
    )
    return state, trajectory, model


def nodes_called(model: ScriptedChatModel) -> list[str]:
    return [call.key for call in model.calls]


def test_full_run_visits_every_phase_in_order(setup: dict[str, Any]) -> None:
    truth = setup["task"].ground_truth
    ranking = [truth, *[c for c in setup["candidates"] if c != truth]]
    state, trajectory, _ = run(setup, default_script(setup["candidates"], ranking=ranking))
    assert trajectory.nodes == ["abstractor", "planner", *AGENT_NODES, "reflector", "ranker"]
    assert state["llm_ranking"] == ranking
    assert trajectory.hits == {"hit@1": True, "hit@3": True, "hit@5": True}
    assert sorted(state["ranking"]) == sorted(setup["candidates"])
    assert state["reflection"]["verdict"] == "pass"
    assert set(state["analyses"]) == set(AGENT_NODES)


def test_planner_subset_and_order_are_followed(setup: dict[str, Any]) -> None:
    plan = ["recent_interest", "user_profile"]
    _, trajectory, model = run(setup, default_script(setup["candidates"], plan=plan))
    assert trajectory.nodes == [
        "abstractor",
        "planner",
        "recent_interest",
        "user_profile",
        "reflector",
        "ranker",
    ]
    assert "historical_interest" not in nodes_called(model)


def test_planner_off_runs_all_four_in_fixed_order_without_planner_call(setup: dict[str, Any]) -> None:
    _, trajectory, model = run(
        setup, default_script(setup["candidates"]), Context(chunk_size=3, use_planner=False)
    )
    assert trajectory.nodes == ["abstractor", *AGENT_NODES, "reflector", "ranker"]
    assert "planner" not in nodes_called(model)


def test_invalid_plan_is_repaired_and_counted(setup: dict[str, Any]) -> None:
    script = default_script(setup["candidates"])
    script["planner"] = [json.dumps({"agents": ["astrologer", "recent_interest", "recent_interest"]})]
    state, trajectory, _ = run(setup, script)
    assert state["plan"] == ["recent_interest"]
    assert trajectory.repairs["plan_invalid_agent"] == 2


def test_reflector_fail_reruns_only_flagged_agents_with_suggestion(setup: dict[str, Any]) -> None:
    fail = {
        "verdict": "fail",
        "issues": [{"agent": "historical_interest", "suggestion": "ignore the one-off m1"}],
    }
    _state, trajectory, model = run(
        setup,
        default_script(setup["candidates"], reflections=[fail]),
        Context(chunk_size=3, max_correction_rounds=1),
    )
    assert trajectory.nodes == [
        "abstractor",
        "planner",
        *AGENT_NODES,
        "reflector",
        "historical_interest",
        "ranker",
    ]
    rerun = [s for s in trajectory.steps if s.node == "historical_interest"][-1]
    assert rerun.round == 1
    assert rerun.output["correction"] == "ignore the one-off m1"
    correction_prompt = [c for c in model.calls if c.key == "historical_interest"][-1].prompt
    assert "ignore the one-off m1" in correction_prompt
    reflector = next(s for s in trajectory.steps if s.node == "reflector")
    assert reflector.output == {"passed": False, "feedback": fail["issues"]}


def test_correction_loop_stops_at_the_bound(setup: dict[str, Any]) -> None:
    fail = {"verdict": "fail", "issues": [{"agent": "recent_interest", "suggestion": "again"}]}
    state, trajectory, _ = run(
        setup,
        default_script(setup["candidates"], reflections=[fail]),
        Context(chunk_size=3, max_correction_rounds=2),
    )
    # round 0 -> reflect(fail) -> round 1 -> reflect(fail) -> round 2 -> bound reached -> rank
    assert trajectory.nodes.count("reflector") == 2
    assert trajectory.nodes.count("recent_interest") == 3
    assert trajectory.nodes[-1] == "ranker"
    assert state["round"] == 2


def test_zero_correction_rounds_marks_bound_reached(setup: dict[str, Any]) -> None:
    fail = {"verdict": "fail", "issues": [{"agent": "recent_interest", "suggestion": "again"}]}
    state, trajectory, _ = run(
        setup,
        default_script(setup["candidates"], reflections=[fail]),
        Context(chunk_size=3, max_correction_rounds=0),
    )
    assert trajectory.nodes[-2:] == ["reflector", "ranker"]
    assert state["correction_bound_reached"] is True
    assert trajectory.repairs["correction_bound_reached"] == 1


def test_reflector_off_goes_straight_to_ranker(setup: dict[str, Any]) -> None:
    _, trajectory, _ = run(
        setup, default_script(setup["candidates"]), Context(chunk_size=3, use_reflector=False)
    )
    assert "reflector" not in trajectory.nodes


@pytest.mark.parametrize("native", [True, False])
def test_tool_calls_through_both_protocols(setup: dict[str, Any], native: bool) -> None:
    evidence = FakeEvidence(setup["dataset"])
    script = default_script(setup["candidates"], plan=["historical_interest"])
    script["historical_interest"] = [
        'Let me check.\n<tool_call>{"name": "item_cf", "arguments": {"item_id": "m4", "k": 5}}</tool_call>',
        analysis("action fan, confirmed by item_cf"),
    ]
    context = Context(chunk_size=3, tool_protocol="native" if native else "text")
    _, trajectory, model = run(setup, script, context, evidence=evidence)
    assert ("item_cf", "m4", 5) in evidence.calls
    step = next(s for s in trajectory.steps if s.node == "historical_interest")
    assert [(c.name, c.arguments) for c in step.tool_calls] == [("item_cf", {"item_id": "m4", "k": 5})]
    assert step.tool_calls[0].response.startswith("item_cf for m4")
    assert step.tool_calls[0].queries[0].cypher.startswith("MATCH")
    calls = [c for c in model.calls if c.key == "historical_interest"]
    assert bool(calls[0].tools) is native  # native binds tools, text puts them in the system prompt
    if not native:
        assert "<tool_call>" in calls[0].messages[0].content
        assert "<tool_response>item_cf for m4" in calls[1].prompt
    assert step.output["conclusions"] == ["action fan, confirmed by item_cf"]


def test_tool_budget_and_tool_errors_are_counted(setup: dict[str, Any]) -> None:
    evidence = FakeEvidence(setup["dataset"], fail_on="m7")
    script = default_script(setup["candidates"], plan=["recent_interest"])
    script["recent_interest"] = [
        '<tool_call>{"name": "item_cf", "arguments": {"item_id": "m7"}}</tool_call>',
        '<tool_call>{"name": "nope", "arguments": {}}</tool_call>',
        '<tool_call>{"name": "item_cf", "arguments": {"item_id": "m4"}}</tool_call>',
        analysis("recent"),
    ]
    _, trajectory, model = run(
        setup,
        script,
        Context(chunk_size=3, max_tool_calls=2, tool_protocol="text", structured_output="json"),
        evidence=evidence,
    )
    step = next(s for s in trajectory.steps if s.node == "recent_interest")
    assert step.repairs["tool_error"] == 2  # the raising graph and the unknown tool
    assert step.repairs["tool_budget_exceeded"] == 1  # the third call, after the budget was spent
    assert ("item_cf", "m4", 10) not in evidence.calls
    feedback = [c for c in model.calls if c.key == "recent_interest"][1].prompt
    assert "graph unavailable for m7" in feedback


def test_malformed_json_gets_one_counted_retry(setup: dict[str, Any]) -> None:
    script = default_script(setup["candidates"], plan=["user_profile"])
    script["user_profile"] = ["I think the user is young.", analysis("young")]
    _, trajectory, _ = run(setup, script, Context(chunk_size=3, structured_output="json"))
    step = next(s for s in trajectory.steps if s.node == "user_profile")
    assert step.repairs == {"json_retry": 1}
    assert step.output["conclusions"] == ["young"]


def test_unusable_answer_falls_back_and_is_counted(setup: dict[str, Any]) -> None:
    script = default_script(setup["candidates"], plan=["user_profile"])
    script["user_profile"] = ["no json here", "still none"]
    state, trajectory, _ = run(setup, script, Context(chunk_size=3, structured_output="json"))
    step = next(s for s in trajectory.steps if s.node == "user_profile")
    assert step.repairs == {"json_retry": 1, "fallback": 1}
    assert step.output["conclusions"] == ["still none"]
    assert any("fallback used" in w for w in state["warnings"])


def test_repairable_json_is_accepted_and_counted(setup: dict[str, Any]) -> None:
    script = default_script(setup["candidates"], plan=["user_profile"])
    script["user_profile"] = ["{'conclusions': ['likes drama',], 'thinking': 'x'"]
    _, trajectory, _ = run(setup, script)
    step = next(s for s in trajectory.steps if s.node == "user_profile")
    assert step.output["conclusions"] == ["likes drama"]
    assert step.repairs == {"json_repaired": 1}


def test_ranker_repairs_hallucinated_duplicate_and_missing_ids(setup: dict[str, Any]) -> None:
    candidates = setup["candidates"]
    raw = [candidates[3], "m999", candidates[3], candidates[0]]
    state, trajectory, _ = run(setup, default_script(candidates, ranking=raw))
    assert state["llm_ranking"][:2] == [candidates[3], candidates[0]]
    assert sorted(state["ranking"]) == sorted(candidates)
    assert trajectory.repairs["ranking_hallucinated"] == 1
    assert trajectory.repairs["ranking_duplicates"] == 1
    assert trajectory.repairs["ranking_missing"] == len(candidates) - 2
    # Missing ids are appended in CF-evidence order, not the shown order.
    ranker = next(s for s in trajectory.steps if s.node == "ranker")
    cf_rest = [c for c in ranker.output["cf_ranking"] if c not in raw]
    assert state["llm_ranking"][2:] == cf_rest


def test_ranker_without_json_extracts_ids_from_text(setup: dict[str, Any]) -> None:
    candidates = setup["candidates"]
    script = default_script(candidates)
    text = f"Best is {candidates[5]}, then {candidates[1]}."
    script["ranker"] = [text, text]
    state, trajectory, _ = run(setup, script, Context(chunk_size=3, structured_output="json"))
    assert state["llm_ranking"][:2] == [candidates[5], candidates[1]]
    assert trajectory.repairs["fallback"] == 1


def test_rrf_fusion_moves_cf_favourite_up(setup: dict[str, Any]) -> None:
    candidates = setup["candidates"]
    probe, _, _ = run(setup, default_script(candidates), Context(chunk_size=3, ranker_fusion="rrf"))
    cf_top = probe["cf_ranking"][0]
    llm_order = [c for c in candidates if c != cf_top] + [cf_top]  # the LLM puts the CF favourite last
    script = default_script(candidates, ranking=llm_order)
    llm_state, _, _ = run(setup, script, Context(chunk_size=3, ranker_fusion="llm"))
    rrf_state, _, _ = run(setup, script, Context(chunk_size=3, ranker_fusion="rrf"))
    assert llm_state["ranking"] == llm_order
    assert rrf_state["llm_ranking"] == llm_order
    assert rrf_state["ranking"].index(cf_top) < len(candidates) // 2
    assert sorted(rrf_state["ranking"]) == sorted(candidates)


@pytest.mark.parametrize("kind", ["echo_shown", "prose", "hallucinated_duplicates", "random_permutation"])
def test_uninformative_rankers_leave_the_prior_order(setup: dict[str, Any], kind: str) -> None:
    """Agreement fusion (the default): none of the four uninformative answers moves the prior."""
    candidates = setup["candidates"]
    probe, _, model = run(setup, default_script(candidates, ranking=["m999"]))
    prior = probe["cf_ranking"]
    ranker_prompt = next(call for call in model.calls if call.key == "ranker").prompt
    shown = [item for item in prior if f"[{item}]" in ranker_prompt]
    assert sorted(ranker_prompt.index(f"[{item}]") for item in shown) == [
        ranker_prompt.index(f"[{item}]") for item in shown
    ], "candidates are shown in prior order"
    answers: dict[str, Any] = {
        "echo_shown": list(prior),
        "prose": None,
        "hallucinated_duplicates": ["m999", prior[5], prior[5], "m998", prior[9], prior[9]],
        "random_permutation": random.Random(3).sample(prior, len(prior)),
    }
    script = default_script(candidates, ranking=answers[kind])
    if kind == "prose":
        script["ranker"] = ["I would enjoy several of these films.", "Any of them, really."]
    state, trajectory, _ = run(setup, script, Context(chunk_size=3, structured_output="json"))
    assert state["ranking"] == prior
    ranker = next(s for s in trajectory.steps if s.node == "ranker")
    assert ranker.output["fusion"] == "agreement"
    assert ranker.output["shown_order"] == prior
    if kind != "echo_shown":
        assert ranker.output["fusion_details"]["weight"] == 0.0


def test_no_tools_ablation_makes_no_cf_calls(setup: dict[str, Any]) -> None:
    evidence = FakeEvidence(setup["dataset"])
    state, _, model = run(
        setup, default_script(setup["candidates"]), Context(chunk_size=3, use_tools=False), evidence=evidence
    )
    assert evidence.calls == []
    assert state["cf_ranking"] == []
    assert all(not call.tools for call in model.calls)


def test_a_run_without_tools_never_leaves_the_event_loop(
    setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Routers and nodes are async: a sync router would cost a worker-thread hop on every edge."""
    hops: list[Any] = []
    original = asyncio.BaseEventLoop.run_in_executor

    def counting(loop: Any, executor: Any, func: Any, *args: Any) -> Any:
        hops.append(func)
        return original(loop, executor, func, *args)

    monkeypatch.setattr(asyncio.BaseEventLoop, "run_in_executor", counting)
    _, trajectory, _ = run(setup, default_script(setup["candidates"]), Context(chunk_size=3, use_tools=False))
    assert trajectory.nodes == ["abstractor", "planner", *AGENT_NODES, "reflector", "ranker"]
    assert hops == []


def test_abstractor_chunks_and_fuses_the_history(setup: dict[str, Any]) -> None:
    history = input_from_request(setup["request"], setup["dataset"])["history"]
    script = default_script(setup["candidates"])
    script["abstractor"] = ["summary one", "summary two"]
    state, trajectory, model = run(setup, script, Context(chunk_size=2))
    chunks = (len(history) + 1) // 2
    abstractor_calls = [c for c in model.calls if c.key == "abstractor"]
    assert len(abstractor_calls) == chunks - 1  # the last chunk stays verbatim
    assert [e["item_id"] for e in state["recent"]] == [
        e["item_id"] for e in history[-(len(history) - 2 * (chunks - 1)) :]
    ]
    assert "summary one" in abstractor_calls[1].prompt  # fusion sees the running summary
    assert trajectory.prompt["long-term summary"] == state["summary"]


def test_trajectory_records_llm_calls_tokens_and_prompt(setup: dict[str, Any]) -> None:
    _, trajectory, model = run(setup, default_script(setup["candidates"]))
    assert trajectory.llm_calls == len(model.calls)
    assert trajectory.prompt_tokens > 0 and trajectory.completion_tokens > 0
    planner = next(s for s in trajectory.steps if s.node == "planner")
    assert planner.llm_calls[0].messages[0]["role"] == "system"
    assert planner.output == {"agents": list(AGENT_NODES)}
    assert all(step.seconds >= 0 for step in trajectory.steps)
    assert len(trajectory.prompt["candidates"]) == 20
    assert trajectory.prompt["candidates"][0].startswith(f"[{setup['candidates'][0]}] Film")
    line = trajectory.to_line()
    assert json.loads(json.dumps(line))["hit@1"] in (True, False)


def test_native_tool_calls_from_aimessage_are_recorded(setup: dict[str, Any]) -> None:
    script = default_script(setup["candidates"], plan=["interest_divergence"])
    script["interest_divergence"] = [
        AIMessage(content="", tool_calls=[{"name": "user_cf", "args": {"user_id": "u4"}, "id": "c1"}]),
        analysis("may like comedy"),
    ]
    _, trajectory, _ = run(setup, script, Context(chunk_size=3, tool_protocol="native"))
    step = next(s for s in trajectory.steps if s.node == "interest_divergence")
    assert step.tool_calls[0].name == "user_cf"
    assert '<tool_call>{"name": "user_cf"' in step.llm_calls[0].response


def test_bad_input_names_the_field(setup: dict[str, Any]) -> None:
    model = ScriptedChatModel(responses=default_script(setup["candidates"]), cycle=True)
    compiled = build_mars_graph(chat_model=model, evidence=FakeEvidence(setup["dataset"]))
    with pytest.raises(ValueError, match="'candidates' is empty"):
        asyncio.run(compiled.ainvoke({"task_id": "x", "user_id": "u1", "candidates": []}))


def test_module_graph_is_named_and_bounded() -> None:
    assert graph.name == "mars"
    assert graph.config["recursion_limit"] == recursion_limit(Context())
    assert set(graph.get_graph().nodes) >= {"abstractor", "planner", *AGENT_NODES, "reflector", "ranker"}


def test_studio_draws_every_route_the_nodes_can_take() -> None:
    """Nodes route by ``Command(goto=...)``; their declared destinations are the drawn edges."""
    edges = {(edge.source, edge.target) for edge in graph.get_graph().edges}
    assert ("__start__", "abstractor") in edges and ("ranker", "__end__") in edges
    assert {("abstractor", "planner"), ("planner", "reflector"), ("reflector", "ranker")} <= edges
    for agent in AGENT_NODES:
        assert {("planner", agent), (agent, "reflector"), (agent, "ranker"), ("reflector", agent)} <= edges
        assert (agent, agent) not in edges


def test_a_route_outside_a_nodes_declared_destinations_is_an_error_not_a_loop() -> None:
    from langgraph.graph import END, START, StateGraph

    from starrec.graphs.graph import add_routed_node
    from starrec.graphs.state import State

    async def node(state: State, runtime: Any) -> dict[str, Any]:
        return {}

    def to_itself(state: State, context: Context) -> str:
        return "loop"

    builder = StateGraph(State, context_schema=Context)
    builder.add_edge(START, "loop")
    add_routed_node(builder, "loop", node, to_itself, ["done"])
    builder.add_node("done", node)
    builder.add_edge("done", END)
    with pytest.raises(RuntimeError, match=r"to_itself routed node to 'loop'.*declared destinations"):
        asyncio.run(builder.compile().ainvoke({"task_id": "t"}, context=Context()))


def test_native_structured_output_without_tools_is_one_call_per_agent(setup: dict[str, Any]) -> None:
    context = Context(chunk_size=3, use_tools=False, structured_output="native")
    state, trajectory, model = run(setup, default_script(setup["candidates"], plan=["user_profile"]), context)
    assert [c.key for c in model.calls if c.key == "user_profile"] == ["user_profile"]
    assert state["analyses"]["user_profile"]["conclusions"] == ["young adult"]
    assert "json_retry" not in trajectory.repairs and "fallback" not in trajectory.repairs


def test_required_tool_choice_forces_a_first_tool_call_then_asks_for_the_structure(
    setup: dict[str, Any],
) -> None:
    script = default_script(setup["candidates"], plan=["historical_interest"])
    script["historical_interest"] = [
        '<tool_call>{"name": "item_cf", "arguments": {"item_id": "m4"}}</tool_call>',
        analysis("action fan"),
    ]
    context = Context(chunk_size=3, tool_choice="required", max_tool_calls=1, structured_output="native")
    _, trajectory, model = run(setup, script, context)
    calls = [c for c in model.calls if c.key == "historical_interest"]
    assert calls[0].kwargs.get("tool_choice") == "required"
    assert len(calls) == 2  # the forced tool call, then one structured answer (no free-text turn)
    step = next(s for s in trajectory.steps if s.node == "historical_interest")
    assert step.output["conclusions"] == ["action fan"] and len(step.tool_calls) == 1


def test_native_structured_failure_falls_back_and_is_counted(setup: dict[str, Any]) -> None:
    script = default_script(setup["candidates"], plan=["user_profile"])
    script["user_profile"] = ["not json at all"]
    context = Context(chunk_size=3, use_tools=False, structured_output="native")
    _, trajectory, _ = run(setup, script, context)
    step = next(s for s in trajectory.steps if s.node == "user_profile")
    assert step.repairs["fallback"] == 1
    assert any(key.startswith("structured_") for key in step.repairs)  # the backend's own retry, announced


def test_demo_scores_the_prior_the_llm_started_from(setup: dict[str, Any]) -> None:
    from starrec.graphs.demo import prior_report

    candidates = setup["candidates"]
    _, trajectory, _ = run(setup, default_script(candidates, ranking=list(reversed(candidates))),
                           Context(chunk_size=3, ranker_fusion="llm"))  # fmt: skip
    report = prior_report([trajectory])
    ranker = next(step for step in trajectory.steps if step.node == "ranker")
    prior = ranker.output["cf_ranking"]
    assert report["tasks"] == 1
    assert report["hr@1"] == float(prior[0] == setup["task"].ground_truth)
    assert report["changed"] == int(trajectory.ranking != prior)


def test_a_batch_hands_its_callbacks_to_every_run_and_records_each_runs_own_settings(
    setup: dict[str, Any],
) -> None:
    from langchain_core.callbacks import BaseCallbackHandler

    from starrec.graphs.runner import RunJob, run_batch

    class NodeCounter(BaseCallbackHandler):
        run_inline = True

        def __init__(self) -> None:
            self.nodes: list[str] = []

        def on_chain_start(self, serialized: Any, inputs: Any, **kwargs: Any) -> None:
            if (kwargs.get("metadata") or {}).get("langgraph_node") == kwargs.get("name"):
                self.nodes.append(str(kwargs.get("name")))

    model = ScriptedChatModel(responses=default_script(setup["candidates"]), cycle=True)
    batch_context = Context(chunk_size=3, use_tools=False)
    own_context = Context(chunk_size=3, use_tools=False, temperature=0.7)
    compiled = build_mars_graph(batch_context, chat_model=model, evidence=FakeEvidence(setup["dataset"]))
    counter = NodeCounter()
    jobs = [RunJob(setup["request"], 0), RunJob(setup["request"], 1, context=own_context)]
    runs = asyncio.run(
        run_batch(compiled, jobs, setup["dataset"], batch_context, concurrency=1, callbacks=[counter])
    )
    assert all(run.error is None for run in runs)
    assert counter.nodes.count("abstractor") == 2 and counter.nodes.count("ranker") == 2
    assert [run.settings["temperature"] for run in runs] == [batch_context.temperature, 0.7]


def test_a_batch_collects_less_and_restores_the_collector_when_it_ends(setup: dict[str, Any]) -> None:
    import gc

    from starrec.graphs.runner import BATCH_GC_GEN0_THRESHOLD, RunJob, batch_gc, run_batch

    seen: list[tuple[tuple[int, ...], int]] = []
    model = ScriptedChatModel(responses=default_script(setup["candidates"]), cycle=True)
    context = Context(chunk_size=3, use_tools=False)
    compiled = build_mars_graph(context, chat_model=model, evidence=FakeEvidence(setup["dataset"]))
    before = gc.get_threshold()
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    runs = asyncio.run(
        run_batch(
            compiled,
            [RunJob(setup["request"], 0), RunJob(setup["request"], 1)],
            setup["dataset"],
            context,
            concurrency=2,
            on_done=lambda _: seen.append((gc.get_threshold(), gc.get_freeze_count())),
        )
    )
    assert all(run.error is None for run in runs) and len(seen) == 2
    assert all(threshold[0] == BATCH_GC_GEN0_THRESHOLD and frozen > 0 for threshold, frozen in seen)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    # Nested batches share one policy; the outer one restores it, even when the block raises.
    with pytest.raises(RuntimeError), batch_gc():
        with batch_gc():
            pass
        assert gc.get_threshold()[0] == BATCH_GC_GEN0_THRESHOLD and gc.get_freeze_count() > 0
        raise RuntimeError("a failed batch")
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    try:
        # A heap the application froze itself is left frozen, and nothing is frozen on top.
        gc.freeze()
        frozen = gc.get_freeze_count()
        with batch_gc():
            assert gc.get_freeze_count() == frozen
        assert gc.get_freeze_count() == frozen and gc.get_threshold() == before
        gc.unfreeze()
        # A threshold the application sets during a batch is kept when the batch ends.
        with batch_gc():
            gc.set_threshold(1234, *before[1:])
        assert gc.get_threshold() == (1234, *before[1:]) and gc.get_freeze_count() == 0
        # A collector the application disabled (threshold 0) is not turned back on.
        gc.set_threshold(0, *before[1:])
        with batch_gc():
            assert gc.get_threshold()[0] == 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_the_ranker_scores_in_memory_evidence_inline_and_a_blocking_source_in_a_thread(
    setup: dict[str, Any],
) -> None:
    import threading

    from starrec.tools.base import answers_in_memory

    class RecordingEvidence(FakeEvidence):
        def __init__(self, dataset: Any) -> None:
            super().__init__(dataset)
            self.threads: list[int] = []

        def candidate_cf(self, *args: Any, **kwargs: Any) -> Any:
            self.threads.append(threading.get_ident())
            return super().candidate_cf(*args, **kwargs)

    class InMemory(RecordingEvidence):
        def answers_in_memory(self, call: str) -> bool:
            return call == "candidate_cf"

    script = default_script(setup["candidates"])
    inline, threaded = InMemory(setup["dataset"]), RecordingEvidence(setup["dataset"])
    assert answers_in_memory(inline, "candidate_cf") and not answers_in_memory(threaded, "candidate_cf")
    rankings = []
    for evidence in (inline, threaded):
        state, _, _ = run(setup, script, Context(chunk_size=3), evidence=evidence)
        rankings.append(state["ranking"])
    assert inline.threads == [threading.get_ident()]  # the event loop's own thread
    assert len(threaded.threads) == 1 and threaded.threads[0] != threading.get_ident()
    assert rankings[0] == rankings[1]  # the same prior either way


def test_candidate_cf_answers_from_memory_once_its_index_is_built_and_while_it_is_small(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import starrec.tools.candidate_cf as candidate_cf

    scorer = candidate_cf.CandidateCF(None, engine="index")
    assert not scorer.in_memory  # built lazily from the store on the first call
    built = candidate_cf.CandidateCF.from_dataset(build_movie_dataset())
    assert built.in_memory
    monkeypatch.setattr(candidate_cf, "INLINE_MAX_EDGES", 10)  # the fixture has more edges than that
    assert not built.in_memory
