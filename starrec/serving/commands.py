"""CLI commands of this area (registered by :mod:`starrec.cli`): ``starrec serve``."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Annotated

import typer


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM behaves like Ctrl-C, so the server's process group is stopped either way."""
    raise KeyboardInterrupt


def serve(
    model_dir: Annotated[
        str, typer.Argument(help="HF model folder to serve ('smollm2' and 'tiny' name the cached ones).")
    ],
    port: Annotated[int, typer.Option(help="TCP port (0 = a free one).")] = 8000,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    python: Annotated[
        Path | None,
        typer.Option(
            help="Python of the vLLM venv (default: $STARREC_VLLM_PYTHON, then .venv-vllm/bin/python)."
        ),
    ] = None,
    served_model_name: Annotated[str, typer.Option(help="Model name clients send.")] = "star",
    max_model_len: Annotated[int, typer.Option(help="Context length in tokens.")] = 4096,
    dtype: Annotated[
        str, typer.Option(help="Weights dtype; auto = bfloat16 on a GPU or a bf16 CPU, else float32.")
    ] = "auto",
    enforce_eager: Annotated[
        bool, typer.Option("--enforce-eager/--no-enforce-eager", help="Skip graph capture (faster start).")
    ] = True,
    prefix_caching: Annotated[
        bool,
        typer.Option(
            "--prefix-caching/--no-prefix-caching",
            help="vLLM prefix caching: reuse the KV cache of shared prompt prefixes.",
        ),
    ] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for /health.")] = 600.0,
    log: Annotated[Path | None, typer.Option(help="Server log file (default: a temp file).")] = None,
) -> None:
    """Serve a model with vLLM's OpenAI-compatible server; print the base URL; Ctrl-C stops it."""
    from rich.console import Console

    from starrec.llm.local import resolve_model_dir
    from starrec.serving.server import VLLMServer, VLLMServerConfig, VLLMServerError

    console = Console()
    try:
        config = VLLMServerConfig(
            model_dir=resolve_model_dir(model_dir), host=host, port=port, python=python,
            served_model_name=served_model_name, max_model_len=max_model_len, dtype=dtype,
            enforce_eager=enforce_eager, enable_prefix_caching=prefix_caching, start_timeout_s=timeout,
            log_path=log,
        )  # fmt: skip
        server = VLLMServer(config).start()
    except (FileNotFoundError, VLLMServerError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error
    console.print(f"vLLM pid {server.pid} starting on {server.root_url} (log {server.log_path})")
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with console.status("waiting for /health ..."):
            seconds = server.wait_healthy()
        console.print(f"healthy in {seconds:.1f} s")
        console.print(server.base_url, markup=False, highlight=False)
        while server.process is not None and server.process.poll() is None:
            time.sleep(1.0)
        console.print(
            f"[red]vLLM exited with code {server.process.returncode if server.process else '?'}[/red]"
        )
        raise typer.Exit(1)
    except KeyboardInterrupt:
        console.print("stopping ...")
    except VLLMServerError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error
    finally:
        code = server.stop()
        signal.signal(signal.SIGTERM, previous)
    console.print(f"stopped (exit code {code})")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the top-level app."""
    app.command("serve")(serve)
