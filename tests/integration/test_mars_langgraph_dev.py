"""``langgraph dev`` serves the exported graph offline: find it over HTTP, run it, stop the server by PID."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
API_LINE = re.compile(r"API: \S*http://127\.0\.0\.1:(\d+)")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
START_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def post(port: int, path: str, body: dict[str, Any], timeout: float = 60) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        return json.loads(response.read())


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def wait_for_port(process: subprocess.Popen[str], log: Path) -> int:
    """The port the server really listens on (it silently moves when the requested one is taken)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"langgraph dev exited with {process.returncode}:\n{log.read_text()[-3000:]}"
            )
        text = ANSI.sub("", log.read_text(errors="replace"))
        match = API_LINE.search(text)
        # "Application started up" is logged by the app's lifespan, before uvicorn binds the socket:
        # the port is only ready once a connection is accepted.
        if match and "Application started up" in text and accepts_connections(int(match.group(1))):
            return int(match.group(1))
        time.sleep(0.5)
    raise AssertionError(f"langgraph dev did not start in {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def server(tmp_path: Path) -> Any:
    executable = shutil.which("langgraph")
    if executable is None:
        pytest.skip("langgraph-cli is not installed (pip install 'langgraph-cli[inmem]')")
    log = tmp_path / "langgraph-dev.log"
    env = {**os.environ, "LANGGRAPH_CLI_NO_ANALYTICS": "1"}
    with log.open("w") as sink:
        process = subprocess.Popen(
            [
                executable,
                "dev",
                "--no-browser",
                "--no-reload",
                "--host",
                "127.0.0.1",
                "--port",
                str(free_port()),
            ],
            cwd=REPO_ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
            start_new_session=True,
        )
    try:
        yield wait_for_port(process, log), process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # the server and its workers, by our child's PID
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def recording(tmp_path: Path) -> Path:
    """A scripted-model recording for one run: planner, four agents, reflector, ranker (in call order)."""
    analysis = json.dumps({"thinking": "t", "conclusions": ["likes action"], "evidence_ids": ["m1"]})
    responses = [
        json.dumps(
            {
                "thinking": "all",
                "agents": ["user_profile", "historical_interest", "recent_interest", "interest_divergence"],
            }
        ),
        analysis,
        analysis,
        analysis,
        analysis,
        json.dumps({"verdict": "pass", "issues": []}),
        json.dumps({"thinking": "r", "ranking": ["c2", "c1", "c3"]}),
    ]
    path = tmp_path / "script.jsonl"
    path.write_text("".join(json.dumps({"response": {"role": "ai", "content": r}}) + "\n" for r in responses))
    return path


def test_langgraph_dev_serves_and_runs_the_mars_graph(server: Any, tmp_path: Path) -> None:
    port, process = server
    assistants = post(port, "/assistants/search", {"graph_id": "mars"})
    assert [a["graph_id"] for a in assistants] == ["mars"]
    drawn = get(port, f"/assistants/{assistants[0]['assistant_id']}/graph")
    node_ids = {node["id"] for node in drawn["nodes"]}
    assert {"abstractor", "planner", "reflector", "ranker", "user_profile"} <= node_ids
    # Studio draws its input and context forms from these; they were null on Python 3.11 before.
    schemas = get(port, f"/assistants/{assistants[0]['assistant_id']}/schemas")
    assert schemas["input_schema"] and schemas["output_schema"]
    assert {"user_id", "candidates", "history"} <= set(schemas["input_schema"]["properties"])
    context_fields = schemas["context_schema"]["properties"]
    assert len(context_fields) >= 20
    assert all(field.get("description") for field in context_fields.values())
    assert "agreement" in context_fields["ranker_fusion"]["description"]

    graph_input = {
        "task_id": "studio-1",
        "user_id": "u1",
        "domain": "movie",
        "candidates": [
            {"id": "c1", "title": "Heat"},
            {"id": "c2", "title": "Alien"},
            {"id": "c3", "title": "Up"},
        ],
        "history": [{"item_id": "m1", "title": "Die Hard", "stars": 5}],
    }
    context = {"llm": f"scripted:{recording(tmp_path)}", "use_tools": False}
    state = post(
        port, "/runs/wait", {"assistant_id": "mars", "input": graph_input, "context": context}, timeout=120
    )
    assert state["ranking"] == ["c2", "c1", "c3"]
    assert state["reflection"]["verdict"] == "pass"

    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=20)
    with pytest.raises(OSError):
        get(port, "/ok")
