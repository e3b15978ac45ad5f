"""The one documented configuration of ``starrec pipeline run``, loaded from YAML.

Layered as RecBole does: the defaults below -> the YAML file -> ``--set key.path=value`` (and
``--work``) on the command line. Every field is documented in its ``help``; the training,
sampling and serving sections are the library's own configs (:class:`~starrec.distill.config.
StarSFTConfig`, :class:`~starrec.distill.rldata.RLDataConfig`, :class:`~starrec.distill.config.
StarGRPOConfig`, :class:`~starrec.serving.server.VLLMServerConfig`) given as mappings of their
field names, so a knob TRL or vLLM gains is usable here without being copied. A bad value stops
the load with one line naming the file, the line and the field.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin

STAGES: tuple[str, ...] = (
    "data", "teach", "filter", "planner-sft", "sft", "rl-data", "grpo", "serve", "eval"
)  # fmt: skip
"""The pipeline's stages in order (what ``--from`` and ``--only`` accept)."""
MOVIELENS = "movielens-100k"
STUDENT_ROLES = ("base", "sft", "grpo")
"""The students STAR rows can use: the untrained initialisation, the SFT and the GRPO checkpoint."""
LLM_METHODS = ("mars", "star")


class PipelineConfigError(ValueError):
    """A config value that cannot be used; the message names the file, line and field."""


@dataclass
class DataSection:
    """Which tasks the pipeline builds (the benchmark's layout: test tasks on the full data, training
    tasks on a copy with every test answer and everything after it removed)."""

    dataset: str = field(
        default=MOVIELENS,
        metadata={
            "help": f"'{MOVIELENS}' (fetched once into the cache) or a dataset folder (AgentSociety "
            "layout: item.json, user.json, review.json)."
        },
    )
    scenario: str = field(default="classic", metadata={"help": "Task scenario for both task folders."})
    n_test: int = field(default=150, metadata={"help": "Test tasks (one per user), seed = seed."})
    n_train: int = field(
        default=200, metadata={"help": "Training tasks the teacher runs on, seed = seed + 1."}
    )


@dataclass
class TeacherSection:
    """The MARS teacher: recorded over the training tasks, and evaluated as the MARS rows."""

    llm: str = field(
        default="openai",
        metadata={
            "help": "openai = an OpenAI-compatible endpoint (base_url, else a vLLM server started "
            "on `model`); local = in-process transformers on `model`."
        },
    )
    model: str = field(
        default="smollm2",
        metadata={"help": "smollm2 | tiny | a HF model folder (served, or loaded locally)."},
    )
    base_url: str | None = field(
        default=None, metadata={"help": "A running endpoint serving the teacher: no server is started."}
    )
    served_model_name: str = field(
        default="teacher", metadata={"help": "Model name on the endpoint (the name the started server gets)."}
    )
    passes: int = field(default=1, metadata={"help": "MARS runs per training task (outcome filtering)."})
    sample_temperature: float = field(
        default=0.7,
        metadata={"help": "With passes > 1: every pass samples at this temperature, seed = seed + pass."},
    )
    concurrency: int = field(default=16, metadata={"help": "MARS runs in flight (teach and evaluation)."})
    timeout_s: float | None = field(
        default=None, metadata={"help": "Seconds allowed per run (None = no limit)."}
    )
    options: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "MARS Context knobs (`starrec teach --option key=value`), e.g. ranker_fusion, "
            "tool_protocol, structured_output, max_history, max_new_tokens."
        },
    )


@dataclass
class FilterSection:
    """Outcome filtering, shared by the filter and SFT stages (one top-k for both)."""

    top_k: int = field(
        default=1, metadata={"help": "Keep runs with the ground truth in their top-k (paper: 1)."}
    )


@dataclass
class StudentSection:
    """How the STAR rows reach the students."""

    backend: str = field(
        default="vllm",
        metadata={"help": "vllm = a vLLM server per student (serve flags below); transformers = in-process."},
    )
    base_urls: dict[str, str] = field(
        default_factory=dict,
        metadata={
            "help": f"Running endpoints per student ({', '.join(STUDENT_ROLES)}): no server is started "
            "for a student listed here."
        },
    )
    concurrency: int = field(default=16, metadata={"help": "STAR tasks in flight."})
    options: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "STAR knobs (`starrec eval --method star --option key=value`), e.g. max_history, "
            "max_completion_tokens, abstractor_max_tokens, fusion."
        },
    )


@dataclass
class EvalSection:
    """The rows of the final table, all on the same shuffled test tasks."""

    classical: list[str] = field(
        default_factory=lambda: ["random", "pop", "itemknn", "bpr", "lightgcn"],
        metadata={"help": "Classical baselines (the best of them is repeated as 'best classical')."},
    )
    cf_prior: bool = field(default=True, metadata={"help": "The candidate-CF prior order on its own."})
    mars: bool = field(
        default=True,
        metadata={"help": "MARS fused (ranker_fusion=agreement) and raw (the same runs' LLM order)."},
    )
    mars_planner: bool = field(
        default=True,
        metadata={
            "help": "The planner-sft stage (the sft knobs, target planner) and the MARS-Planner (fused) "
            "row: that planner in-process, the teacher for every other node (false = neither)."
        },
    )
    star: list[str] = field(
        default_factory=lambda: list(STUDENT_ROLES),
        metadata={"help": f"Greedy STAR rows (k = 1), any of {', '.join(STUDENT_ROLES)}."},
    )
    best_of_k_model: str = field(
        default="grpo", metadata={"help": f"Student of the best-of-k rows ({', '.join(STUDENT_ROLES)})."}
    )
    ks: list[int] = field(
        default_factory=lambda: [1, 2, 4, 8],
        metadata={"help": "Best-of-k values: one run of max(ks) chains, each prefix fused ([] = none)."},
    )
    method_options: dict[str, dict[str, Any]] = field(
        default_factory=dict,
        metadata={
            "help": "Per classical method (or cf_prior): its --option knobs, e.g. {bpr: {epochs: 30}}."
        },
    )
    usd_per_million_prompt_tokens: float = field(
        default=0.0, metadata={"help": "Price of prompt tokens (0 = local models) for the cost column."}
    )
    usd_per_million_completion_tokens: float = field(
        default=0.0, metadata={"help": "Price of generated tokens (0 = local models)."}
    )


@dataclass
class PipelineConfig:
    """teach -> filter -> planner-sft -> sft -> rl-data -> grpo -> serve -> eval, sized by one file
    (docs/pipeline.md)."""

    work: Path = field(
        default=Path("pipeline-work"),
        metadata={
            "help": "Work folder: every stage's output lives here, so a rerun resumes (relative "
            "paths are taken from the current directory)."
        },
    )
    seed: int = field(
        default=0,
        metadata={
            "help": "The one seed: test tasks (seed), training tasks (seed + 1), candidate shuffles, "
            "teacher, training, sampling and evaluation."
        },
    )
    threads: int | None = field(
        default=None, metadata={"help": "torch threads for training and sampling (None = torch's choice)."}
    )
    cpu: bool | None = field(
        default=None,
        metadata={"help": "Train with the CPU overrides (None = when no CUDA device is present)."},
    )
    data: DataSection = field(default_factory=DataSection, metadata={"help": "Tasks."})
    teacher: TeacherSection = field(default_factory=TeacherSection, metadata={"help": "MARS teacher."})
    filter: FilterSection = field(default_factory=FilterSection, metadata={"help": "Outcome filter."})
    sft: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "StarSFTConfig fields (model, max_steps, num_train_epochs, max_length, "
            "learning_rate, ...) over its CPU/GPU defaults; top_k comes from filter, seed from seed; "
            "planner-sft trains with the same knobs and target planner."
        },
    )
    rl_data: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "RLDataConfig fields (samples, success_at, mix, limit, total, "
            "max_completion_length, temperature, ...); seed from seed."
        },
    )
    grpo: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "StarGRPOConfig fields (max_steps, num_generations, max_completion_length, "
            "learning_rate, beta, ...) over its CPU/GPU defaults; seed from seed."
        },
    )
    serve: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "VLLMServerConfig fields (python, max_model_len, dtype, enforce_eager, "
            "cpu_kvcache_space_gib, chunked_prefill, start_timeout_s, extra_args): the same flags for every "
            "server."
        },
    )
    student: StudentSection = field(default_factory=StudentSection, metadata={"help": "STAR students."})
    eval: EvalSection = field(default_factory=EvalSection, metadata={"help": "Result rows."})

    def to_dict(self) -> dict[str, Any]:
        """Plain data (paths as text), as written to the work folder."""
        plain = dataclasses.asdict(self)
        plain["work"] = str(self.work)
        return plain


# ------------------------------------------------------------------------------------------ loading

COMMAND_LINE = 0
"""The "line" of a key set with ``--set`` or ``--work``."""


@dataclass
class LineIndex:
    """Where each key path was written, so an error can point at the line to fix."""

    source: str
    lines: dict[str, int] = field(default_factory=dict)

    def where(self, path: str) -> str:
        """``file:line`` of the deepest known prefix of ``path``, ``--set key`` for a command-line key."""
        parts = path.replace("[", ".[").split(".")
        for cut in range(len(parts), 0, -1):
            prefix = ".".join(parts[:cut]).replace(".[", "[")
            line = self.lines.get(prefix)
            if line == COMMAND_LINE:
                return f"--set {prefix}"
            if line is not None:
                return f"{self.source}:{line}"
        return self.source


def yaml_lines(text: str) -> dict[str, int]:
    """Dotted key path -> 1-based line of every mapping key in a YAML document."""
    import yaml

    lines: dict[str, int] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                path = f"{prefix}.{key.value}" if prefix else str(key.value)
                lines[path] = key.start_mark.line + 1
                walk(value, path)
        elif isinstance(node, yaml.SequenceNode):
            for position, value in enumerate(node.value):
                lines[f"{prefix}[{position}]"] = value.start_mark.line + 1
                walk(value, f"{prefix}[{position}]")

    walk(yaml.compose(text), "")
    return lines


def parse_override(text: str) -> tuple[str, Any]:
    """``teacher.passes=2`` -> ("teacher.passes", 2); the value is read as YAML (8, true, [1, 2], null)."""
    import yaml

    path, sep, raw = text.partition("=")
    if not sep or not path.strip():
        raise PipelineConfigError(f"--set {text!r}: expected KEY.PATH=VALUE, e.g. --set data.n_test=8")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise PipelineConfigError(f"--set {text!r}: the value is not YAML ({error})") from None
    return path.strip(), value


def apply_override(raw: dict[str, Any], path: str, value: Any) -> None:
    """Set ``raw[a][b][c] = value`` for ``a.b.c``, creating the sections on the way."""
    *parents, last = path.split(".")
    node = raw
    walked: list[str] = []
    for part in parents:
        walked.append(part)
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise PipelineConfigError(f"--set {path}: {'.'.join(walked)} is a value, not a section")
        node = child
    node[last] = value


def load_config(
    path: Path | None, overrides: Sequence[str] = (), *, work: Path | None = None
) -> PipelineConfig:
    """Defaults, then the YAML file at ``path`` (None = defaults only), then ``--set`` overrides and
    ``--work``; validated (raises :class:`PipelineConfigError` naming the file, line and field)."""
    import yaml

    raw: dict[str, Any] = {}
    index = LineIndex("defaults")
    if path is not None:
        if not path.is_file():
            raise FileNotFoundError(f"pipeline config {path} does not exist")
        text = path.read_text(encoding="utf-8")
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            at = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            raise PipelineConfigError(f"{at}: not valid YAML ({getattr(error, 'problem', error)})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise PipelineConfigError(f"{path}: the top level must be a mapping of sections")
        raw = loaded or {}
        index = LineIndex(str(path), yaml_lines(text) if raw else {})
    for text in overrides:
        key, value = parse_override(text)
        apply_override(raw, key, value)
        index.lines[key] = COMMAND_LINE
    if work is not None:
        raw["work"] = str(work)
        index.lines["work"] = COMMAND_LINE
    config = build_section(PipelineConfig, raw, "", index)
    validate(config, index)
    return config


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (typing.Union, types.UnionType)


def _type_name(annotation: Any) -> str:
    if _is_union(annotation):
        members = [a for a in get_args(annotation) if a is not type(None)]
        return " or ".join(_type_name(m) for m in members) + " or null"
    if get_origin(annotation) is list:
        return f"a list of {_type_name(get_args(annotation)[0])}"
    if get_origin(annotation) is dict or dataclasses.is_dataclass(annotation):
        return "a mapping"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", Path: "a path"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _coerce(value: Any, annotation: Any, path: str, index: LineIndex) -> Any:
    """``value`` as the field's type, or a one-line error naming where and what was expected."""
    if _is_union(annotation):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if value is None and len(members) < len(get_args(annotation)):
            return None
        return _coerce(value, members[0], path, index)
    bad = PipelineConfigError(
        f"{index.where(path)}: field '{path}' must be {_type_name(annotation)}, got {value!r}"
    )
    origin = get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if value is not None and not isinstance(value, dict):
            raise bad
        return build_section(annotation, value or {}, path, index)
    if origin is list:
        if not isinstance(value, list):
            raise bad
        (item,) = get_args(annotation)
        return [_coerce(entry, item, f"{path}[{i}]", index) for i, entry in enumerate(value)]
    if origin is dict:
        if value is not None and (not isinstance(value, dict) or not all(isinstance(k, str) for k in value)):
            raise bad
        _, item = get_args(annotation)
        return {key: _coerce(entry, item, f"{path}.{key}", index) for key, entry in (value or {}).items()}
    if annotation is Any:
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is Path and isinstance(value, str):
        return Path(value)
    if annotation in (bool, int, float, str, Path):
        if isinstance(value, annotation) and (annotation is bool or not isinstance(value, bool)):
            return value
        raise bad
    raise TypeError(f"PipelineConfig field {path} has an unsupported type {annotation!r}")


def build_section(cls: type, raw: Mapping[str, Any], prefix: str, index: LineIndex) -> Any:
    """An instance of the section dataclass ``cls`` from ``raw``; an unknown key is an error."""
    hints = typing.get_type_hints(cls)
    names = [spec.name for spec in dataclasses.fields(cls)]
    values: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            where = f" of {prefix}" if prefix else ""
            raise PipelineConfigError(
                f"{index.where(path)}: unknown field '{path}'; valid fields{where}: {', '.join(names)}"
            )
        values[key] = _coerce(value, hints[key], path, index)
    return cls(**values)


# --------------------------------------------------------------------------------------- validation


def _fail(index: LineIndex, path: str, message: str) -> PipelineConfigError:
    return PipelineConfigError(f"{index.where(path)}: field '{path}' {message}")


def check_knobs(default: Any, knobs: Mapping[str, Any], path: str, index: LineIndex) -> Any:
    """``default`` with ``knobs`` applied (:func:`config_with_overrides`); on an error, the line of the
    one key that alone gives the same error, else the section's line (a rule across fields)."""
    from starrec.eval.methods import config_with_overrides

    try:
        return config_with_overrides(default, knobs, label=path)
    except ValueError as error:
        message = str(error)
    for key, value in knobs.items():
        try:
            config_with_overrides(default, {key: value}, label=path)
        except ValueError as alone:
            if str(alone) == message:
                raise PipelineConfigError(f"{index.where(f'{path}.{key}')}: {message}") from None
    raise PipelineConfigError(f"{index.where(path)}: {message}")


def _owned_elsewhere(
    section: Mapping[str, Any], path: str, index: LineIndex, owners: Mapping[str, str]
) -> None:
    for key, owner in owners.items():
        if key in section:
            raise _fail(index, f"{path}.{key}", f"is set by {owner} (one value for every stage)")


def grpo_updates(section: Mapping[str, Any]) -> dict[str, Any]:
    """The GRPO section with a batch of one group per step when only G was given (as the CLI does)."""
    updates = dict(section)
    if "num_generations" in updates and "per_device_train_batch_size" not in updates:
        updates["per_device_train_batch_size"] = updates["num_generations"]
    return updates


SERVE_FIXED = ("model_dir", "served_model_name", "log_path")
"""VLLMServerConfig fields the pipeline sets per server itself."""


def serve_fields(section: Mapping[str, Any], index: LineIndex | None = None) -> dict[str, Any]:
    """The serve section as VLLMServerConfig keyword arguments (python as a Path, extra_args a list)."""
    from starrec.serving.server import VLLMServerConfig

    index = index or LineIndex("serve")
    names = [spec.name for spec in dataclasses.fields(VLLMServerConfig) if spec.name not in SERVE_FIXED]
    scalars: dict[str, Any] = {}
    result: dict[str, Any] = {}
    for key, value in section.items():
        path = f"serve.{key}"
        if key not in names:
            raise PipelineConfigError(
                f"{index.where(path)}: unknown field '{path}'; valid fields of serve: {', '.join(names)}"
            )
        if key == "extra_args":
            if not isinstance(value, list) or not all(isinstance(arg, str) for arg in value):
                raise _fail(index, path, f"must be a list of strings (api_server flags), got {value!r}")
            result[key] = list(value)
        elif key == "python":
            if not isinstance(value, str):
                raise _fail(index, path, f"must be the path of the vLLM venv's python, got {value!r}")
            result[key] = Path(value)
        elif key == "chunked_prefill" and isinstance(value, bool):
            scalars[key] = "on" if value else "off"  # YAML reads a bare on/off as a boolean
        else:
            scalars[key] = value
    checked = check_knobs(VLLMServerConfig(model_dir=Path(".")), scalars, "serve", index)
    result.update({key: getattr(checked, key) for key in scalars})
    return result


def validate(config: PipelineConfig, index: LineIndex) -> None:
    """Checks beyond types: choices, ranges, and every knob of the configs the stages will build."""
    from starrec.distill.config import StarGRPOConfig, StarSFTConfig
    from starrec.distill.rldata import RLDataConfig, parse_mix
    from starrec.eval.methods import METHOD_FACTORIES, MethodOptions
    from starrec.graphs.context import Context
    from starrec.serving.recommender import split_options

    at_least_one = {
        "data.n_test": config.data.n_test,
        "data.n_train": config.data.n_train,
        "teacher.passes": config.teacher.passes,
        "teacher.concurrency": config.teacher.concurrency,
        "student.concurrency": config.student.concurrency,
        "filter.top_k": config.filter.top_k,
    }
    for path, value in at_least_one.items():
        if value < 1:
            raise _fail(index, path, f"must be >= 1, got {value}")
    if config.teacher.llm not in ("openai", "local"):
        raise _fail(index, "teacher.llm", f"must be openai or local, got {config.teacher.llm!r}")
    if config.student.backend not in ("vllm", "transformers"):
        raise _fail(index, "student.backend", f"must be vllm or transformers, got {config.student.backend!r}")
    roles = ", ".join(STUDENT_ROLES)
    for role in config.student.base_urls:
        if role not in STUDENT_ROLES:
            raise _fail(index, f"student.base_urls.{role}", f"names no student; use {roles}")
    for position, role in enumerate(config.eval.star):
        if role not in STUDENT_ROLES:
            raise _fail(index, f"eval.star[{position}]", f"must be one of {roles}, got {role!r}")
    if config.eval.best_of_k_model not in STUDENT_ROLES:
        raise _fail(
            index, "eval.best_of_k_model", f"must be one of {roles}, got {config.eval.best_of_k_model!r}"
        )
    for position, k in enumerate(config.eval.ks):
        if k < 1:
            raise _fail(index, f"eval.ks[{position}]", f"must be >= 1, got {k}")
    classical = [name for name in METHOD_FACTORIES if name not in (*LLM_METHODS, "cf_prior")]
    for position, name in enumerate(config.eval.classical):
        if name not in classical:
            raise _fail(
                index, f"eval.classical[{position}]", f"must be one of {', '.join(classical)}, got {name!r}"
            )
    for name in config.eval.method_options:
        if name not in config.eval.classical and name != "cf_prior":
            raise _fail(index, f"eval.method_options.{name}", "names no row of eval.classical (nor cf_prior)")

    owned = {
        "top_k": "filter.top_k",
        "seed": "the top-level seed",
        "target": "the stage (sft or planner-sft)",
    }
    _owned_elsewhere(config.sft, "sft", index, owned)
    check_knobs(StarSFTConfig(), config.sft, "sft", index)
    if config.eval.mars_planner:
        try:
            check_knobs(StarSFTConfig(), {**config.sft, "target": "planner"}, "sft", index)
        except PipelineConfigError as error:
            raise PipelineConfigError(f"{error} (planner-sft; eval.mars_planner: false skips it)") from None
        if config.teacher.options.get("use_planner") is False:
            raise _fail(index, "eval.mars_planner", "needs the planner; teacher.options.use_planner is false")
    _owned_elsewhere(config.rl_data, "rl_data", index, {"seed": "the top-level seed"})
    check_knobs(RLDataConfig(), config.rl_data, "rl_data", index)
    if "mix" in config.rl_data:
        try:
            parse_mix(str(config.rl_data["mix"]))
        except ValueError as error:
            raise PipelineConfigError(f"{index.where('rl_data.mix')}: {error}") from None
    _owned_elsewhere(config.grpo, "grpo", index, {"seed": "the top-level seed"})
    check_knobs(StarGRPOConfig(), grpo_updates(config.grpo), "grpo", index)
    serve_fields(config.serve, index)
    check_knobs(Context(), config.teacher.options, "teacher.options", index)
    if "backend" in config.student.options:
        raise _fail(index, "student.options.backend", "is set by student.backend and student.base_urls")
    try:  # together: some knobs are only valid against others (the ranking reserve and the budget)
        split_options(MethodOptions(extra=dict(config.student.options)))
    except ValueError as error:
        text = str(error)
        named = [key for key in config.student.options if f"'{key}'" in text or text.startswith(key)]
        where = f"student.options.{named[0]}" if named else "student.options"
        raise PipelineConfigError(f"{index.where(where)}: {error}") from None
