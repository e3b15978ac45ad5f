"""``starrec pipeline``: the YAML config (defaults, file, --set), its one-line errors, and stage selection,
skipping and resume with stand-in stages (the real stages run in tests/integration/test_pipeline.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from starrec.cli import app
from starrec.graphs.context import Context
from starrec.pipeline import STAGES, PipelineConfig, PipelineConfigError, load_config, run_pipeline
from starrec.pipeline import runner as runner_module
from starrec.pipeline.config import serve_fields
from starrec.pipeline.evaluation import group_inputs
from starrec.pipeline.runner import Stage, select_stages
from starrec.pipeline.stages import planner_sft_enabled

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "pipeline-tiny.yaml"
ML100K = REPO / "configs" / "pipeline-ml100k.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_then_file_then_command_line(tmp_path: Path) -> None:
    assert load_config(None) == PipelineConfig()
    path = write(tmp_path, "seed: 3\ndata:\n  n_test: 8\nsft:\n  max_steps: 5\n")
    config = load_config(path, ["data.n_test=12", "eval.ks=[1, 4]", "teacher.base_url=http://h:1/v1"],
                         work=tmp_path / "w")  # fmt: skip
    assert (config.seed, config.data.n_test, config.data.n_train) == (3, 12, 200)
    assert config.eval.ks == [1, 4] and config.teacher.base_url == "http://h:1/v1"
    assert config.sft == {"max_steps": 5} and config.work == tmp_path / "w"
    assert json.loads(json.dumps(config.to_dict()))["data"]["n_test"] == 12


def test_the_shipped_tiny_config_is_small_and_in_process() -> None:
    config = load_config(TINY)
    assert config.sft["model"] == "tiny" and config.student.backend == "transformers"
    assert config.teacher.llm == "local" and config.data.n_test <= 8


def test_the_shipped_ml100k_config_is_the_benchmark() -> None:
    if "constrained_decoding" not in {field.name for field in dataclasses.fields(Context)}:
        pytest.skip("Context.constrained_decoding (used by this config) is not on this branch yet")
    config = load_config(ML100K)
    assert (config.data.n_test, config.data.n_train, config.teacher.concurrency) == (150, 200, 16)
    assert config.teacher.options["constrained_decoding"] == "vllm"
    assert config.rl_data["success_at"] == 1 and config.rl_data["mix"] == "3:4:3"
    assert config.grpo["max_steps"] >= 100 and config.eval.ks == [1, 2, 4, 8]
    assert str(config.work) == "benchmarks/work/star_vs_mars"


BAD_CONFIGS = [
    ("data:\n  n_tset: 8\n", r"pipeline.yaml:2: unknown field 'data.n_tset'; valid fields of data: dataset"),
    ("teacher:\n  passes: two\n", r"pipeline.yaml:2: field 'teacher.passes' must be an integer, got 'two'"),
    ("teacher:\n  passes: 0\n", r"pipeline.yaml:2: field 'teacher.passes' must be >= 1"),
    ("seed: 0\nsft:\n  top_k: 5\n", r"pipeline.yaml:3: field 'sft.top_k' is set by filter.top_k"),
    ("sft:\n  target: planner\n", r"pipeline.yaml:2: field 'sft.target' is set by the stage"),
    ("sft:\n  ablation: no_planner\n", r"yaml:1: .*no_planner runs have none \(planner-sft; eval.mars"),
    ("teacher:\n  options:\n    use_planner: false\n", r"field 'eval.mars_planner' needs the planner"),
    ("sft:\n  max_stpes: 5\n", r"pipeline.yaml:2: unknown sft option 'max_stpes' for StarSFTConfig"),
    ("sft:\n  max_steps: many\n", r"pipeline.yaml:2: sft option max_steps='many' is not a valid int"),
    ("grpo:\n  num_generations: 4\n  per_device_train_batch_size: 6\n", r"yaml:1: .*a multiple of"),
    ("rl_data:\n  mix: 3-4-3\n", r"pipeline.yaml:2: mix must look like E:M:H"),
    ("teacher:\n  options:\n    ranker_fusion: best\n", r"pipeline.yaml:3: .*ranker_fusion must be"),
    ("teacher:\n  options:\n    max_hist: 3\n", r"yaml:3: unknown teacher.options option 'max_hist'"),
    ("student:\n  options:\n    beam: 2\n", r"pipeline.yaml:3: unknown STAR option 'beam'"),
    ("student:\n  options:\n    backend: vllm\n", r"yaml:3: field 'student.options.backend' is set by"),
    ("eval:\n  classical: [pop, mars]\n", r"pipeline.yaml:2: field 'eval.classical\[1\]' must be one of"),
    ("eval:\n  star: [sft, best]\n", r"field 'eval.star\[1\]' must be one of base, sft, grpo"),
    ("serve:\n  extra_args: --enforce-eager\n", r"pipeline.yaml:2: field 'serve.extra_args' must be a list"),
    ("serve:\n  gpu_memory: 3\n", r"pipeline.yaml:2: unknown field 'serve.gpu_memory'"),
    (
        "serve:\n  chunked_prefill: maybe\n",
        r"yaml:2: .*chunked_prefill must be one of auto, on, off, got 'maybe'",
    ),
    ("data: [1, 2]\n", r"pipeline.yaml:1: field 'data' must be a mapping"),
    ("data:\n  n_test: [8\n", r"pipeline.yaml:3: not valid YAML"),
    ("- a\n- b\n", r"pipeline.yaml: the top level must be a mapping"),
]


@pytest.mark.parametrize(("text", "message"), BAD_CONFIGS)
def test_errors_name_the_file_line_and_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(PipelineConfigError, match=message) as caught:
        load_config(write(tmp_path, text))
    assert "\n" not in str(caught.value)


def test_command_line_errors_name_the_override(tmp_path: Path) -> None:
    path = write(tmp_path, "seed: 0\n")
    with pytest.raises(PipelineConfigError, match=r"--set teacher\.passes: field 'teacher.passes' must be"):
        load_config(path, ["teacher.passes=lots"])
    with pytest.raises(PipelineConfigError, match=r"expected KEY\.PATH=VALUE"):
        load_config(path, ["teacher.passes"])
    with pytest.raises(PipelineConfigError, match="seed is a value, not a section"):
        load_config(path, ["seed.x=1"])


def test_cli_reports_a_bad_config_in_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "data:\n  n_test: -1\n")
    result = CliRunner().invoke(app, ["pipeline", "run", str(path)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: {path}:2: field 'data.n_test' must be >= 1, got -1"
    ]
    result = CliRunner().invoke(app, ["pipeline", "run", str(path), "--from", "train"])
    assert result.exit_code == 1  # the config is read first: its error wins


def test_stage_selection() -> None:
    assert [stage.name for stage, _ in select_stages()] == list(STAGES)
    assert all(not forced for _, forced in select_stages())
    assert [(s.name, f) for s, f in select_stages(from_stage="grpo")] == [
        ("grpo", True), ("serve", True), ("eval", True)]  # fmt: skip
    assert [(s.name, f) for s, f in select_stages(only="sft")] == [("sft", True)]
    with pytest.raises(ValueError, match="unknown stage; stages are data, teach"):
        select_stages(only="train")
    with pytest.raises(ValueError, match="not both"):
        select_stages(from_stage="sft", only="eval")


def test_eval_row_groups_depend_on_the_stage_that_makes_their_model() -> None:
    assert group_inputs("star-grpo") == group_inputs("best-of-k-grpo") == {"data", "grpo"}
    assert group_inputs("star-base") == group_inputs("best-of-k-base") == {"data"}
    assert group_inputs("best-of-k-sft") == {"data", "sft"}
    assert group_inputs("mars") == group_inputs("classical") == {"data"}
    assert group_inputs("mars_planner") == {"data", "planner-sft"}


class Recorder:
    """Stand-in stages: each writes a marker file; ``calls`` logs (stage, earlier stages that ran)."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    def stage(self, name: str) -> Stage:
        marker = self.work / f"{name}.done"

        def run(_: Any, ran: frozenset[str]) -> dict[str, Any]:
            self.calls.append((name, tuple(sorted(ran))))
            marker.write_text(name)
            return {"stage": name}

        done = None if name == "serve" else (lambda _: marker.exists())
        enabled = planner_sft_enabled if name == "planner-sft" else None
        read_back = {"stage": name, "read_back": True}
        return Stage(name, run, done, lambda _: read_back, f"{name}.done", enabled=enabled)


@pytest.fixture()
def recorder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder(tmp_path)
    monkeypatch.setattr(runner_module, "STAGE_LIST", tuple(recorder.stage(name) for name in STAGES))
    return recorder


def test_stages_skip_when_done_and_resume_after_a_failure(tmp_path: Path, recorder: Recorder) -> None:
    config = PipelineConfig(work=tmp_path)
    first = run_pipeline(config)
    assert [call[0] for call in recorder.calls] == list(STAGES)
    assert all(entry["status"] == "ran" for entry in first["stages"].values())
    record = json.loads((tmp_path / "pipeline.json").read_text())
    assert record["config"]["work"] == str(tmp_path) and set(record["stages"]) == set(STAGES)
    assert all(isinstance(entry["seconds"], float) for entry in record["stages"].values())

    recorder.calls.clear()
    second = run_pipeline(config)
    assert [call[0] for call in recorder.calls] == ["serve"]  # a check: always runs, makes nothing stale
    assert second["stages"]["sft"] == {**record["stages"]["sft"], "status": "skipped",
                                       "result": {"stage": "sft", "read_back": True}}  # fmt: skip

    # grpo lost its output (say, the machine died mid-training): grpo runs, and so does everything after it.
    (tmp_path / "grpo.done").unlink()
    recorder.calls.clear()
    run_pipeline(config)
    assert recorder.calls == [
        ("grpo", ()),
        ("serve", ("grpo",)),
        ("eval", ("grpo", "serve")),
    ]
    assert len(json.loads((tmp_path / "pipeline.json").read_text())["invocations"]) == 3


def test_planner_sft_feeds_only_eval_and_turns_off(tmp_path: Path, recorder: Recorder) -> None:
    config = PipelineConfig(work=tmp_path)
    run_pipeline(config)
    (tmp_path / "planner-sft.done").unlink()  # retrained: sft, rl-data and grpo stay as they are
    recorder.calls.clear()
    run_pipeline(config)
    assert recorder.calls == [
        ("planner-sft", ()),
        ("serve", ("planner-sft",)),
        ("eval", ("planner-sft", "serve")),
    ]
    (tmp_path / "planner-sft.done").unlink()
    (tmp_path / "sft.done").unlink()
    recorder.calls.clear()
    off = run_pipeline(load_config(None, ["eval.mars_planner=false"], work=tmp_path))
    assert off["stages"]["planner-sft"] == {"status": "off", "result": {}}
    assert [call[0] for call in recorder.calls] == ["sft", "rl-data", "grpo", "serve", "eval"]
    assert not (tmp_path / "planner-sft.done").exists()
    recorder.calls.clear()
    run_pipeline(config, from_stage="filter")  # switched on again, after the filter: trained again
    assert [call[0] for call in recorder.calls] == list(STAGES[2:])


def test_from_and_only_redo_stages(tmp_path: Path, recorder: Recorder) -> None:
    config = PipelineConfig(work=tmp_path)
    run_pipeline(config)
    recorder.calls.clear()
    run_pipeline(config, from_stage="rl-data")
    assert recorder.calls == [
        ("rl-data", ()),
        ("grpo", ("rl-data",)),
        ("serve", ("grpo", "rl-data")),
        ("eval", ("grpo", "rl-data", "serve")),
    ]
    recorder.calls.clear()
    outcome = run_pipeline(config, only="sft")
    assert recorder.calls == [("sft", ())] and list(outcome["stages"]) == ["sft"]
    recorder.calls.clear()
    run_pipeline(config, from_stage="serve")  # serve is a check: eval still runs, as --from asks
    assert recorder.calls == [("serve", ()), ("eval", ("serve",))]


def test_docs_explain_every_config_field() -> None:
    text = (REPO / "docs" / "pipeline.md").read_text(encoding="utf-8")
    defaults = PipelineConfig()
    sections = [defaults, *(getattr(defaults, f.name) for f in dataclasses.fields(PipelineConfig))]
    for section in [value for value in sections if dataclasses.is_dataclass(value)]:
        for knob in dataclasses.fields(section):
            assert f"`{knob.name}`" in text, (
                f"docs/pipeline.md does not explain {type(section).__name__}.{knob.name}"
            )


def test_a_bare_on_or_off_is_a_chunked_prefill_choice(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "serve:\n  chunked_prefill: off\n"))
    assert serve_fields(config.serve)["chunked_prefill"] == "off"
