"""How each model the pipeline talks to is reached: a running endpoint, a vLLM server started for the
stage that needs it (and stopped after), the model in-process, or a chat model passed in code.

One server at a time: the teacher for ``teach`` and the MARS rows, then each student for its STAR
rows, all with the same ``serve`` flags, so teacher and students are compared on one vLLM build.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from rich.console import Console

from starrec.pipeline.config import PipelineConfig, serve_fields
from starrec.pipeline.layout import WorkLayout

How = Literal["endpoint", "vllm", "in-process", "injected"]


@dataclass(frozen=True)
class Endpoint:
    """One model and how the pipeline reaches it."""

    role: str
    """teacher, or a student: base (untrained), sft, grpo."""
    model: str
    """What is served or loaded: smollm2 | tiny | a model folder."""
    how: How
    base_url: str | None = None
    """The running endpoint (how = endpoint)."""
    served_model_name: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def teacher_endpoint(config: PipelineConfig, injected: bool = False) -> Endpoint:
    """The teacher: injected chat model, configured endpoint, a started vLLM server, or in-process."""
    teacher = config.teacher
    how: How
    if injected:
        how = "injected"
    elif teacher.llm == "local":
        how = "in-process"
    else:
        how = "endpoint" if teacher.base_url else "vllm"
    return Endpoint("teacher", teacher.model, how, teacher.base_url, teacher.served_model_name)


def student_model(config: PipelineConfig, layout: WorkLayout, role: str) -> str:
    """The model behind a student role: the SFT initialisation, or a checkpoint in the work folder."""
    if role == "base":
        return str(config.sft.get("model", "smollm2"))
    return str(layout.sft if role == "sft" else layout.grpo)


def student_endpoint(config: PipelineConfig, layout: WorkLayout, role: str) -> Endpoint:
    url = config.student.base_urls.get(role)
    model = student_model(config, layout, role)
    if url:
        return Endpoint(role, model, "endpoint", url)
    how: How = "vllm" if config.student.backend == "vllm" else "in-process"
    return Endpoint(role, model, how, served_model_name=f"star-{role}")


def resolve_model(model: str) -> Path:
    """A model spec as a folder (builds the cached smollm2/tiny folders on first use)."""
    from starrec.llm.local import resolve_model_dir

    return Path(resolve_model_dir(model))


@contextmanager
def opened(
    endpoint: Endpoint, config: PipelineConfig, layout: WorkLayout, console: Console
) -> Iterator[str | None]:
    """The endpoint's base URL while the block runs (None for in-process and injected models); a vLLM
    server started here is stopped when the block ends, however it ends."""
    if endpoint.how != "vllm":
        yield endpoint.base_url
        return
    from starrec.serving.server import VLLMServer, VLLMServerConfig

    name = endpoint.served_model_name
    server = VLLMServer(
        VLLMServerConfig(
            model_dir=resolve_model(endpoint.model),
            served_model_name=name,
            log_path=layout.server_log(name),
            **serve_fields(config.serve),
        )
    )
    started = time.perf_counter()
    layout.work.mkdir(parents=True, exist_ok=True)
    with console.status(f"starting vLLM for {name} ({endpoint.model}) ..."):
        server.__enter__()
    console.print(f"vLLM {name} healthy in {time.perf_counter() - started:.0f} s at {server.base_url}")
    try:
        yield server.base_url
    finally:
        server.stop()


def check_endpoint(endpoint: Endpoint, config: PipelineConfig) -> dict[str, Any]:
    """What ``serve`` verifies before a long evaluation: a configured endpoint answers and serves the
    model; a server to start has a vLLM interpreter and a model folder; an in-process model exists."""
    from starrec.serving.server import resolve_vllm_python, served_models

    found: dict[str, Any] = endpoint.as_dict()
    if endpoint.how == "endpoint":
        assert endpoint.base_url is not None
        try:
            models = served_models(endpoint.base_url)
        except OSError as error:
            raise ConnectionError(
                f"{endpoint.role}: the endpoint {endpoint.base_url} does not answer ({error}); start it or "
                "remove its base_url so the pipeline starts a vLLM server"
            ) from None
        wanted = endpoint.served_model_name
        if wanted and wanted not in models:
            raise ValueError(
                f"{endpoint.role}: {endpoint.base_url} serves {models}, not {wanted!r}; fix "
                "served_model_name or the base_url"
            )
        found["serves"] = models
    elif endpoint.how in ("vllm", "in-process"):
        folder = resolve_model(endpoint.model)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{endpoint.role}: {folder} is not a model folder (no config.json)")
        found["model_dir"] = str(folder)
        if endpoint.how == "vllm":
            python = serve_fields(config.serve).get("python")
            found["python"] = str(resolve_vllm_python(python))
    return found
