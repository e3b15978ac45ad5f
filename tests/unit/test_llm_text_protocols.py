"""The shared text protocols: tool-call syntax, tolerant JSON extraction, candidate ids in free text."""

from __future__ import annotations

import json

import pytest

from starrec.llm.candidate_ids import extract_ids
from starrec.llm.json_repair import JSONExtractionError, extract_json, extract_json_with_repairs
from starrec.llm.toolcall_syntax import (
    TOOL_CALL_CLOSE,
    describe_tools,
    format_tool_call,
    format_tool_response,
    parse_tool_calls,
    strip_tool_calls,
)

# ---------------------------------------------------------------------------------------------
# Tool calls
# ---------------------------------------------------------------------------------------------


def test_format_tool_call_is_hermes_json() -> None:
    text = format_tool_call("item_cf", {"item_id": "B00X", "k": 5})
    assert text.startswith("<tool_call>") and text.endswith("</tool_call>")
    body = json.loads(text[len("<tool_call>") : -len("</tool_call>")])
    assert body == {"name": "item_cf", "arguments": {"item_id": "B00X", "k": 5}}


def test_format_tool_call_keeps_unicode_and_defaults_arguments() -> None:
    assert format_tool_call("user_cf") == '<tool_call>{"name": "user_cf", "arguments": {}}</tool_call>'
    assert "Amélie" in format_tool_call("item_cf", {"title": "Amélie"})
    with pytest.raises(ValueError, match="non-empty tool name"):
        format_tool_call("", {})


def test_format_tool_response_wraps_text_and_json() -> None:
    assert format_tool_response("evidence") == "<tool_response>evidence</tool_response>"
    assert format_tool_response({"a": 1}) == '<tool_response>{"a": 1}</tool_response>'


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("item_cf", {"item_id": "42", "k": 10}),
        ("user_cf", {"user_id": "u-1"}),
        ("x", {"nested": {"a": [1, 2]}}),
    ],
)
def test_format_then_parse_round_trip(name: str, arguments: dict) -> None:
    [call] = parse_tool_calls("thinking... " + format_tool_call(name, arguments) + " done")
    assert call.ok and call.closed
    assert (call.name, call.arguments) == (name, arguments)


def test_parse_several_calls_in_order_with_positions() -> None:
    text = (
        f"a {format_tool_call('item_cf', {'item_id': '1'})} b {format_tool_call('user_cf', {'user_id': '2'})}"
    )
    calls = parse_tool_calls(text)
    assert [call.name for call in calls] == ["item_cf", "user_cf"]
    assert text[calls[0].start : calls[0].end] == calls[0].raw
    assert calls[1].start > calls[0].end


def test_parse_tolerates_whitespace_inside_tags() -> None:
    [call] = parse_tool_calls(
        '<tool_call>\n  {"name": "item_cf", "arguments": {"item_id": "7"}}\n</tool_call>'
    )
    assert call.ok and call.arguments == {"item_id": "7"}


def test_unclosed_call_at_stop_string_is_parsed() -> None:
    # Generation stopped at the "</tool_call>" stop string, which is not part of the returned text.
    [call] = parse_tool_calls('Let me look. <tool_call>{"name": "item_cf", "arguments": {"item_id": "9"}}')
    assert call.ok and not call.closed and call.arguments == {"item_id": "9"}


def test_call_cut_by_next_call_is_unclosed() -> None:
    calls = parse_tool_calls(
        '<tool_call>{"name": "a", "arguments": {}}<tool_call>{"name": "b", "arguments": {}}'
    )
    assert [(call.name, call.closed) for call in calls] == [("a", False), ("b", False)]


@pytest.mark.parametrize(
    ("body", "error_fragment"),
    [
        ('{"name": "item_cf", "arguments": {"item_id": "1",}}', "not valid JSON"),
        ("", "empty"),
        ('["item_cf"]', "JSON object"),
        ('{"arguments": {}}', '"name"'),
        ('{"name": "item_cf"}', '"arguments" object'),
        ('{"name": "item_cf", "arguments": "k=5"}', '"arguments" object'),
    ],
)
def test_malformed_calls_report_errors(body: str, error_fragment: str) -> None:
    [call] = parse_tool_calls(f"<tool_call>{body}</tool_call>")
    assert not call.ok
    assert error_fragment in call.error
    assert call.raw == f"<tool_call>{body}</tool_call>"


def test_repair_mode_fixes_bodies_and_records_repairs() -> None:
    [call] = parse_tool_calls(
        "<tool_call>{'name': 'item_cf', 'arguments': {'item_id': '1',}}</tool_call>", repair=True
    )
    assert call.ok and call.arguments == {"item_id": "1"}
    assert "single_quotes" in call.repairs and "trailing_commas" in call.repairs


def test_repair_mode_parses_string_arguments_and_binds_scalars() -> None:
    [as_string] = parse_tool_calls(
        '<tool_call>{"name": "a", "arguments": "{\\"k\\": 3}"}</tool_call>', repair=True
    )
    assert as_string.arguments == {"k": 3} and "arguments_as_string" in as_string.repairs
    [scalar] = parse_tool_calls(
        '<tool_call>{"name": "item_cf", "arguments": 50}</tool_call>',
        repair=True,
        tool_parameters={"item_cf": ["item_id", "k"]},
    )
    assert scalar.ok and scalar.arguments == {"item_id": 50} and "scalar_arguments" in scalar.repairs
    [missing] = parse_tool_calls('<tool_call>{"name": "user_cf"}</tool_call>', repair=True)
    assert missing.ok and missing.arguments == {} and "missing_arguments" in missing.repairs


def test_repair_mode_still_reports_hopeless_bodies() -> None:
    [call] = parse_tool_calls("<tool_call>call item_cf please</tool_call>", repair=True)
    assert not call.ok and "even after repair" in call.error


def test_strip_tool_calls_leaves_prose() -> None:
    text = f"First I check.\n{format_tool_call('item_cf', {'item_id': '1'})}\nThen I answer."
    assert strip_tool_calls(text) == "First I check.\n\nThen I answer."
    assert strip_tool_calls("no calls") == "no calls"


def test_describe_tools_lists_signatures_and_example() -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "item_cf",
            "description": "neighbours",
            "parameters": {
                "type": "object",
                "properties": {"item_id": {"type": "string"}, "k": {"type": "integer"}},
            },
        },
    }
    text = describe_tools([tool])
    assert '"name": "item_cf"' in text and "<tools>" in text
    [example] = parse_tool_calls(text)
    assert example.ok and example.name == "item_cf" and example.arguments == {"item_id": "...", "k": 10}
    with pytest.raises(ValueError):
        describe_tools([])


def test_stop_string_constant_matches_closing_tag() -> None:
    assert format_tool_call("a", {}).endswith(TOOL_CALL_CLOSE)


# ---------------------------------------------------------------------------------------------
# JSON extraction
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ['{"a": 1, "b": [true, null]}', "  [1, 2]  ", '{"quote": "it\'s {not} [json]"}', '{"u": "\\u00e9"}'],
)
def test_clean_json_needs_no_repair(text: str) -> None:
    extraction = extract_json_with_repairs(text)
    assert extraction.value == json.loads(text)
    assert extraction.repairs == ()


@pytest.mark.parametrize(
    ("text", "expected", "repair"),
    [
        ('```json\n{"a": 1}\n```', {"a": 1}, "code_fence"),
        ("```\n[1, 2]\n```", [1, 2], "code_fence"),
        ('Sure! Here is the answer: {"a": 1} Hope it helps.', {"a": 1}, "surrounding_text"),
        ('{"a": [1, 2,], "b": 3,}', {"a": [1, 2], "b": 3}, "trailing_commas"),
        ("{'a': 'x', 'b': ['y']}", {"a": "x", "b": ["y"]}, "single_quotes"),
        ("{'title': 'Schindler\\'s List'}", {"title": "Schindler's List"}, "single_quotes"),
        ('{"a": True, "b": None, "c": False}', {"a": True, "b": None, "c": False}, "python_literals"),
        ('{a: 1, b_2: "x"}', {"a": 1, "b_2": "x"}, "unquoted_keys"),
        ('{"a": 1 "b": 2}', {"a": 1, "b": 2}, "missing_commas"),
        ('["x" "y"]', ["x", "y"], "missing_commas"),
        ('{"a": 1, // the first\n "b": 2}', {"a": 1, "b": 2}, "comments"),
        ('{"a": [1, 2, {"b": "tru', {"a": [1, 2, {"b": "tru"}]}, "truncated"),
        ('{"a": 1, "b":', {"a": 1}, "dangling_key"),
        ('{"a": 1.}', {"a": 1.0}, "numbers"),
        ('{"a": "line\nbreak"}', {"a": "line\nbreak"}, "reformatted"),
        ('{"a": [1,, 2]}', {"a": [1, 2]}, "extra_commas"),
    ],
)
def test_repairs(text: str, expected: object, repair: str) -> None:
    extraction = extract_json_with_repairs(text)
    assert extraction.value == expected
    assert repair in extraction.repairs


def test_expect_skips_values_of_the_wrong_type() -> None:
    text = 'Candidates [1, 2] and the answer {"ranking": [2, 1]}'
    assert extract_json(text) == [1, 2]
    assert extract_json(text, expect=dict) == {"ranking": [2, 1]}


def test_prose_brackets_before_json_are_skipped() -> None:
    assert extract_json('I [think] this: {"a": 1}') == {"a": 1}


def test_python_literal_fallback() -> None:
    extraction = extract_json_with_repairs("{'a': (1, 2)}")
    assert extraction.value == {"a": (1, 2)} and extraction.repairs == ("python_literal",)


@pytest.mark.parametrize("text", ["", "   ", "no json here", "{ this is : not json at all }", "[my, answer"])
def test_hopeless_text_raises_a_clear_error(text: str) -> None:
    with pytest.raises(JSONExtractionError, match=r"Could not recover|Empty model answer"):
        extract_json(text)


def test_error_message_names_what_was_expected_and_shows_the_text() -> None:
    with pytest.raises(JSONExtractionError) as caught:
        extract_json("[1, 2]", expect=dict)
    assert "JSON object" in str(caught.value) and "[1, 2]" in str(caught.value)
    assert caught.value.text == "[1, 2]"


def test_long_text_is_abbreviated_in_errors() -> None:
    with pytest.raises(JSONExtractionError) as caught:
        extract_json("x" * 1000)
    assert len(str(caught.value)) < 500


# ---------------------------------------------------------------------------------------------
# Ids in free text
# ---------------------------------------------------------------------------------------------

CANDIDATES = ["242", "51", "1", "12", "7", "B00XYZ", "-kG0N8sBhBotMbu0KVSPaw"]


def test_ids_in_order_of_first_mention_without_duplicates() -> None:
    assert extract_ids("B00XYZ then 51, again B00XYZ, then 7", CANDIDATES) == ["B00XYZ", "51", "7"]


def test_ids_match_whole_tokens_only() -> None:
    assert extract_ids("1234 and 2420 and x51 and 12", CANDIDATES) == ["12"]


def test_yelp_style_ids_with_dashes() -> None:
    assert extract_ids("best: -kG0N8sBhBotMbu0KVSPaw.", CANDIDATES) == ["-kG0N8sBhBotMbu0KVSPaw"]


def test_line_enumerators_are_not_ids() -> None:
    text = "<recommend>\n1. 242\n2. 51\n3) 7\n</recommend>"
    assert extract_ids(text, CANDIDATES) == ["242", "51", "7"]
    assert extract_ids("<recommend>1. 242, 2. 51</recommend>", CANDIDATES) == ["242", "51"]


def test_inline_enumerators_before_ids_are_skipped_but_real_ids_kept() -> None:
    assert extract_ids("ranking: 12, 1. 7", CANDIDATES) == ["12", "7"]
    assert extract_ids("ranking: 12, 7, 1.", CANDIDATES) == ["12", "7", "1"]
    assert extract_ids("ranking: 12, 7, 1. Then more text", CANDIDATES) == ["12", "7", "1"]


def test_enumerators_can_be_kept() -> None:
    assert extract_ids("1. 242", CANDIDATES, skip_enumerators=False) == ["1", "242"]


def test_ids_in_json_lists_and_empty_inputs() -> None:
    assert extract_ids('{"ranking": ["7", "1", "242"]}', CANDIDATES) == ["7", "1", "242"]
    assert extract_ids("", CANDIDATES) == []
    assert extract_ids("242", []) == []


def test_regex_metacharacters_in_ids_are_literal() -> None:
    assert extract_ids("pick a+b then a.b", ["a+b", "a.b", "axb"]) == ["a+b", "a.b"]
