"""The CLI's error contract: expected errors are one line and exit 1, --debug shows the traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from starrec.cli import app, error_line
from starrec.data import DataFormatError
from starrec.tools.store import GraphStoreError

runner = CliRunner()
MISSING = ["eval", "--data", "/nonexistent", "--tasks", "/nonexistent", "--method", "pop"]


def _one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_missing_task_folder_is_one_line() -> None:
    line = _one_error_line(runner.invoke(app, MISSING))
    assert line == "error: /nonexistent/tasks: task directory not found (expected TASKS/tasks/task_<i>.json)"


def test_bad_data_file_is_one_line_naming_file_and_line(tmp_path: Path) -> None:
    for name in ("item.json", "user.json"):
        (tmp_path / name).write_text(json.dumps({name.split(".")[0] + "_id": "x"}) + "\n")
    (tmp_path / "review.json").write_bytes(b'{"user_id": "x", "item_id": "x", "date": "2020-01-01"}\n'
                                           b'{"user_id": "caf\xe9"}\n')
    line = _one_error_line(runner.invoke(app, ["data", "info", str(tmp_path)]))
    assert line.startswith(f"error: {tmp_path / 'review.json'}:2: not UTF-8")


def test_debug_flag_and_environment_show_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    result = runner.invoke(app, ["--debug", *MISSING])
    assert result.exit_code == 1 and isinstance(result.exception, DataFormatError)
    monkeypatch.setenv("STARREC_DEBUG", "1")
    result = runner.invoke(app, MISSING)
    assert isinstance(result.exception, DataFormatError)


def test_usage_errors_keep_exit_2() -> None:
    result = runner.invoke(app, ["eval", "--tasks", "/nonexistent"])
    assert result.exit_code == 2 and "Missing option '--method'" in result.output


def test_unexpected_errors_are_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    import starrec.data.tasks

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(starrec.data.tasks, "read_tasks", broken)
    result = runner.invoke(app, MISSING)
    assert isinstance(result.exception, ZeroDivisionError)


def test_error_line_is_one_line_unquoted_and_redacted() -> None:
    assert error_line(KeyError("no Cypher file x.cypher")) == "error: no Cypher file x.cypher"
    multi = GraphStoreError("query failed on g.lbdb: boom\nquery: MATCH (n)\nRETURN n")
    assert error_line(multi) == "error: query failed on g.lbdb: boom | query: MATCH (n) | RETURN n"
    leaked = ValueError("401 from http://me:hunter2@host/v1: Incorrect API key sk-proj-abc123def456")
    assert error_line(leaked) == "error: 401 from http://***@host/v1: Incorrect API key ***"
