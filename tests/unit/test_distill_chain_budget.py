"""The compact chain's generated-token budget: counting, fitting, and the text budget forcing appends."""

from __future__ import annotations

from typing import Any

import pytest
from distill_fixtures import make_trajectory

from starrec.distill.chain import (
    GENERATED_TOKEN_BUDGET,
    ChainFormat,
    ChainTokens,
    chain_budget_report,
    count_chain_tokens,
    forced_ending,
    open_tags,
    parse_chain,
    reached_recommend,
    serialise_trajectory,
    serialise_within_budget,
    tool_exchange,
)


class WordTokenizer:
    """One token per whitespace-separated word: counts a reader can check by eye."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [0] * len(text.split())


def test_tool_responses_are_counted_apart_from_generated_text() -> None:
    exchange = tool_exchange("item_cf", {"item_id": "242"}, "five words of inserted evidence")
    text = "<plan>\nthree words here\n</plan>\n<user_profile>\n" + exchange + "two words\n</user_profile>"
    tokens = count_chain_tokens(text, WordTokenizer())
    # generated: "<plan>", "three words here", "</plan>", "<user_profile>", the call, "two words", close tag
    assert tokens == ChainTokens(generated=1 + 3 + 1 + 1 + 1 + 2 + 1, tool=5)
    assert tokens.total == 15
    assert count_chain_tokens("", WordTokenizer()) == ChainTokens(0, 0)


def test_budget_report_counts_chains_over_the_budget() -> None:
    report = chain_budget_report(["a b c", "a " * 20, "<tool_response>" + "x " * 50 + "</tool_response>"],
                                 WordTokenizer(), budget=10)  # fmt: skip
    assert report.to_dict() == {
        "budget": 10,
        "chains": 3,
        "over_budget": 1,
        "max_generated_tokens": 20,
        "mean_generated_tokens": round(23 / 3, 1),
        "mean_tool_tokens": round(51 / 3, 1),
    }
    assert report.line().startswith("1/3 chains exceed the 10-token generated budget")


def test_serialise_within_budget_takes_the_most_detailed_format_that_fits() -> None:
    trajectory = make_trajectory()
    roomy, tokens = serialise_within_budget(trajectory, WordTokenizer(), budget=10_000)
    assert roomy == serialise_trajectory(trajectory)
    tight_budget = count_chain_tokens(roomy, WordTokenizer()).generated - 1
    tight, tight_tokens = serialise_within_budget(trajectory, WordTokenizer(), budget=tight_budget)
    assert tight_tokens.generated <= tight_budget < tokens.generated
    assert parse_chain(tight).errors == [] and tight.count("<tool_call>") == roomy.count("<tool_call>")
    # Nothing fits: the tersest chain comes back, and its count shows it is over.
    terse, terse_tokens = serialise_within_budget(trajectory, WordTokenizer(), budget=1)
    assert terse_tokens.generated > 1 and len(terse) < len(tight)
    assert serialise_within_budget(trajectory, WordTokenizer(), 1, ChainFormat(recommend_top=3))[0].endswith(
        '["' + '","'.join(trajectory.ranking[:3]) + '"]\n</recommend>'
    )


@pytest.mark.parametrize(
    ("text", "tags", "ending"),
    [
        ("", [], "\n<recommend>\n"),
        ("<plan>\nthinking", ["plan"], "</plan>\n<recommend>\n"),
        (
            "<plan>p</plan>\n<historical_analysis>\nx",
            ["historical_analysis"],
            "</historical_analysis>\n<recommend>\n",
        ),
        (
            '<correction>\n<recent_analysis>\n<tool_call>{"name": "item_c',
            ["correction", "recent_analysis", "tool_call"],
            "</tool_call></recent_analysis></correction>\n<recommend>\n",
        ),
        ("<plan>p</plan><user_profile>u</user_profile>", [], "\n<recommend>\n"),
    ],
)
def test_forced_ending_closes_what_is_open_innermost_first(text: str, tags: list[str], ending: str) -> None:
    assert open_tags(text) == tags
    assert forced_ending(text) == ending
    assert not reached_recommend(text)
    forced = text + ending + '["1"]\n</recommend>'
    chain = parse_chain(forced)
    assert chain.ranking == ["1"] and reached_recommend(forced) and open_tags(forced) == []
    assert not any("never closed" in error or "outside" in error for error in chain.errors)


def test_reached_recommend_means_a_top_level_recommend() -> None:
    assert reached_recommend('<plan>p</plan><recommend>["1", "2')
    assert open_tags('<plan>p</plan><recommend>["1", "2') == ["recommend"]
    assert not reached_recommend("<plan>the word recommend, not the tag</plan>")


@pytest.fixture(scope="module")
def smollm2_tokenizer() -> Any:
    try:
        from transformers import AutoTokenizer

        from starrec.llm.local import resolve_model_dir

        return AutoTokenizer.from_pretrained(resolve_model_dir("smollm2"))
    except (FileNotFoundError, OSError) as error:
        pytest.skip(f"SmolLM2 tokenizer unavailable: {error}")


def fixture_trajectories() -> list[Any]:
    """Every teacher run the tests record by hand: the short ones and the ML-100k-sized ones."""
    from distill_fixtures import ml100k_runs

    return [make_trajectory(), make_trajectory(correction=False), *ml100k_runs()]


def test_fixture_chains_fit_the_generated_budget_in_smollm2_tokens(smollm2_tokenizer: Any) -> None:
    for trajectory in fixture_trajectories():
        text, tokens = serialise_within_budget(trajectory, smollm2_tokenizer)
        assert tokens.generated <= GENERATED_TOKEN_BUDGET, (trajectory.task_id, tokens)
        assert tokens == count_chain_tokens(text, smollm2_tokenizer)
        chain = parse_chain(text, trajectory.candidates)
        assert chain.errors == [] and chain.ranking == trajectory.ranking[:10]
        assert len(chain.tool_calls) == sum(len(step.tool_calls) for step in trajectory.steps)
