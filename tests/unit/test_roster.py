"""The agent roster: a new agent is one roster entry plus one prompt file, end to end.

The planner and its four analysts are five agents; the test adds a sixth, ``price_sensitivity``,
exactly as docs/architecture.md shows (one :class:`AgentSpec`, one prompt file), and follows it
through the MARS graph, the STAR serialiser, the student prompt and the student parser.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from mars_fixtures import FakeEvidence, analysis, build_movie_dataset, default_script, make_request, make_task

from starrec.contract.roster import ROSTER, AgentSpec, Roster
from starrec.contract.trajectory import Trajectory
from starrec.data.user_view import UserView
from starrec.distill.chain import DEFAULT_RECOMMEND_TOP, parse_chain, serialise_trajectory
from starrec.distill.student_prompt import star_system_prompt, trajectory_messages
from starrec.graphs.context import Context
from starrec.graphs.graph import build_mars_graph, recursion_limit
from starrec.graphs.recording import TrajectoryRecorder
from starrec.graphs.state import input_from_request
from starrec.llm.scripted import ScriptedChatModel

PROMPT = (
    "You are the price-sensitivity analyst of a $item recommender. Judge how much price and value "
    "drive the $user's choices.\n"
    'Answer with one JSON object: {"thinking": "<short reasoning>", "conclusions": ["<conclusion>", ...], '
    '"evidence_ids": ["<item id>", ...]}'
)

AGENT_NODES = tuple(agent.name for agent in ROSTER.agents if not agent.lookup)
"""The agents that run with an evidence source that stores no value profiles (user_values does not)."""


def rated_items(view: UserView) -> str:
    """The new agent's focus: how many recent items carry a rating."""
    rated = sum(entry.get("stars") is not None for entry in view.recent)
    return f"{rated} of the {len(view.recent)} recent items are rated."


@pytest.fixture
def roster(tmp_path: Path) -> Roster:
    prompt = tmp_path / "price_sensitivity.md"  # in the package: starrec/agents/prompts/price_sensitivity.md
    prompt.write_text(PROMPT, encoding="utf-8")
    return ROSTER.extended(
        AgentSpec(
            name="price_sensitivity",
            tag="price_analysis",
            role="how much price and value drive the choices of this $user.",
            phase_hint="price and value sensitivity",
            focus=rated_items,
            prompt=prompt,
        )
    )


def run(
    roster: Roster, context: Context, plan: list[str]
) -> tuple[dict[str, Any], Trajectory, ScriptedChatModel]:
    dataset = build_movie_dataset()
    task = make_task(dataset, "u4")
    request = make_request(dataset, task)
    script = default_script(list(request.candidates), plan=plan)
    script["price_sensitivity"] = [analysis("buys mid-priced films")]
    model = ScriptedChatModel(responses=script, cycle=True)
    graph = build_mars_graph(context, chat_model=model, evidence=FakeEvidence(dataset), roster=roster)
    recorder = TrajectoryRecorder(roster)
    state = asyncio.run(
        graph.ainvoke(input_from_request(request, dataset), context=context, config={"callbacks": [recorder]})
    )
    trajectory = recorder.trajectory(
        state, task_id=task.task_id, ground_truth=task.ground_truth, settings=context.settings()
    )
    return state, trajectory, model


def test_a_sixth_agent_runs_through_the_graph_the_serialiser_and_the_parser(roster: Roster) -> None:
    plan = ["price_sensitivity", *AGENT_NODES]
    state, trajectory, model = run(roster, Context(chunk_size=3), plan)

    # The graph: planned, run with its own prompt and focus, recorded like any other agent.
    assert trajectory.nodes == ["abstractor", "planner", *plan, "reflector", "ranker"]
    planner_prompt = next(call for call in model.calls if call.key == "planner").messages[0].content
    assert "- price_sensitivity: how much price and value drive the choices of this viewer." in planner_prompt
    assert "Use all five when unsure." in planner_prompt
    (call,) = [call for call in model.calls if call.key == "price_sensitivity"]
    system_prompt = call.messages[0].content
    assert "Your role:\nYou are the price-sensitivity analyst of a movie recommender." in system_prompt
    assert "recent items are rated." in call.prompt  # its focus, after the shared view of the user
    assert state["analyses"]["price_sensitivity"]["conclusions"] == ["buys mid-priced films"]
    step = next(step for step in trajectory.steps if step.node == "price_sensitivity")
    assert step.output["conclusions"] == ["buys mid-priced films"]

    # The serialiser and the student prompt: the agent's tag is a phase of the chain.
    text = serialise_trajectory(trajectory, roster)
    assert "<price_analysis>" in text and json.dumps(step.output, separators=(",", ":")) in text
    system = trajectory_messages(trajectory, roster=roster)[0]["content"]
    assert system == star_system_prompt(roster=roster)
    assert "<price_analysis> (price and value sensitivity)" in system and "'price_sensitivity'" in system

    # The student parser reads it back with the same roster, and only with it.
    chain = parse_chain(text, trajectory.candidates, roster)
    assert chain.errors == []
    assert chain.agents == plan
    assert chain.order[:2] == ["plan", "price_analysis"]
    assert chain.ranking == trajectory.ranking[:DEFAULT_RECOMMEND_TOP]
    assert any("price_analysis" in error for error in parse_chain(text, trajectory.candidates).errors)


def test_without_the_planner_the_sixth_agent_runs_in_roster_order(roster: Roster) -> None:
    context = Context(chunk_size=3, use_planner=False)
    _, trajectory, _ = run(roster, context, [])
    assert trajectory.nodes == ["abstractor", *AGENT_NODES, "price_sensitivity", "reflector", "ranker"]
    assert recursion_limit(context, roster) > recursion_limit(context)


def test_the_house_roster_is_the_four_analysts_and_user_values() -> None:
    assert ROSTER.names == (
        "user_profile", "historical_interest", "recent_interest", "interest_divergence", "user_values",
    )  # fmt: skip
    assert ROSTER.agent("user_values").tag == "values_analysis"
    assert recursion_limit(Context(max_correction_rounds=1)) == 2 * (9 + 6) + 2


@pytest.mark.parametrize(
    ("agent", "message"),
    [
        (AgentSpec(name="user_profile", tag="other", role="r", phase_hint="p"), "name user_profile"),
        (AgentSpec(name="other", tag="recent_analysis", role="r", phase_hint="p"), "tag recent_analysis"),
        (AgentSpec(name="ranker", tag="other", role="r", phase_hint="p"), "fixed node"),
    ],
)
def test_a_roster_entry_that_clashes_is_named(agent: AgentSpec, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ROSTER.extended(agent)
