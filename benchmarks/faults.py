"""Fault injection: kills, misbehaving LLM endpoints, concurrent writers and torn files.

Every case runs the ``starrec`` command line as a user would, against a synthetic dataset and a
fault-injecting OpenAI-compatible server on loopback, then checks what is on disk:

- ``kill -9`` at random moments of ``teach``, ``graph build`` and ``evidence build``, then the same
  command again: runs lost and runs duplicated must be 0, a half-built graph is never reused, and
  the evidence resumes to every anchor;
- LLM fault modes (malformed, empty, hallucinated answers, a burst of HTTP 500s, a hang past the
  run timeout, slow answers): exit code, errored runs, retries counted, and that a rerun in the
  healthy mode leaves every run finished exactly once;
- two ``teach`` processes on one run folder;
- a ``runs.jsonl`` whose torn tail cuts a multi-byte character.

Writes ``benchmarks/results/faults.{json,md}``.

    python benchmarks/faults.py [--kills 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from starrec.data.agentsociety import write_dataset
from starrec.data.scenarios import build_tasks
from starrec.data.tasks import write_tasks
from starrec.tools.synthetic import power_law_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
WORK_DIR = REPO_ROOT / "benchmarks" / "work" / "faults"
STARREC = [sys.executable, "-m", "starrec.cli"]
CANDIDATE = re.compile(r"^- \[([^\]]+)\]", re.MULTILINE)
REPAIR_KEYS = ("json_repaired", "json_retry", "fallback", "ranking_hallucinated", "ranking_duplicates",
               "ranking_missing")  # fmt: skip


# ------------------------------------------------------------------------------------- fault server
class FaultServer:
    """An OpenAI-compatible chat endpoint whose behaviour is switched per case."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.burst_left = 0
        self.requests = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, text = server.answer(body)
                if status is None:
                    return  # the hang: the client times out
                payload = json.dumps(
                    {
                        "id": "f", "object": "chat.completion", "created": 0, "model": "fault",
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": text}}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                    }
                    if status == 200
                    else {"error": {"message": "injected server error", "type": "server_error"}}
                ).encode()  # fmt: skip
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client was killed or timed out: that is the case under test

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def answer(self, body: dict[str, Any]) -> tuple[int | None, str]:
        with self._lock:
            self.requests += 1
            mode = self.mode
            if mode == "burst500" and self.burst_left > 0:
                self.burst_left -= 1
                return 500, ""
        prompt = str(body["messages"][-1].get("content", ""))
        shown = CANDIDATE.findall(prompt.split("Candidates (")[-1]) if "Candidates (" in prompt else []
        if mode == "hang":
            time.sleep(30)
            return None, ""
        if mode == "slow":
            time.sleep(0.3)
        if mode == "malformed":
            return 200, "{'thinking': 'hmm', 'ranking': [" + ", ".join(shown[:3])
        if mode == "empty":
            return 200, ""
        ranking = ["999999", "abc", *shown[:2], shown[0]] if mode == "hallucinated" and shown else shown
        return 200, json.dumps(
            {"thinking": "t", "conclusions": ["likes popular items"], "evidence_ids": [],
             "agents": ["user_profile", "recent_interest"], "verdict": "pass", "issues": [],
             "ranking": ranking, "summary": "The user chose several items."}
        )  # fmt: skip

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# ------------------------------------------------------------------------------------------ helpers
def starrec(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STARREC_LLM_MAX_RETRIES": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([*STARREC, *args], capture_output=True, text=True, timeout=timeout, env=env)


def spawn(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "STARREC_LLM_MAX_RETRIES": "1"}
    return subprocess.Popen([*STARREC, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)  # fmt: skip


def teach_args(data: Path, tasks: Path, out: Path, url: str, *extra: str) -> list[str]:
    return [
        "teach", "--data", str(data), "--tasks", str(tasks), "--out", str(out), "--llm", "openai:fault",
        "--base-url", url, "--concurrency", "4", "--timeout", "8", "--option", "tool_protocol=text",
        "--option", "structured_output=json", "--option", "use_tools=false", *extra,
    ]  # fmt: skip


def run_lines(out: Path) -> list[dict[str, Any]]:
    path = out / "runs.jsonl"
    if not path.exists():
        return []
    lines = []
    for raw in path.read_bytes().splitlines():
        try:
            lines.append(json.loads(raw))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # a torn tail
    return lines


def ledger(out: Path, expected: set[tuple[str, int]]) -> dict[str, int]:
    """Runs lost (expected but never finished) and duplicated (finished more than once)."""
    finished: dict[tuple[str, int], int] = {}
    retries = repairs = 0
    for line in run_lines(out):
        counted = line.get("repairs", {})
        retries += int(counted.get("llm_error", 0)) + int(counted.get("llm_client_retry", 0))
        repairs += sum(int(counted.get(key, 0)) for key in REPAIR_KEYS)
        if not line.get("error"):
            key = (str(line["task_id"]), int(line.get("pass", 0)))
            finished[key] = finished.get(key, 0) + 1
    return {
        "lost": len(expected - set(finished)),
        "duplicated": sum(count - 1 for count in finished.values() if count > 1),
        "errored_lines": sum(1 for line in run_lines(out) if line.get("error")),
        "retries_counted": retries,
        "repairs_counted": repairs,
    }


# -------------------------------------------------------------------------------------------- cases
def kill_cases(kind: str, kills: int, rng: random.Random, ctx: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for index in range(kills):
        case = WORK_DIR / f"kill-{kind}-{index}"
        shutil.rmtree(case, ignore_errors=True)
        case.mkdir(parents=True)
        delay = rng.uniform(0.5, ctx["kill_window"][kind])
        if kind == "teach":
            ctx["server"].mode = "slow"
            url = ctx["server"].base_url
            args = teach_args(ctx["data"], ctx["tasks"], case / "runs", url, "--passes", "2")
        elif kind == "graph_build":
            args = ["graph", "build", "--data", str(ctx["big_data"]), "--path", str(case / "g.lbdb")]
        else:
            args = ["evidence", "build", "--data", str(ctx["big_data"]), "--path", str(case / "g.lbdb")]
            starrec("graph", "build", "--data", str(ctx["big_data"]), "--path", str(case / "g.lbdb"))
        process = spawn(*args)
        time.sleep(delay)
        killed = process.poll() is None
        if killed:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        ctx["server"].mode = "ok"
        again = starrec(*args)
        row: dict[str, Any] = {"case": f"kill -9 `{kind.replace('_', ' ')}` at {delay:.1f} s",
                               "killed": killed, "rerun_exit": again.returncode}  # fmt: skip
        if kind == "teach":
            row.update(ledger(case / "runs", ctx["expected"]))
        else:
            manifest = case / "g.lbdb.manifest.json"
            complete = manifest.exists() and json.loads(manifest.read_text()).get("complete") is True
            row["complete_manifest"] = complete
            if kind == "evidence_build":
                missing = "MATCH (i:Item) WHERE i.evidence IS NULL RETURN count(*) AS n"
                probe = starrec("cypher", "run", missing, "--path", str(case / "g.lbdb"), "--json")
                ok = probe.returncode == 0
                row["anchors_without_evidence"] = (
                    json.loads(probe.stdout)["rows"][0]["n"] if ok else f"exit {probe.returncode}"
                )
        rows.append(row)
    return rows


def llm_cases(ctx: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for mode in ("malformed", "empty", "hallucinated", "burst500", "hang", "slow"):
        case = WORK_DIR / f"llm-{mode}"
        shutil.rmtree(case, ignore_errors=True)
        server = ctx["server"]
        server.mode, server.burst_left = mode, 12
        first = starrec(*teach_args(ctx["data"], ctx["tasks"], case, server.base_url, "--passes", "2"))
        before = ledger(case, ctx["expected"])
        server.mode = "ok"
        second = starrec(*teach_args(ctx["data"], ctx["tasks"], case, server.base_url, "--passes", "2"))
        after = ledger(case, ctx["expected"])
        rows.append({
            "case": f"LLM answers: {mode}", "exit": first.returncode, "errored_runs": before["errored_lines"],
            "retries_counted": before["retries_counted"], "repairs_counted": before["repairs_counted"],
            "rerun_exit": second.returncode,
            "lost": after["lost"], "duplicated": after["duplicated"],
        })  # fmt: skip
    return rows


def concurrent_case(ctx: dict[str, Any]) -> dict[str, Any]:
    case = WORK_DIR / "concurrent"
    shutil.rmtree(case, ignore_errors=True)
    ctx["server"].mode = "slow"
    args = teach_args(ctx["data"], ctx["tasks"], case, ctx["server"].base_url, "--passes", "2")
    first, second = spawn(*args), spawn(*args)
    codes = sorted([first.wait(timeout=600), second.wait(timeout=600)])
    message = (first.stderr.read() if first.stderr else "") + (second.stderr.read() if second.stderr else "")
    ctx["server"].mode = "ok"
    return {"case": "two `teach` on one run folder", "exit_codes": codes,
            "refusal_names_holder": "is being written by starrec teach (pid" in message,
            **ledger(case, ctx["expected"])}  # fmt: skip


def torn_utf8_case(ctx: dict[str, Any]) -> dict[str, Any]:
    case = WORK_DIR / "torn-utf8"
    shutil.rmtree(case, ignore_errors=True)
    ctx["server"].mode = "ok"
    starrec(*teach_args(ctx["data"], ctx["tasks"], case, ctx["server"].base_url, "--limit", "2"))
    path = case / "runs.jsonl"
    tail = json.dumps({"task_id": "x", "note": "Amélie — 東京"}, ensure_ascii=False).encode()
    path.write_bytes(path.read_bytes() + tail[: tail.index("東".encode()) + 1])  # cut inside a character
    shown = starrec("trajectory", str(case))
    filtered = starrec("distill", "filter", "--runs", str(case), "--top-k", "20", "--ablation", "no_tools")
    return {"case": "runs.jsonl torn inside a UTF-8 character", "trajectory_exit": shown.returncode,
            "filter_exit": filtered.returncode,
            "error": (shown.stderr or filtered.stderr).strip().splitlines()[-1:] if shown.returncode
            or filtered.returncode else []}  # fmt: skip


# ------------------------------------------------------------------------------------------- report
def markdown(result: dict[str, Any]) -> str:
    lines = ["# Fault injection", "", f"Command: `{result['command']}`. {result['setup']}", ""]
    for section, rows in result["sections"].items():
        lines += [f"## {section}", ""]
        columns = list(dict.fromkeys(key for row in rows for key in row))
        lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for row in rows:
            lines.append("| " + " | ".join(str(row.get(column, "")) for column in columns) + " |")
        lines.append("")
    lines += [
        "`lost`/`duplicated` count (task, pass) runs that never finished / finished more than once after "
        "the rerun; both must be 0. Exit codes: 0 all runs ok, 1 some runs errored or the folder is busy. "
        "`retries_counted` sums the `llm_error` and `llm_client_retry` counts in runs.jsonl; "
        "`repairs_counted` sums its JSON repairs, retries, fallbacks and ranking repairs.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=5, help="Random kill moments per command.")
    parser.add_argument("--tasks", type=int, default=8, help="Tasks per teach case.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    shutil.rmtree(WORK_DIR, ignore_errors=True)
    WORK_DIR.mkdir(parents=True)
    small = power_law_dataset(60, 300, 3000, seed=args.seed)
    data = write_dataset(small, WORK_DIR / "data")
    tasks = build_tasks(small, "classic", n=args.tasks, seed=args.seed).tasks
    write_tasks(tasks, WORK_DIR / "tasks")
    big = power_law_dataset(3000, 8000, 200_000, seed=args.seed)
    big_data = write_dataset(big, WORK_DIR / "big-data")
    server = FaultServer()
    ctx = {
        "server": server, "data": data, "tasks": WORK_DIR / "tasks", "big_data": big_data,
        "expected": {(task.task_id, p) for task in tasks for p in (0, 1)},
        "kill_window": {"teach": 8.0, "graph_build": 6.0, "evidence_build": 6.0},
    }  # fmt: skip
    rng = random.Random(args.seed)
    try:
        sections = {
            "Kills, then the same command again": [
                *kill_cases("teach", args.kills, rng, ctx),
                *kill_cases("graph_build", args.kills, rng, ctx),
                *kill_cases("evidence_build", args.kills, rng, ctx),
            ],
            "LLM fault modes (teach, 2 passes; then a rerun in the healthy mode)": llm_cases(ctx),
            "Concurrent writers": [concurrent_case(ctx)],
            "Torn files": [torn_utf8_case(ctx)],
        }
    finally:
        server.close()
    result = {
        "command": "python benchmarks/faults.py" + (f" --kills {args.kills}" if args.kills != 5 else ""),
        "setup": f"teach: {args.tasks} tasks x 2 passes on a synthetic 60-user graph, MARS with text "
        "protocols and tools off, per-run timeout 8 s, OpenAI client retries 1; graph/evidence build: "
        "a synthetic "
        "3,000-user, 200,000-edge graph. Load average at the end: "
        + " ".join(f"{v:.2f}" for v in os.getloadavg()) + ".",
        "sections": sections,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "faults.json").write_text(json.dumps(result, indent=1, default=str))
    (RESULTS_DIR / "faults.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
