"""Serialisation <-> parse round trip of the STAR chain, and the parser's strictness."""

from __future__ import annotations

import json

import pytest
from distill_fixtures import make_trajectory

from starrec.contract.roster import AGENT_TAGS
from starrec.distill.chain import (
    CORRECTION,
    DEFAULT_RECOMMEND_TOP,
    PLAN,
    RECOMMEND,
    REFLECTION,
    ChainFormat,
    parse_chain,
    parse_ranking,
    serialise_trajectory,
)
from starrec.distill.student_prompt import build_student_messages, star_system_prompt, trajectory_messages


def test_round_trip_recovers_phases_tool_calls_and_ranking() -> None:
    trajectory = make_trajectory()
    text = serialise_trajectory(trajectory)
    chain = parse_chain(text)
    assert chain.errors == []
    assert chain.order == [
        PLAN,
        AGENT_TAGS["user_profile"],
        AGENT_TAGS["historical_interest"],
        AGENT_TAGS["recent_interest"],
        REFLECTION,
        CORRECTION,
        RECOMMEND,
    ]
    assert chain.agents == ["user_profile", "historical_interest", "recent_interest", "recent_interest"]
    corrected = [phase for phase in chain.phases if phase.in_correction]
    assert [phase.tag for phase in corrected] == ["recent_analysis"]
    recorded = [call for step in trajectory.steps for call in step.tool_calls]
    assert [(call.name, call.arguments, call.response) for call in chain.tool_calls] == [
        (call.name, call.arguments, call.response) for call in recorded
    ]
    assert all(call.error is None for call in chain.tool_calls)
    assert chain.ranking == trajectory.ranking[:DEFAULT_RECOMMEND_TOP]
    # Phase contents keep each step's structured output as compact JSON.
    plan = chain.phase(PLAN)
    assert plan is not None and '{"agents":["user_profile"' in plan.content
    historical = chain.phase("historical_analysis")
    assert historical is not None and [call.name for call in historical.tool_calls] == ["item_cf"]


def test_round_trip_without_correction_and_abstractor_is_left_out() -> None:
    trajectory = make_trajectory(correction=False)
    text = serialise_trajectory(trajectory)
    assert "<correction>" not in text
    assert "abstractor" not in text
    chain = parse_chain(text)
    assert chain.errors == []
    assert CORRECTION not in chain.order
    assert chain.ranking == trajectory.ranking[:DEFAULT_RECOMMEND_TOP]


def test_parser_tolerates_whitespace() -> None:
    text = serialise_trajectory(make_trajectory())
    spaced = text.replace("\n", "\n\n   ").replace("><", ">  \t<")
    chain = parse_chain("\n  " + spaced + "\n\n")
    assert chain.errors == []
    assert chain.ranking == make_trajectory().ranking[:DEFAULT_RECOMMEND_TOP]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('<plan>x</plan><recommend>["1"]</recommnd>', "never closed"),
        ("<plan>x</reflection>", "unexpected </reflection>"),
        ("hello <plan>x</plan>", "text outside any phase"),
        ("<plan>x</plan> trailing", "text outside any phase"),
        ("<plan><reflection>x</reflection></plan>", "not allowed inside <plan>"),
        ("<correction><plan>x</plan></correction>", "not allowed inside <correction>"),
        ("<tool_call>{}</tool_call>", "not allowed at top level"),
        ("<plan><tool_response>x</tool_response></plan>", "does not follow a <tool_call>"),
    ],
)
def test_parser_is_strict_about_tags(text: str, fragment: str) -> None:
    errors = parse_chain(text).errors
    assert any(fragment in error for error in errors), errors


def test_invalid_tool_calls_are_reported() -> None:
    chain = parse_chain(
        "<plan>p</plan><user_profile><tool_call>{bad json}</tool_call>"
        '<tool_call>{"name": "web_search", "arguments": {}}</tool_call>'
        '<tool_call>{"name": "item_cf", "arguments": "242"}</tool_call>'
        '<tool_call>{"name": "item_cf", "arguments": {"item_id": "242"}}</tool_call></user_profile>'
    )
    errors = [call.error for call in chain.tool_calls]
    assert errors[0] is not None and "JSON" in errors[0]
    assert errors[1] is not None and "web_search" in errors[1]
    assert errors[2] is not None and "arguments" in errors[2]
    assert errors[3] is None


def test_parse_ranking_json_and_free_text() -> None:
    assert parse_ranking('Dramas first.\n["242", 302, "51"]') == ["242", "302", "51"]
    assert parse_ranking("1. 242\n2. 302\n3. 51", candidates=["51", "242", "302"]) == ["242", "302", "51"]
    assert parse_ranking("no ids at all") == []


def test_student_messages_list_prompt_and_candidates_in_order() -> None:
    trajectory = make_trajectory()
    messages = trajectory_messages(trajectory)
    assert [message["role"] for message in messages] == ["system", "user"]
    assert messages[0]["content"] == star_system_prompt()
    user = messages[1]["content"]
    assert "## summary\nWatched 1990s dramas" in user
    assert json.dumps(trajectory.candidates) in user
    assert "user u7" in user and "20 candidate movies" in user
    with pytest.raises(ValueError, match="candidate list is empty"):
        build_student_messages({}, [])


def test_ablation_prompts_drop_their_phase() -> None:
    assert "<plan>" not in star_system_prompt("no_planner")
    assert "<reflection>" not in star_system_prompt("no_reflector")
    assert "<tool_call>" not in star_system_prompt("no_tools")
    with pytest.raises(ValueError, match="unknown ablation"):
        star_system_prompt("no_ranker")


def test_serialiser_rejects_incomplete_runs_and_unknown_nodes() -> None:
    trajectory = make_trajectory()
    trajectory.ranking = trajectory.ranking[:5]
    with pytest.raises(ValueError, match="ranking has 5 ids for 20 candidates"):
        serialise_trajectory(trajectory)
    trajectory = make_trajectory()
    trajectory.steps[1].node = "oracle"
    with pytest.raises(ValueError, match="'oracle' has no place"):
        serialise_trajectory(trajectory)


def test_compact_format_bounds_thinking_and_conclusions_but_keeps_the_plan_whole() -> None:
    trajectory = make_trajectory(correction=False)
    planner, profile = trajectory.steps[1], trajectory.steps[2]
    planner.output = {
        "agents": ["user_profile", "historical_interest", "recent_interest", "interest_divergence"]
    }
    profile.thinking = (
        "The user rates <plan> dramas highly and watches them on weekends with friends and family "
        "almost every single week of the year. Second sentence is dropped."
    )
    profile.output = {
        "conclusions": [f"conclusion {n} " + "word " * 20 for n in range(6)],
        "evidence_ids": [],
        "correction": "repeat of the reflection",
    }
    text = serialise_trajectory(trajectory, fmt=ChainFormat(thinking_words=8, list_items=2, item_words=3))
    chain = parse_chain(text)
    assert chain.errors == []  # the stray <plan> in the thinking is gone
    plan = chain.phase(PLAN)
    assert plan is not None and '"interest_divergence"]}' in plan.content
    phase = chain.phase("user_profile")
    assert phase is not None
    thinking, conclusions = phase.content.split("\n")
    assert thinking == "The user rates dramas highly and watches them"
    assert conclusions == '{"conclusions":["conclusion 0 word","conclusion 1 word"]}'


def test_repeated_conclusions_and_ones_restating_the_thinking_are_dropped() -> None:
    trajectory = make_trajectory(correction=False)
    profile = trajectory.steps[2]
    profile.thinking = "Rates dramas highly."
    profile.output = {
        "conclusions": ["Rates dramas highly.", "likes comedies", "likes comedies", "avoids horror"],
        "evidence_ids": ["12", "12", "7"],
    }
    phase = parse_chain(serialise_trajectory(trajectory, fmt=ChainFormat(list_items=3))).phase("user_profile")
    assert phase is not None
    thinking, output = phase.content.split("\n")
    assert thinking == "Rates dramas highly."
    # Repeats go before the cut to list_items, so "avoids horror" (the fourth item) survives.
    expected = {"conclusions": ["likes comedies", "avoids horror"], "evidence_ids": ["12", "7"]}
    assert json.loads(output) == expected


def test_recommend_holds_the_top_r_ids_or_every_id() -> None:
    trajectory = make_trajectory()
    assert (
        parse_chain(serialise_trajectory(trajectory, fmt=ChainFormat(recommend_top=3))).ranking
        == (trajectory.ranking[:3])
    )
    everything = serialise_trajectory(trajectory, fmt=ChainFormat(recommend_top=None))
    assert parse_chain(everything).ranking == trajectory.ranking
    assert "Dramas first" not in everything  # the ranker's thinking is not part of the chain
    with pytest.raises(ValueError, match=r"recommend_top must be None or >= 1, got 0"):
        ChainFormat(recommend_top=0)


def test_old_verbose_chains_still_parse() -> None:
    """The format before compact chains: spaced JSON, thinking in every phase and before the full list."""
    ranking = [str(item) for item in range(1, 21)]
    old = (
        '<plan>\nLong history: profile first.\n{"agents": ["user_profile"]}\n</plan>\n'
        '<user_profile>\n<tool_call>{"name": "user_cf", "arguments": {"user_id": "u7"}}</tool_call>\n'
        "<tool_response>Similar users liked 3.</tool_response>\n"
        'Selective adult viewer who rates dramas highly.\n{"conclusions": ["adult viewer"]}\n'
        "</user_profile>\n"
        '<reflection>\nConsistent.\n{"passed": true, "feedback": []}\n</reflection>\n'
        f"<recommend>\nDramas first, then comedies.\n{json.dumps(ranking)}\n</recommend>"
    )
    chain = parse_chain(old)
    assert chain.errors == [] and chain.ranking == ranking
    assert [call.name for call in chain.tool_calls] == ["user_cf"]
    assert chain.has_phases_in_order([PLAN, REFLECTION, RECOMMEND])


def test_a_long_run_without_spaces_is_bounded_too() -> None:
    """SmolLM2 teachers write things like '1.1.1.1…' (one 'word', dozens of tokens)."""
    trajectory = make_trajectory(correction=False)
    trajectory.steps[1].thinking = "1." * 200
    trajectory.steps[2].output = {"conclusions": ["x" * 500]}
    chain = parse_chain(serialise_trajectory(trajectory, fmt=ChainFormat(thinking_words=4, item_words=3)))
    plan, profile = chain.phase(PLAN), chain.phase("user_profile")
    assert plan is not None and plan.content.split("\n")[0] == "1." * 10
    assert profile is not None and profile.content.endswith('{"conclusions":["' + "x" * 20 + '"]}')
