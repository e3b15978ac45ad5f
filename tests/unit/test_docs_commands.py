"""Every ``starrec`` command shown in README.md and docs/*.md names a real command and real options.

The peers' READMEs shipped commands that crash (STYLE.md); this keeps ours honest without
running the slow ones: the command path must resolve in the CLI and every ``--flag`` must be one
of that command's options.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer
from typer.core import TyperGroup

from starrec.cli import app

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def documented_commands() -> list[tuple[str, int, str]]:
    """(file, line, command) for each `starrec ...` line inside fenced code blocks."""
    found: list[tuple[str, int, str]] = []
    for document in DOCUMENTS:
        in_code = False
        pending: tuple[int, str] | None = None
        for number, raw in enumerate(document.read_text().splitlines(), start=1):
            if raw.lstrip().startswith("```"):
                in_code = not in_code
                continue
            if not in_code:
                continue
            line = raw.split(" # ")[0].rstrip()
            if pending is not None:
                start, text = pending
                text += " " + line.rstrip("\\").strip()
                pending = (start, text) if line.endswith("\\") else None
                if pending is None:
                    found.append((document.name, start, text))
                continue
            match = re.search(r"(?:^|&&\s*|\.venv/bin/)(starrec\s.*)$", line.strip())
            if not match:
                continue
            text = match.group(1)
            if text.endswith("\\"):
                pending = (number, text.rstrip("\\").strip())
            else:
                found.append((document.name, number, text))
    return found


def resolve(words: list[str]) -> tuple[typer.core.TyperCommand | TyperGroup, list[str]]:
    """Walk the command tree along the words; return the leaf command and the remaining words."""
    command = typer.main.get_command(app)
    rest = words[1:]
    while isinstance(command, TyperGroup) and rest and not rest[0].startswith("-"):
        assert rest[0] in command.commands, f"no command {rest[0]!r} under {command.name!r}"
        command, rest = command.commands[rest[0]], rest[1:]
    return command, rest


COMMANDS = documented_commands()


def test_docs_show_commands() -> None:
    assert len(COMMANDS) >= 10


@pytest.mark.parametrize(("document", "line", "text"), COMMANDS, ids=[f"{d}:{n}" for d, n, _ in COMMANDS])
def test_documented_command_exists(document: str, line: int, text: str) -> None:
    words = shlex.split(text.replace("[", " ").replace("]", " ").replace("|", " "), posix=True)
    command, rest = resolve(words)
    assert not isinstance(command, TyperGroup), f"{document}:{line}: {text!r} stops at a command group"
    options = {name for param in command.params for name in getattr(param, "opts", []) + getattr(
        param, "secondary_opts", [])}
    for word in rest:
        for flag in word.split("=", 1)[0].split("/") if word.startswith("--") else []:
            assert flag in options, f"{document}:{line}: {command.name} has no option {flag}"
