"""vLLM launch and lifetime management, against a fake ``vllm`` api_server module (no real vLLM)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from starrec.serving.server import (
    VLLM_ENTRY_MODULE,
    VLLMServer,
    VLLMServerConfig,
    VLLMServerError,
    build_vllm_command,
    build_vllm_env,
)

FAKE_API_SERVER = """
import argparse, json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

parser = argparse.ArgumentParser()
for flag in ("--model", "--served-model-name", "--host", "--port", "--dtype", "--max-model-len"):
    parser.add_argument(flag)
parser.add_argument("--enforce-eager", action="store_true")
parser.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction)
parser.add_argument("--structured-outputs-config")
parser.add_argument("--enable-chunked-prefill", action=argparse.BooleanOptionalAction)
parser.add_argument("--max-num-batched-tokens", type=int)
args = parser.parse_args()
print("fake vllm args", vars(args), "kv", os.environ.get("VLLM_CPU_KVCACHE_SPACE"), flush=True)
if os.environ.get("FAKE_VLLM_FAIL"):
    print("boom: model architecture not supported", flush=True)
    sys.exit(3)

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_GET(self):
        if self.path == "/health":
            body = b""
        elif self.path == "/v1/models":
            body = json.dumps({"data": [{"id": args.served_model_name}]}).encode()
        else:
            self.send_response(404); self.end_headers(); return
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)

HTTPServer((args.host, int(args.port)), Handler).serve_forever()
"""


@pytest.fixture
def fake_vllm_python(tmp_path: Path) -> Path:
    """An interpreter wrapper whose ``-m vllm.entrypoints.openai.api_server`` is the fake above."""
    package = tmp_path / "site" / "vllm" / "entrypoints" / "openai"
    package.mkdir(parents=True)
    for folder in (package, package.parent, package.parent.parent):
        (folder / "__init__.py").write_text("")
    (package / "api_server.py").write_text(FAKE_API_SERVER)
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{tmp_path / "site"}" exec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_command_uses_the_module_entry_point_and_flags(model_dir: Path) -> None:
    config = VLLMServerConfig(
        model_dir=model_dir, served_model_name="s", max_model_len=2048, enforce_eager=True
    )
    command = build_vllm_command(config, Path("/venv/bin/python"), 8123)
    assert command[:3] == ["/venv/bin/python", "-m", VLLM_ENTRY_MODULE]
    for flag, value in (("--model", str(model_dir)), ("--port", "8123"), ("--served-model-name", "s"),
                        ("--max-model-len", "2048"), ("--host", "127.0.0.1")):  # fmt: skip
        assert command[command.index(flag) + 1] == value
    assert "--enforce-eager" in command
    assert "--enforce-eager" not in build_vllm_command(
        VLLMServerConfig(model_dir=model_dir, enforce_eager=False), Path("p"), 1
    )


def test_prefix_caching_is_on_by_default_and_can_be_switched_off(model_dir: Path) -> None:
    default = build_vllm_command(VLLMServerConfig(model_dir=model_dir), Path("p"), 1)
    assert "--enable-prefix-caching" in default and "--no-enable-prefix-caching" not in default
    off = build_vllm_command(VLLMServerConfig(model_dir=model_dir, enable_prefix_caching=False), Path("p"), 1)
    assert "--no-enable-prefix-caching" in off and "--enable-prefix-caching" not in off


def test_constrained_json_has_no_free_whitespace_and_dtype_follows_the_cpu(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from starrec.serving import server

    command = build_vllm_command(VLLMServerConfig(model_dir=model_dir, device="cpu"), Path("p"), 1)
    config = json.loads(command[command.index("--structured-outputs-config") + 1])
    assert config == {"backend": "xgrammar", "disable_any_whitespace": True}
    monkeypatch.setattr(server, "cpu_has_bf16", lambda: False)
    assert server.resolve_dtype("auto", "cpu") == "float32"
    assert server.resolve_dtype("auto", "gpu") == "bfloat16"
    monkeypatch.setattr(server, "cpu_has_bf16", lambda: True)
    assert server.resolve_dtype("auto", "cpu") == "bfloat16"
    assert server.resolve_dtype("float16", "cpu") == "float16"


def test_environment_is_offline_and_sizes_the_cpu_kv_cache(model_dir: Path) -> None:
    base = {"PATH": "/bin", "PYTHONPATH": "/training/venv"}
    cpu = build_vllm_env(VLLMServerConfig(model_dir=model_dir, device="cpu", cpu_kvcache_space_gib=3), base)
    assert cpu["HF_HUB_OFFLINE"] == "1" and cpu["VLLM_CPU_KVCACHE_SPACE"] == "3"
    assert "PYTHONPATH" not in cpu
    gpu = build_vllm_env(VLLMServerConfig(model_dir=model_dir, device="gpu"), base)
    assert "VLLM_CPU_KVCACHE_SPACE" not in gpu


def test_server_starts_healthy_and_stops_by_pid(
    fake_vllm_python: Path, model_dir: Path, tmp_path: Path
) -> None:
    config = VLLMServerConfig(
        model_dir=model_dir, python=fake_vllm_python, served_model_name="student", device="cpu",
        start_timeout_s=60, log_path=tmp_path / "vllm.log",
    )  # fmt: skip
    with VLLMServer(config) as server:
        assert server.pid is not None and alive(server.pid)
        assert server.start_seconds is not None and server.start_seconds > 0
        with urllib.request.urlopen(f"{server.base_url}/models", timeout=5) as response:
            assert json.loads(response.read())["data"][0]["id"] == "student"
        pid = server.pid
    deadline = time.time() + 10
    while alive(pid) and time.time() < deadline:
        time.sleep(0.1)
    assert not alive(pid)
    log = (tmp_path / "vllm.log").read_text()
    assert "kv 2" in log and "'enable_prefix_caching': True" in log


def test_failed_start_reports_the_log_tail(fake_vllm_python: Path, model_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_VLLM_FAIL", "1")
    config = VLLMServerConfig(model_dir=model_dir, python=fake_vllm_python, start_timeout_s=60)
    with pytest.raises(VLLMServerError) as failure, VLLMServer(config):
        pass
    assert "exited with code 3" in str(failure.value)
    assert "boom: model architecture not supported" in str(failure.value)


def test_missing_vllm_venv_and_model_are_clear_errors(model_dir: Path, tmp_path: Path) -> None:
    missing = VLLMServerConfig(model_dir=model_dir, python=tmp_path / "nope" / "python")
    with pytest.raises(VLLMServerError, match=r"setup_vllm\.sh"):
        VLLMServer(missing).start()
    with pytest.raises(VLLMServerError, match=r"no config\.json"):
        VLLMServer(VLLMServerConfig(model_dir=tmp_path, python=Path(sys.executable))).start()


def test_serve_command_prints_the_url_and_stops_on_sigterm(fake_vllm_python: Path, model_dir: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "starrec.cli", "serve", str(model_dir), "--port", "0",
         "--python", str(fake_vllm_python), "--timeout", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("http://127.0.0.1:"):
            break
    url = lines[-1].strip()
    assert url.endswith("/v1"), "".join(lines)
    with urllib.request.urlopen(f"{url}/models", timeout=5) as response:
        assert response.status == 200
    server_pid = int(next(line for line in lines if "vLLM pid" in line).split()[2])
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=30)[0]
    assert process.returncode == 0 and "stopped" in output
    assert not alive(server_pid)


def test_chunked_prefill_is_off_on_cpu_where_seeded_sampling_crashes_it(model_dir: Path) -> None:
    def flags(**knobs: object) -> list[str]:
        return build_vllm_command(
            VLLMServerConfig(model_dir=model_dir, max_model_len=3072, **knobs), Path("p"), 1
        )

    cpu = flags(device="cpu")
    assert "--no-enable-chunked-prefill" in cpu
    assert cpu[cpu.index("--max-num-batched-tokens") + 1] == "3072"  # vLLM needs >= max_model_len then
    gpu = flags(device="gpu")
    assert "--no-enable-chunked-prefill" not in gpu and "--enable-chunked-prefill" not in gpu  # vLLM's own
    assert "--enable-chunked-prefill" in flags(device="cpu", chunked_prefill="on")
    assert "--no-enable-chunked-prefill" in flags(device="gpu", chunked_prefill="off")
    assert VLLMServerConfig(model_dir=model_dir, chunked_prefill=False).chunked_prefill == "off"  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunked_prefill must be one of auto, on, off, got 'no'"):
        flags(chunked_prefill="no")
