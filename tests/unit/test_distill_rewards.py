"""Every case of the STAR rewards (format and tiered outcome) and their TRL wrappers."""

from __future__ import annotations

import json

import pytest
from distill_fixtures import make_trajectory

from starrec.distill.chain import serialise_trajectory
from starrec.distill.rewards import (
    completion_text,
    format_reward,
    format_reward_func,
    make_format_reward_func,
    outcome_reward_func,
    star_reward_funcs,
    tiered_outcome_reward,
)

IDS = [f"i{index}" for index in range(20)]
TOOL = '<tool_call>{"name": "item_cf", "arguments": {"item_id": "i3"}}</tool_call>'


def chain(ranking: list[str] | None = None, *, tool: str = TOOL, plan: str = "<plan>p {}</plan>") -> str:
    ranking = IDS if ranking is None else ranking
    return (
        f"{plan}<user_profile>{tool}<tool_response>ev</tool_response>{{}}</user_profile>"
        f'<reflection>{{"passed": true}}</reflection><recommend>{json.dumps(ranking)}</recommend>'
    )


@pytest.mark.parametrize(
    ("position", "expected"),
    [(0, 1.0), (1, 2 / 3), (2, 2 / 3), (3, 1 / 3), (4, 1 / 3), (5, 0.0), (19, 0.0)],
)
def test_tiered_outcome_by_position(position: int, expected: float) -> None:
    ranking = IDS[:]
    ranking.remove("i7")
    ranking.insert(position, "i7")
    assert tiered_outcome_reward(chain(ranking), "i7") == pytest.approx(expected)


def test_outcome_absent_or_unparseable_is_zero() -> None:
    assert tiered_outcome_reward(chain([item for item in IDS if item != "i7"]), "i7") == 0.0
    assert tiered_outcome_reward("<plan>x</plan><recommend>no list here</recommend>", "i7") == 0.0
    assert tiered_outcome_reward("no tags at all i7", "i7") == 0.0


def test_format_reward_valid_chain_and_recorded_trajectory() -> None:
    assert format_reward(chain()) == 1.0
    assert format_reward(serialise_trajectory(make_trajectory())) == 1.0


def test_format_reward_malformed_tool_call_json() -> None:
    assert (
        format_reward(chain(tool='<tool_call>{"name": "item_cf", "arguments": {"item_id": }</tool_call>'))
        == -1.0
    )
    assert format_reward(chain(tool='<tool_call>{"name": "search", "arguments": {}}</tool_call>')) == -1.0
    assert format_reward(chain(tool='<tool_call>{"name": "item_cf", "arguments": "i3"}</tool_call>')) == -1.0
    assert format_reward(chain(tool='<tool_call>{"name": "item_cf", "arguments": {}}')) == -1.0  # unclosed


def test_format_reward_missing_or_empty_phase() -> None:
    assert format_reward(chain(plan="")) == -1.0
    assert format_reward(chain(plan="<plan>  \n </plan>")) == -1.0
    assert format_reward(chain().replace('<reflection>{"passed": true}</reflection>', "")) == -1.0
    assert format_reward(chain().split("<recommend>")[0]) == -1.0


def test_format_reward_phases_out_of_order() -> None:
    reordered = f"<reflection>ok</reflection><plan>p</plan><recommend>{json.dumps(IDS)}</recommend>"
    assert format_reward(reordered) == -1.0
    late_plan = f"<reflection>ok</reflection><recommend>{json.dumps(IDS)}</recommend><plan>p</plan>"
    assert format_reward(late_plan) == -1.0


def test_format_reward_ablation_requirements() -> None:
    no_plan = chain(plan="")
    assert format_reward(no_plan, "no_planner") == 1.0
    no_reflection = chain().replace('<reflection>{"passed": true}</reflection>', "")
    assert format_reward(no_reflection, "no_reflector") == 1.0
    assert format_reward(no_reflection, "no_planner") == -1.0


def test_trl_wrappers_accept_standard_and_conversational_completions() -> None:
    good, bad = chain(), "<plan>x</plan>"
    conversational = [[{"role": "assistant", "content": good}], [{"role": "assistant", "content": bad}]]
    prompts = [[{"role": "user", "content": "rank"}]] * 2
    assert format_reward_func(prompts, [good, bad]) == [1.0, -1.0]
    assert format_reward_func(prompts, conversational) == [1.0, -1.0]
    assert outcome_reward_func(prompts, conversational, ground_truth=["i0", "i0"]) == [1.0, 0.0]
    assert outcome_reward_func(prompts, [good, good], ground_truth=["i2", "i9"]) == pytest.approx(
        [2 / 3, 0.0]
    )
    with pytest.raises(ValueError, match="ground-truth"):
        outcome_reward_func(prompts, [good], ground_truth=["i0", "i1"])
    funcs = star_reward_funcs("no_planner")
    assert [func.__name__ for func in funcs] == ["format_reward", "outcome_reward"]
    assert make_format_reward_func("no_planner")(prompts, [chain(plan="")]) == [1.0]
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "a"}]}]) == "a"
