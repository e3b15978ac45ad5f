"""runs.jsonl: torn tails (also mid-character), line splitting on bytes, and no secret on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from starrec.graphs.recording import RunsFile


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
