"""STAR distillation on runs recorded by the real MARS graph (scripted teacher model):
serialisation round trip, then filter -> SFT -> RL data -> GRPO through the CLI with ``--model tiny``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from distill_fixtures import record_scripted_runs
from typer.testing import CliRunner

from starrec.cli import app
from starrec.contract.roster import AGENT_TAGS
from starrec.contract.runs_file import load_trajectories
from starrec.distill.chain import (
    DEFAULT_RECOMMEND_TOP,
    GENERATED_TOKEN_BUDGET,
    parse_chain,
    serialise_trajectory,
    serialise_within_budget,
)
from starrec.distill.filtering import outcome_filter
from starrec.distill.rewards import format_reward, ranking_tier, tiered_outcome_reward

USERS = ("u1", "u2", "u4", "u5", "u7", "u8")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return record_scripted_runs(tmp_path_factory.mktemp("distill"), USERS)


def test_round_trip_on_runs_recorded_by_the_mars_graph(recorded: dict[str, Path]) -> None:
    trajectories = load_trajectories(recorded["runs"])
    assert len(trajectories) == 2 * len(USERS)
    for trajectory in trajectories:
        text = serialise_trajectory(trajectory)
        chain = parse_chain(text)
        assert chain.errors == []
        assert chain.ranking == trajectory.ranking[:DEFAULT_RECOMMEND_TOP]
        executed = [step.node for step in trajectory.steps if step.node in AGENT_TAGS]
        assert chain.agents == executed
        recorded_calls = [(c.name, c.arguments, c.response) for s in trajectory.steps for c in s.tool_calls]
        assert (
            recorded_calls and [(c.name, c.arguments, c.response) for c in chain.tool_calls] == recorded_calls
        )
        assert "correction" in chain.order  # the reflector failed once in every run
        assert format_reward(text) == 1.0
        truth = trajectory.ground_truth or ""
        assert tiered_outcome_reward(text, truth) == ranking_tier(trajectory.ranking, truth)


def test_recorded_chains_fit_the_generated_budget(recorded: dict[str, Path]) -> None:
    """The runs the real MARS graph records, in the student's (SmolLM2) tokens."""
    from transformers import AutoTokenizer

    from starrec.llm.smollm2 import tiny_llama_dir

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir())  # the SmolLM2 tokenizer
    for trajectory in load_trajectories(recorded["runs"]):
        text, tokens = serialise_within_budget(trajectory, tokenizer)
        assert text == serialise_trajectory(trajectory)  # the default format fits: nothing trimmed
        assert 0 < tokens.generated <= GENERATED_TOKEN_BUDGET and tokens.tool > 0


def test_filter_counts_survivors(recorded: dict[str, Path]) -> None:
    kept, report = outcome_filter(load_trajectories(recorded["runs"]))
    # Odd ranker calls put the truth first: tasks 0, 2, 4 in both passes.
    total = report.total()
    assert (len(kept), total.runs, total.tasks, total.kept_runs, total.kept_tasks) == (6, 12, 6, 6, 3)
    assert {(t.task_id, t.pass_) for t in kept} == {(task, p) for task in ("0", "2", "4") for p in (0, 1)}
    result = CliRunner().invoke(app, ["distill", "filter", "--runs", str(recorded["runs"])])
    assert result.exit_code == 0, result.output
    assert "kept runs" in result.output
    assert "0/6 chains exceed the 512-token generated budget" in " ".join(result.output.split())
    with pytest.raises(ValueError, match="recorded with ablation none"):
        outcome_filter(load_trajectories(recorded["runs"]), ablation="no_tools")


@pytest.mark.parametrize(
    ("ablation", "switch", "order"),
    [
        (
            "no_planner",
            "use_planner",
            [
                "user_profile",
                "historical_analysis",
                "recent_analysis",
                "divergence_analysis",
                "reflection",
                "correction",
                "recommend",
            ],
        ),
        (
            "no_reflector",
            "use_reflector",
            [
                "plan",
                "user_profile",
                "historical_analysis",
                "recent_analysis",
                "divergence_analysis",
                "recommend",
            ],
        ),
        (
            "no_tools",
            "use_tools",
            [
                "plan",
                "user_profile",
                "historical_analysis",
                "recent_analysis",
                "divergence_analysis",
                "reflection",
                "correction",
                "recommend",
            ],
        ),
    ],
)
def test_ablation_runs_serialise_and_score(
    tmp_path: Path, ablation: str, switch: str, order: list[str]
) -> None:
    folders = record_scripted_runs(tmp_path, ("u1", "u2"), passes=1, **{switch: False})
    trajectories = load_trajectories(folders["runs"])
    kept, _ = outcome_filter(trajectories, ablation=ablation)
    assert kept
    for trajectory in trajectories:
        text = serialise_trajectory(trajectory)
        chain = parse_chain(text)
        assert chain.errors == [] and chain.order == order
        assert bool(chain.tool_calls) == (ablation != "no_tools")
        assert format_reward(text, ablation) == 1.0
        assert format_reward(text) == (1.0 if ablation == "no_tools" else -1.0)
    with pytest.raises(ValueError, match=f"recorded with ablation {ablation}"):
        outcome_filter(trajectories)


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, [str(arg) for arg in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.output


def test_sft_two_steps_via_cli(recorded: dict[str, Path], tmp_path: Path) -> None:
    """The default-suite smoke of the TRL path (the full pipeline below is marked slow)."""
    out = tmp_path / "sft"
    output = invoke(
        "distill",
        "sft",
        "--runs",
        recorded["runs"],
        "--model",
        "tiny",
        "--out",
        out,
        "--max-steps",
        2,
        "--max-length",
        4096,
        "--threads",
        1,
    )
    assert "SFT done: 6 examples (0 longer than max_length, left out; 0 chains over the 512-token" in (
        " ".join(output.split())
    )
    metrics = json.loads((out / "sft_metrics.json").read_text())
    assert metrics["steps"] == 2 and len(metrics["losses"]) == 2 and metrics["peak_rss_mb"] > 0
    assert (out / "model.safetensors").is_file() and (out / "sft_data").is_dir()
    assert json.loads((out / "star_config.json").read_text())["use_cpu"] is True


class Stopped(RuntimeError):
    """Stands in for a kill: raised at the end of one training step."""


def test_a_stopped_sft_resumes_from_its_last_checkpoint(
    recorded: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import TrainerCallback

    import starrec.distill.training as training
    from starrec.distill.config import StarSFTConfig
    from starrec.distill.sft import train_sft

    out = tmp_path / "sft"
    config = StarSFTConfig(model="tiny", max_steps=4, save_steps=2, max_length=4096).for_device(cpu=True)
    logger = training.make_step_logger

    class StopAtStep3(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise Stopped("killed after step 3")

    # The first run logs nothing itself: steps 1-2 of the final curve must come from the checkpoint.
    monkeypatch.setattr(training, "make_step_logger", lambda log, console=None: StopAtStep3())
    with pytest.raises(Stopped):
        train_sft(recorded["runs"], out, config)
    assert [p.name for p in (out / "trainer").glob("checkpoint-*")] == ["checkpoint-2"]
    assert not (out / "config.json").exists()

    with pytest.raises(ValueError, match=r"another config; delete .* to train from the start"):
        train_sft(recorded["runs"], out, StarSFTConfig(**{**config.__dict__, "learning_rate": 1e-3}))

    monkeypatch.setattr(training, "make_step_logger", logger)
    result = train_sft(recorded["runs"], out, config)
    assert result.resumed_from is not None and result.resumed_from.endswith("checkpoint-2")
    assert result.steps == 4
    assert [step for step, _ in result.losses] == [1, 2, 3, 4]  # steps 1-2 come from the checkpoint
    assert len(result.step_seconds) == 2  # only steps 3 and 4 ran again
    # Tokens (and tokens/s) count this invocation's 2 steps of one example each, not all 4.
    assert abs(result.trained_tokens - 2 * result.mean_example_tokens) <= 2
    assert (out / "model.safetensors").is_file() and not list((out / "trainer").glob("checkpoint-*"))
    assert json.loads((out / "sft_metrics.json").read_text())["resumed_from"] == result.resumed_from


@pytest.mark.slow
def test_tiny_pipeline_filter_sft_rldata_grpo(recorded: dict[str, Path], tmp_path: Path) -> None:
    sft_dir, rl_dir, grpo_dir = tmp_path / "sft", tmp_path / "rl", tmp_path / "grpo"
    invoke(
        "distill",
        "sft",
        "--runs",
        recorded["runs"],
        "--model",
        "tiny",
        "--out",
        sft_dir,
        "--max-steps",
        4,
        "--learning-rate",
        "1e-3",
        "--max-length",
        4096,
        "--threads",
        1,
    )
    metrics = json.loads((sft_dir / "sft_metrics.json").read_text())
    assert metrics["examples"] == 6 and metrics["steps"] == 4
    assert metrics["last_loss"] < metrics["first_loss"]
    assert (sft_dir / "config.json").is_file() and (sft_dir / "model.safetensors").is_file()

    # The random student never writes a parseable chain, so its answers are random guesses: counting
    # a top-10 hit spreads tasks over the buckets; all of them land in "medium" at this seed.
    invoke(
        "distill",
        "rl-data",
        "--model",
        sft_dir,
        "--runs",
        recorded["runs"],
        "--out",
        rl_dir,
        "--evidence-data",
        recorded["data"],
        "--evidence-tasks",
        recorded["tasks"],
        "--success-at",
        10,
        "--mix",
        "0:1:0",
        "--max-completion-length",
        16,
        "--recommend-reserve",
        8,
        "--threads",
        1,
    )
    info = json.loads((rl_dir / "rl_data.json").read_text())
    assert info["instances"] == len(USERS) and info["samples"] == 8 * len(USERS)
    assert sum(info["buckets"].values()) == len(USERS)
    assert info["unparsed_samples"] == info["samples"]  # counted, not hidden
    from datasets import load_from_disk

    mixed = load_from_disk(str(rl_dir / "mixed"))
    assert {"prompt", "ground_truth", "candidates", "bucket", "hits"} <= set(mixed.column_names)
    assert len(mixed) == info["mixed"]["medium"] > 0

    invoke(
        "distill",
        "grpo",
        "--sft",
        sft_dir,
        "--data",
        rl_dir,
        "--out",
        grpo_dir,
        "--max-steps",
        2,
        "--num-generations",
        2,
        "--max-completion-length",
        16,
        "--recommend-reserve",
        8,
        "--threads",
        1,
    )
    grpo = json.loads((grpo_dir / "grpo_metrics.json").read_text())
    assert grpo["steps"] == 2 and len(grpo["reward_mean"]) == 2
    assert all(-1.0 <= value <= 2.0 for _, value in grpo["reward_mean"])
    assert grpo["format_reward_mean"] and grpo["outcome_reward_mean"]
    assert (grpo_dir / "model.safetensors").is_file() and (grpo_dir / "reward_curve.png").is_file()


def test_planner_sft_on_tiny_then_mars_planner_serves_it(recorded: dict[str, Path], tmp_path: Path) -> None:
    """``--target planner``: SFT on the kept runs' planner steps only, then the checkpoint is the
    planner of MARS-Planner while the scripted teacher serves every other node."""
    from datasets import load_from_disk
    from distill_fixtures import scripted_teacher
    from mars_fixtures import FakeEvidence, build_movie_dataset, make_task

    from starrec.eval.harness import evaluate
    from starrec.eval.methods import MethodOptions, make_method

    out = tmp_path / "planner"
    output = invoke("distill", "sft", "--runs", recorded["runs"], "--model", "tiny", "--out", out,
                    "--target", "planner", "--max-steps", 2, "--threads", 1)  # fmt: skip
    assert "SFT done: 6 examples" in output
    metrics = json.loads((out / "sft_metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["mean_example_tokens"] > 0
    assert json.loads((out / "star_config.json").read_text())["target"] == "planner"
    rows = load_from_disk(str(out / "sft_data"))
    assert "<plan>" not in rows[0]["completion"][0]["content"]  # the planner's JSON, not a STAR chain
    assert json.loads(rows[0]["completion"][0]["content"])["agents"]

    dataset = build_movie_dataset()
    tasks = [make_task(dataset, "u1", 0)]
    options = MethodOptions(
        models={"planner": f"local:{out}"}, extra={"chunk_size": "3", "max_new_tokens": "24"}
    )
    method = make_method("mars_planner", options)
    method.chat_model = scripted_teacher({frozenset(tasks[0].candidates): tasks[0].ground_truth or ""})
    method.evidence = FakeEvidence(dataset)
    report = evaluate(method, tasks, dataset, seed=0, progress=False)
    assert report["method"] == "mars_planner" and report["invalid"]["errors"] == 0
    per_model = report["method_stats"]["per_model"]
    assert per_model[str(out)]["nodes"] == ["planner"] and per_model[str(out)]["llm_calls"] >= 1
    assert "planner" not in per_model["scripted"]["nodes"]


@pytest.mark.slow
def test_planner_sft_on_smollm2_plans_with_known_agents(recorded: dict[str, Path], tmp_path: Path) -> None:
    """The benchmark-size planner: SmolLM2-135M fine-tuned on the planner steps, then serving MARS-Planner."""
    from distill_fixtures import scripted_teacher
    from mars_fixtures import FakeEvidence, build_movie_dataset, make_task

    from starrec.contract.roster import AGENT_NODES
    from starrec.eval.harness import evaluate
    from starrec.eval.methods import MethodOptions, make_method

    out = tmp_path / "planner"
    output = invoke("distill", "sft", "--runs", recorded["runs"], "--model", "smollm2", "--out", out,
                    "--target", "planner", "--max-steps", 3, "--learning-rate", 1e-4,
                    "--threads", 1)  # fmt: skip
    assert "SFT done: 6 examples" in output
    metrics = json.loads((out / "sft_metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["last_loss"] < metrics["first_loss"]

    dataset = build_movie_dataset()
    tasks = [make_task(dataset, "u2", 0)]
    options = MethodOptions(
        models={"planner": f"local:{out}"}, extra={"chunk_size": "3", "max_new_tokens": "64"}
    )
    method = make_method("mars_planner", options)
    method.chat_model = scripted_teacher({frozenset(tasks[0].candidates): tasks[0].ground_truth or ""})
    method.evidence = FakeEvidence(dataset)
    report = evaluate(method, tasks, dataset, seed=0, progress=False)
    assert report["invalid"]["errors"] == 0
    [trajectory] = method.trajectories
    planner = next(step for step in trajectory.steps if step.node == "planner")
    assert planner.llm_calls[0].model == str(out)
    assert set(planner.output["agents"]) <= set(AGENT_NODES)


def test_a_stopped_rl_data_run_resumes_and_samples_what_an_unbroken_run_samples(
    recorded: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datasets import load_from_disk

    import starrec.distill.rollout as rollout
    from starrec.distill.rldata import SAMPLES_PARTIAL, RLDataConfig, build_rl_data, rl_instances
    from starrec.llm.smollm2 import tiny_llama_dir

    def instances() -> list:
        return rl_instances(load_trajectories(recorded["runs"]))

    config = RLDataConfig(samples=2, success_at=10, mix="1:1:1", max_completion_length=16,
                          recommend_reserve=8, limit=3)  # fmt: skip
    hard = RLDataConfig(**{**config.__dict__, "mix": "0:0:1"})  # of 2 samples, 1 hit is "hard"
    unbroken = build_rl_data(tiny_llama_dir(), instances(), tmp_path / "whole", hard, None, progress=False)

    real, calls = rollout.generate_rollouts, []

    def stop_at_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise Stopped("killed while sampling the third instance")
        return real(*args, **kwargs)

    monkeypatch.setattr(rollout, "generate_rollouts", stop_at_the_third)
    out = tmp_path / "stopped"
    with pytest.raises(Stopped):
        build_rl_data(tiny_llama_dir(), instances(), out, hard, None, progress=False)
    assert len((out / SAMPLES_PARTIAL).read_text().splitlines()) == 1 + 2  # header + 2 instances
    with pytest.raises(ValueError, match="holds samples of another model or config"):
        build_rl_data(tiny_llama_dir(), instances(), out, config, None, progress=False)

    monkeypatch.setattr(rollout, "generate_rollouts", real)
    resumed = build_rl_data(tiny_llama_dir(), instances(), out, hard, None, progress=False)
    assert resumed["resumed_instances"] == 2 and unbroken["resumed_instances"] == 0
    assert not (out / SAMPLES_PARTIAL).exists()
    rows = [dict(row) for row in load_from_disk(str(out / "all"))]
    assert rows == [dict(row) for row in load_from_disk(str(tmp_path / "whole" / "all"))]
    assert resumed["buckets"] == unbroken["buckets"]
