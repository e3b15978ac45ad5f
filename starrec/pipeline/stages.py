"""The stages before evaluation, each a call to starrec's own Python API, each returning its result
as plain data (what ``pipeline.json`` records).

A stage is *done* when its output marker exists (``done``); then the runner skips it and reads its
result back (``load_result``). ``teach`` is done when every (task, pass) has a finished run; when
it runs, :func:`starrec.graphs.teach.teach` itself records only what is missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console

from starrec.pipeline.config import PipelineConfig, grpo_updates
from starrec.pipeline.endpoints import (
    Endpoint,
    How,
    check_endpoint,
    opened,
    student_endpoint,
    teacher_endpoint,
)
from starrec.pipeline.layout import WorkLayout


class StageInputMissingError(FileNotFoundError):
    """A stage was asked to run before the stage that writes its input."""


@dataclass
class PipelineRun:
    """What every stage gets: the config, the paths, where to print, and optional chat models that
    stand in for the teacher and for the fine-tuned planner (tests, or an app that already holds one)."""

    config: PipelineConfig
    layout: WorkLayout
    console: Console
    teacher_model: Any = None
    planner_model: Any = None


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def require(path: Path, stage: str, producer: str) -> None:
    """Stop with a message naming the stage that writes ``path`` when it is missing."""
    if not path.exists():
        raise StageInputMissingError(
            f"stage {stage} needs {path}, which stage {producer} writes; run it first (--from {producer})"
        )


# --------------------------------------------------------------------------------------------- data


def check_task_folder(folder: Path, n: int, seed: int, scenario: str, field_name: str) -> None:
    """An existing task folder must be the one this config would build (else its runs mean nothing here)."""
    from starrec.data.tasks import read_manifest

    manifest = read_manifest(folder)
    built = (manifest.get("n_requested"), manifest.get("seed"), manifest.get("scenario"))
    if built != (n, seed, scenario):
        raise ValueError(
            f"{folder} holds {built[0]} {built[2]} tasks built with seed {built[1]}, but the config asks for "
            f"{n} {scenario} tasks with seed {seed} ({field_name}, seed, data.scenario): use another work "
            "folder, or change the config back"
        )


def build_task_folder(data: Path, out: Path, n: int, seed: int, scenario: str, console: Console) -> int:
    from starrec.data.agentsociety import load_dataset
    from starrec.data.scenarios import build_tasks, data_files_fingerprint
    from starrec.data.tasks import write_tasks

    built = build_tasks(load_dataset(data), scenario, n, seed, fingerprint=data_files_fingerprint(data))
    built.manifest["dataset"]["path"] = str(data)
    write_tasks(built.tasks, out, built.manifest)
    console.print(f"wrote {len(built.tasks)} {scenario} tasks to {out} (seed {seed})")
    return len(built.tasks)


def data_done(run: PipelineRun) -> bool:
    """Both task folders and the training copy exist (and the task folders are the config's)."""
    layout = run.layout
    markers = (
        layout.test_tasks / "manifest.json",
        layout.train_tasks / "manifest.json",
        layout.train_data / "review.json",
    )
    return all(path.exists() for path in markers)


def check_tasks(run: PipelineRun) -> None:
    """Task folders already in the work folder must be the ones this config builds (the runner checks
    before any stage, so a changed config never silently reuses other tasks' runs)."""
    config, layout = run.config, run.layout
    folders = (
        (layout.test_tasks, config.data.n_test, config.seed, "data.n_test"),
        (layout.train_tasks, config.data.n_train, config.seed + 1, "data.n_train"),
    )
    for folder, n, seed, field_name in folders:
        if (folder / "manifest.json").exists():
            check_task_folder(folder, n, seed, config.data.scenario, field_name)


def prepare_data(run: PipelineRun) -> dict[str, Any]:
    """Test tasks on the full data; a training copy without any test answer (``Dataset.hide_from``);
    training tasks on that copy. Existing folders are kept (and checked against the config)."""
    from starrec.data import fetch_movielens_100k, load_dataset, write_dataset
    from starrec.data.tasks import read_tasks
    from starrec.pipeline.config import MOVIELENS

    config, layout, console = run.config, run.layout, run.console
    data = config.data
    if data.dataset == MOVIELENS:
        fetch_movielens_100k(layout.dataset)
    elif not layout.dataset.is_dir():
        raise FileNotFoundError(f"data.dataset: {layout.dataset} is not a dataset folder")
    layout.work.mkdir(parents=True, exist_ok=True)
    check_tasks(run)
    if not (layout.test_tasks / "manifest.json").exists():
        build_task_folder(layout.dataset, layout.test_tasks, data.n_test, config.seed, data.scenario, console)
    if not (layout.train_data / "review.json").exists():
        full = load_dataset(layout.dataset)
        write_dataset(full.hide_from(read_tasks(layout.test_tasks)), layout.train_data)
        console.print(f"wrote the training copy {layout.train_data} (test answers and later events removed)")
    if not (layout.train_tasks / "manifest.json").exists():
        build_task_folder(
            layout.train_data, layout.train_tasks, data.n_train, config.seed + 1, data.scenario, console
        )
    return data_result(run)


def data_result(run: PipelineRun) -> dict[str, Any]:
    from starrec.data.tasks import read_manifest

    layout = run.layout
    return {
        "dataset": str(layout.dataset),
        "train_data": str(layout.train_data),
        "test_tasks": read_manifest(layout.test_tasks).get("n_tasks"),
        "train_tasks": read_manifest(layout.train_tasks).get("n_tasks"),
    }


# -------------------------------------------------------------------------------------------- teach


def teacher_context(
    run: PipelineRun, base_url: str | None, data_dir: Path, tasks_dir: Path, **knobs: Any
) -> Any:
    """The MARS :class:`Context` of the teacher (``teach`` and the MARS rows share it)."""
    from starrec.eval.methods import MethodOptions
    from starrec.graphs.recommender import context_from_options

    teacher = run.config.teacher
    served = teacher.llm == "openai"
    options = MethodOptions(
        seed=run.config.seed,
        data_dir=data_dir,
        llm=teacher.llm,
        model=teacher.served_model_name if served else teacher.model,
        base_url=base_url,
        extra={**teacher.options, **knobs},
    )
    context = context_from_options(options)
    context.tasks_dir = str(tasks_dir)
    return context


def teacher_of(run: PipelineRun) -> Endpoint:
    return teacher_endpoint(run.config, injected=run.teacher_model is not None)


def teach_done(run: PipelineRun) -> bool:
    """Every (training task, pass) has a run that finished without error."""
    from starrec.contract.runs_file import RunsFile
    from starrec.data.tasks import read_tasks
    from starrec.graphs.teach import finished_runs

    layout = run.layout
    if not (layout.runs / "runs.jsonl").exists() or not (layout.train_tasks / "manifest.json").exists():
        return False
    finished = finished_runs(RunsFile(layout.runs).records())
    passes = run.config.teacher.passes
    return all(
        (task.task_id, p) in finished for task in read_tasks(layout.train_tasks) for p in range(passes)
    )


def teach_stage(run: PipelineRun) -> dict[str, Any]:
    """MARS over the training tasks (``starrec teach``): only the missing or errored runs are recorded."""
    from starrec.graphs.teach import run_folder_lock, teach

    config, layout = run.config, run.layout
    require(layout.train_tasks / "manifest.json", "teach", "data")
    with run_folder_lock(layout.runs):
        pass  # another teach writing these runs stops us here, before a server is started for nothing
    with opened(teacher_of(run), config, layout, run.console) as url:
        context = teacher_context(run, url, layout.train_data, layout.train_tasks)
        summary = teach(
            layout.train_data,
            layout.train_tasks,
            layout.runs,
            context,
            passes=config.teacher.passes,
            sample_temperature=config.teacher.sample_temperature,
            concurrency=config.teacher.concurrency,
            seed=config.seed,
            timeout_s=config.teacher.timeout_s,
            console=run.console,
            chat_model=run.teacher_model,
        )
    if summary.errors:
        run.console.print(
            f"[yellow]{summary.errors} of {summary.runs} teacher run(s) errored: they are not used; the next "
            "pipeline run retries them[/yellow]"
        )
    return summary.as_dict()


def teach_result(run: PipelineRun) -> dict[str, Any]:
    from starrec.contract.runs_file import load_trajectories
    from starrec.graphs.runner import latest_runs, summarise_runs

    return summarise_runs(latest_runs(load_trajectories(run.layout.runs))).as_dict()


# ------------------------------------------------------------------------------------------- filter


def filter_stage(run: PipelineRun) -> dict[str, Any]:
    """Outcome filtering with ``filter.top_k`` (the same filter SFT applies); stops when nothing survives."""
    from starrec.contract.runs_file import load_trajectories
    from starrec.distill.filtering import outcome_filter

    layout, top_k = run.layout, run.config.filter.top_k
    require(layout.runs / "runs.jsonl", "filter", "teach")
    kept, report = outcome_filter(load_trajectories(layout.runs), top_k=top_k)
    result = {**report.to_dict(), "kept_runs": len(kept)}
    if not kept:
        raise ValueError(
            f"no teacher run in {layout.runs} survives the top-{top_k} outcome filter ({result['total']}); "
            "record more passes (teacher.passes) or raise filter.top_k"
        )
    total = result["total"]
    run.console.print(
        f"outcome filter top-{top_k}: {total['kept_runs']} of {total['runs']} runs kept "
        f"({total['kept_tasks']} of {total['tasks']} tasks)"
    )
    write_json(layout.filter_report, result)
    return result


# ---------------------------------------------------------------------------------------- distill


def sft_config(run: PipelineRun, target: str) -> Any:
    """The ``sft`` section over the device defaults, with the shared top-k and seed; ``target`` is the
    stage's (star for ``sft``, planner for ``planner-sft``)."""
    from starrec.distill.config import StarSFTConfig
    from starrec.eval.methods import config_with_overrides

    config = run.config
    knobs = {**config.sft, "top_k": config.filter.top_k, "seed": config.seed, "target": target}
    return config_with_overrides(StarSFTConfig().for_device(config.cpu), knobs, label="sft")


def sft_stage(run: PipelineRun) -> dict[str, Any]:
    """Stage 1 (TRL SFTTrainer) on the outcome-filtered teacher runs; checkpoint in ``star-sft``."""
    from starrec.distill.sft import train_sft
    from starrec.distill.training import set_threads

    layout = run.layout
    require(layout.runs / "runs.jsonl", "sft", "teach")
    set_threads(run.config.threads)
    return train_sft(layout.runs, layout.sft, sft_config(run, "star"), run.console).summary()


def planner_sft_enabled(config: PipelineConfig) -> bool:
    return config.eval.mars_planner


def planner_sft_stage(run: PipelineRun) -> dict[str, Any]:
    """The planner alone on the same filtered runs' planner steps (``starrec distill sft --target
    planner``), into ``planner-sft``: the planner of the MARS-Planner row."""
    from starrec.distill.sft import train_sft
    from starrec.distill.training import set_threads

    layout = run.layout
    require(layout.runs / "runs.jsonl", "planner-sft", "teach")
    set_threads(run.config.threads)
    return train_sft(layout.runs, layout.planner_sft, sft_config(run, "planner"), run.console).summary()


def training_evidence(run: PipelineRun) -> Any:
    """The CF graph + evidence of the training copy, training answers hidden (what ``teach`` used)."""
    from starrec.data.tasks import read_tasks
    from starrec.tools.toolkit import open_toolkit

    return open_toolkit(run.layout.train_data, tasks=read_tasks(run.layout.train_tasks))


def rl_data_stage(run: PipelineRun) -> dict[str, Any]:
    """Sample the SFT student per training task, bucket by hits, mix (``starrec distill rl-data``).

    The student is reached as the STAR rows reach it (``student``): a vLLM server of the SFT folder
    (or its ``base_urls.sft`` endpoint), ``concurrency`` chains in flight; in-process with
    ``student.backend: transformers``.
    """
    from starrec.contract.runs_file import load_trajectories
    from starrec.distill.rldata import RLDataConfig, build_rl_data, rl_instances
    from starrec.distill.training import set_threads
    from starrec.eval.methods import config_with_overrides

    config, layout = run.config, run.layout
    require(layout.sft / "config.json", "rl-data", "sft")
    set_threads(config.threads)
    rl_config = config_with_overrides(
        RLDataConfig(), {**config.rl_data, "seed": config.seed}, label="rl_data"
    )
    instances = rl_instances(load_trajectories(layout.runs), rl_config.ablation, rl_config.recommend_top)
    evidence = training_evidence(run)
    build = partial(
        build_rl_data,
        layout.sft,
        instances,
        layout.rl_data,
        rl_config,
        evidence,
        evidence_dirs=(layout.train_data, layout.train_tasks),
    )
    endpoint = student_endpoint(config, layout, "sft")
    if endpoint.how == "in-process":
        return build()
    from starrec.eval.methods import MethodOptions
    from starrec.serving.backends import OpenAIBackend
    from starrec.serving.recommender import split_options
    from starrec.serving.rl_sampling import served_sampler

    star, _ = split_options(MethodOptions(extra=dict(config.student.options)))
    with opened(endpoint, config, layout, run.console) as base_url:
        assert base_url is not None
        backend = OpenAIBackend(  # as the STAR rows build it (mode, timeout)
            base_url,
            endpoint.served_model_name or None,
            mode=star.mode,
            tokenizer=_tokenizer(layout.sft) if star.mode == "completions" else None,
            timeout_s=star.timeout_s,
        )
        return build(
            sampler=served_sampler(backend, evidence, rl_config),
            sampler_name="served",
            concurrency=max(1, config.student.concurrency // rl_config.samples),
        )


def _tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def grpo_stage(run: PipelineRun) -> dict[str, Any]:
    """Stage 2 (TRL GRPOTrainer, tools inside rollouts) from the SFT checkpoint, into ``star-grpo``."""
    from starrec.distill.config import StarGRPOConfig
    from starrec.distill.grpo import train_grpo
    from starrec.distill.training import set_threads
    from starrec.eval.methods import config_with_overrides

    config, layout = run.config, run.layout
    require(layout.sft / "config.json", "grpo", "sft")
    require(layout.rl_data / "rl_data.json", "grpo", "rl-data")
    set_threads(config.threads)
    knobs = {**grpo_updates(config.grpo), "seed": config.seed}
    grpo_config = config_with_overrides(StarGRPOConfig().for_device(config.cpu), knobs, label="grpo")
    result = train_grpo(
        layout.sft, layout.rl_data, layout.grpo, grpo_config, training_evidence(run), run.console
    )
    return result.summary()


def grpo_result(run: PipelineRun) -> dict[str, Any]:
    metrics = read_json(run.layout.grpo / "grpo_metrics.json")
    metrics.pop("logs", None)
    return metrics


# -------------------------------------------------------------------------------------------- serve


def planner_of(run: PipelineRun) -> Endpoint:
    """The fine-tuned planner of the MARS-Planner row: injected, or its checkpoint in-process."""
    how: How = "injected" if run.planner_model is not None else "in-process"
    return Endpoint("planner", str(run.layout.planner_sft), how)


def evaluated_endpoints(run: PipelineRun) -> list[Endpoint]:
    """The models the eval rows talk to, in the order eval opens them."""
    config = run.config
    endpoints = [teacher_of(run)] if config.eval.mars or config.eval.mars_planner else []
    endpoints += [planner_of(run)] if config.eval.mars_planner else []
    wanted = set(config.eval.star) | ({config.eval.best_of_k_model} if config.eval.ks else set())
    from starrec.pipeline.config import STUDENT_ROLES

    endpoints += [student_endpoint(config, run.layout, role) for role in STUDENT_ROLES if role in wanted]
    return endpoints


def serve_stage(run: PipelineRun) -> dict[str, Any]:
    """Check, before a long evaluation, that every model it needs can be reached (always re-checked:
    it is cheap, and an endpoint can go away between runs); the plan goes to ``serve.json``."""
    checked = [check_endpoint(endpoint, run.config) for endpoint in evaluated_endpoints(run)]
    for found in checked:
        target = found.get("base_url") or found.get("model_dir") or found["model"]
        run.console.print(f"{found['role']}: {found['how']} ({target})")
    result = {"endpoints": checked}
    write_json(run.layout.serve_plan, result)
    return result
