"""Deterministic and LLM verbalisation: grouping, parsing/repair, cache, retries, fallback."""

from __future__ import annotations

import re
from pathlib import Path

from langchain_core.messages import BaseMessage

from starrec.llm.scripted import ScriptedChatModel
from starrec.tools.llm_verbaliser import LLMVerbaliser
from starrec.tools.verbalise import (
    EvidenceRequest,
    MetadataVerbaliser,
    NeighbourInfo,
    parse_llm_groups,
)


def _request(tool: str = "item_cf") -> EvidenceRequest:
    neighbours = [
        NeighbourInfo("a1", "Alien", ("genre=Sci-Fi", "genre=Horror"), 9),
        NeighbourInfo("a2", "Blade Runner", ("genre=Sci-Fi",), 8),
        NeighbourInfo("a3", "Heat", ("genre=Action", "genre=Crime"), 7),
        NeighbourInfo("a4", "Ronin", ("genre=Action",), 6),
        NeighbourInfo("a5", "Solaris", ("genre=Sci-Fi",), 5),
        NeighbourInfo("a6", "Amelie", ("genre=Romance",), 4),
    ]
    return EvidenceRequest(tool, "x", "Star Wars", ("genre=Sci-Fi", "genre=Action"), neighbours, 12, "movie")


def test_groups_by_most_shared_facet_with_other_bucket() -> None:
    result = MetadataVerbaliser().verbalise(_request())
    names = [group.name for group in result.groups]
    assert names == ["Sci-Fi", "Action", "Other"]
    assert result.groups[0].item_ids == ["a1", "a2", "a5"]
    assert result.groups[2].item_ids == ["a6"]
    assert 'a1 "Alien" (9)' in result.text
    assert "shares the genre Sci-Fi with the anchor" in result.text
    assert result.by == "deterministic"


def test_representatives_capped_at_five_and_deterministic() -> None:
    request = _request()
    request.neighbours = [NeighbourInfo(f"d{i}", f"D{i}", ("genre=Drama",), 20 - i) for i in range(9)]
    first = MetadataVerbaliser().verbalise(request)
    assert first.groups[0].item_ids == ["d0", "d1", "d2", "d3", "d4"] and first.groups[0].size == 9
    assert MetadataVerbaliser().verbalise(request).text == first.text


def test_user_cf_explains_relation_to_history() -> None:
    request = _request("user_cf")
    request.anchor_facets = ("genre=Sci-Fi",) * 4 + ("genre=Drama",)
    text = MetadataVerbaliser().verbalise(request).text
    assert "4 of the 12 movies in the user history are Sci-Fi too" in text
    assert "nothing in the user history is Action, so this is a new direction" in text


def test_no_neighbours_message() -> None:
    request = _request()
    request.neighbours = []
    assert "no co-interaction signal" in MetadataVerbaliser().verbalise(request).text


def test_parse_repairs_hallucinated_ids() -> None:
    answer = (
        "Sure!\nCATEGORY: Space | Sci-fi classics | a1, a2, zz9\n"
        "2. CATEGORY: Heists | Crime action | a3\nCATEGORY: Empty | nothing real | q1, q2\n"
    )
    parsed = parse_llm_groups(answer, _request())
    assert [group.name for group in parsed.groups] == ["Space", "Heists"]
    assert parsed.groups[0].item_ids == ["a1", "a2"]
    assert parsed.dropped_ids == 3


def _echo_first_ids(messages: list[BaseMessage]) -> str:
    prompt = str(messages[-1].content)
    ids = re.findall(r"^(\S+) \|", prompt, flags=re.MULTILINE)
    return f"CATEGORY: Picked | The first ones | {', '.join(ids[:2])}, made-up"


def test_llm_verbaliser_caches_by_neighbour_set_and_resumes(tmp_path: Path) -> None:
    cache = tmp_path / "llm.jsonl"
    model = ScriptedChatModel(responses=_echo_first_ids)
    verbaliser = LLMVerbaliser(model, cache, concurrency=2)
    results = verbaliser.verbalise_many([_request(), _request("user_cf")])
    assert all(result.by == "llm:scripted" for result in results)
    assert results[0].groups[0].item_ids == ["a1", "a2"]
    assert verbaliser.stats.llm_calls == 2 and verbaliser.stats.dropped_ids == 2
    assert verbaliser.stats.input_tokens > 0
    # A new process (new verbaliser, same cache file) makes no calls for the same neighbour sets.
    again = LLMVerbaliser(ScriptedChatModel(responses=[]), cache)
    assert again.verbalise(_request()).text == results[0].text
    assert again.stats.cache_hits == 1 and again.stats.llm_calls == 0


def test_malformed_answers_retry_then_fall_back_counted(tmp_path: Path) -> None:
    model = ScriptedChatModel(responses=["no categories here", TimeoutError("slow"), "still nothing"])
    verbaliser = LLMVerbaliser(model, tmp_path / "c.jsonl", max_attempts=3)
    result = verbaliser.verbalise(_request())
    assert result.by == "deterministic (llm fallback)"
    assert result.text == MetadataVerbaliser().verbalise(_request()).text
    stats = verbaliser.stats
    assert (stats.llm_calls, stats.retries, stats.malformed, stats.errors, stats.fallbacks) == (3, 2, 2, 1, 1)
    assert not (tmp_path / "c.jsonl").exists()  # failures are not cached


def test_retry_succeeds_after_malformed(tmp_path: Path) -> None:
    model = ScriptedChatModel(responses=["garbage", "CATEGORY: Space | sci-fi | a1, a5"])
    verbaliser = LLMVerbaliser(model, tmp_path / "c.jsonl")
    result = verbaliser.verbalise(_request())
    assert result.groups[0].item_ids == ["a1", "a5"] and verbaliser.stats.malformed == 1


def test_corrupt_cache_line_is_reported_with_its_number(tmp_path: Path) -> None:
    import pytest

    from starrec.data.agentsociety import DataFormatError

    cache = tmp_path / "c.jsonl"
    cache.write_text('{"key": "a", "groups": []}\n{not json\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"c\.jsonl:2"):
        LLMVerbaliser(ScriptedChatModel(responses=[]), cache)


def test_parse_accepts_lines_without_the_label() -> None:
    answer = "Space | sci-fi classics | a1, a2\n- **CATEGORY**: Heist | crime | a3"
    parsed = parse_llm_groups(answer, _request())
    assert [(g.name, g.item_ids) for g in parsed.groups] == [("Space", ["a1", "a2"]), ("Heist", ["a3"])]
