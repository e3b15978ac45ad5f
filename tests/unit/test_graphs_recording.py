"""runs.jsonl: torn tails (also mid-character), line splitting on bytes, and no secret on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from starrec.contract.runs_file import RunsFile


def _write_two_runs(path: Path) -> RunsFile:
    runs = RunsFile(path)
    runs.append({"task_id": "0", "pass": 0, "ranking": ["café"]})
    runs.append({"task_id": "1", "pass": 0, "ranking": ["a\u2028b", "c\u0085d"]})
    return runs


def test_line_separators_inside_json_strings_do_not_split_a_record(tmp_path: Path) -> None:
    runs = _write_two_runs(tmp_path)
    assert [r["ranking"] for r in runs.records()] == [["café"], ["a\u2028b", "c\u0085d"]]
    assert runs.torn_lines == 0


def test_a_tail_torn_inside_a_multibyte_character_is_skipped_and_counted(tmp_path: Path) -> None:
    runs = _write_two_runs(tmp_path)
    tail = json.dumps({"task_id": "2", "pass": 0, "ranking": ["ünï"]}, ensure_ascii=False).encode()
    cut = tail.index("ü".encode()) + 1  # half of a two-byte character
    with runs.path.open("ab") as handle:
        handle.write(tail[:cut])
    assert [r["task_id"] for r in runs.records()] == ["0", "1"]
    assert runs.torn_lines == 1
    assert runs.finished() == {("0", 0), ("1", 0)}
    assert runs.repair_torn_tail() and runs.path.read_bytes().endswith(b"\n")
    assert len(runs.records()) == 2 and runs.torn_lines == 0


def test_bad_bytes_before_the_last_line_name_the_line(tmp_path: Path) -> None:
    runs = _write_two_runs(tmp_path)
    data = runs.path.read_bytes().split(b"\n")
    data[0] = data[0].replace("é".encode(), b"\xff")
    runs.path.write_bytes(b"\n".join(data))
    with pytest.raises(ValueError, match=r"runs\.jsonl:1: not UTF-8 .*fix or delete that line"):
        runs.records()


SECRETS = ("hunter2", "qwerty123456", "sk-proj-abc123def456ghi", "envkey-987654321")
LEAKY_URL = "http://alice:hunter2@llm.example:8000/v1?api_key=qwerty123456&model=x"


def test_a_run_written_through_the_runner_holds_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from mars_fixtures import FakeEvidence, build_movie_dataset, default_script, make_request, make_task

    from starrec.graphs.context import Context
    from starrec.graphs.graph import build_mars_graph
    from starrec.graphs.runner import RunJob, run_mars
    from starrec.llm.scripted import ScriptedChatModel

    monkeypatch.setenv("OPENAI_API_KEY", "envkey-987654321")
    dataset = build_movie_dataset()
    task = make_task(dataset, "u4")
    request = make_request(dataset, task)
    script = default_script(list(request.candidates))
    echo = (f"Error code: 401 - Incorrect API key provided: sk-proj-abc123def456ghi (key envkey-987654321) "
            f"for {LEAKY_URL}; header 'Authorization: Bearer sk-proj-abc123def456ghi'")
    script["abstractor"] = [PermissionError(echo)]
    context = Context(chunk_size=3, llm="openai:gpt-x", base_url=LEAKY_URL)
    graph = build_mars_graph(context, chat_model=ScriptedChatModel(responses=script, cycle=True),
                             evidence=FakeEvidence(dataset))
    trajectory = asyncio.run(run_mars(graph, RunJob(request, 0, task.ground_truth), dataset, context))
    assert trajectory.error and "401" in trajectory.error  # the failure is still recorded ...
    runs = RunsFile(tmp_path)
    runs.append(trajectory.to_line())
    written = runs.path.read_text(encoding="utf-8")
    assert not [secret for secret in SECRETS if secret in written]  # ... without its secrets
    [line] = runs.records()
    assert line["settings"]["base_url"] == "http://***@llm.example:8000/v1?api_key=***&model=x"
    assert "Incorrect API key provided: ***" in line["error"]
    assert not [secret for secret in SECRETS if secret in json.dumps(trajectory.model_dump())]


def test_append_redacts_whatever_it_is_given(tmp_path: Path) -> None:
    runs = RunsFile(tmp_path)
    runs.append({"task_id": "0", "pass": 0, "settings": {"base_url": LEAKY_URL, "api_key": "hunter2"},
                 "steps": [{"llm_calls": [{"response": "[error] AuthenticationError: Bearer qwerty123456"}]}],
                 "prompt": {"candidates": ["The Bearer of Bad News", "sk-learn cookbook"]}})
    written = runs.path.read_text(encoding="utf-8")
    assert not [secret for secret in SECRETS if secret in written]
    [line] = runs.records()
    assert line["settings"]["api_key"] == "***"
    assert line["prompt"]["candidates"] == ["The Bearer of Bad News", "sk-learn cookbook"]  # text survives
