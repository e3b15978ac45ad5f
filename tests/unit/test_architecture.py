"""The layering docs/architecture.md draws holds: the import-linter contracts in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter", reason="import-linter is in the dev extra (pip install -e '.[dev]')")

ROOT = Path(__file__).resolve().parents[2]
LINT = (
    "import sys; from importlinter.cli import lint_imports; "
    "sys.exit(lint_imports(no_logo=True, no_cache=True))"
)


def test_no_floor_imports_a_higher_one_and_no_import_cycles() -> None:
    """What ``lint-imports`` checks in CI (run apart, so its logging setup stays out of this process)."""
    command = [sys.executable, "-c", LINT]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
