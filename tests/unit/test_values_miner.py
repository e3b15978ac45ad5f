"""The ZOOM value miner end to end on a tiny synthetic graph, with scripted evaluators and supervisors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mars_fixtures import build_movie_dataset, make_task

from starrec.contract.runs_file import RunsFile
from starrec.contract.values import SCHWARTZ_VALUES
from starrec.graphs.values_graph import MinerContext
from starrec.graphs.values_mining import MiningConfig, mine_values
from starrec.llm.scripted import ScriptedChatModel
from starrec.tools.toolkit import build_ladybug_graph


def proposal(weights: dict[str, float], ids: list[str] | None = None) -> str:
    values = [
        {"value": name, "weight": weight, "reason": f"{name} shows", "item_ids": ids or ["m1"]}
        for name, weight in weights.items()
    ]
    return json.dumps({"thinking": "t", "values": values})


KIND = {"benevolence": 0.9, "universalism": 0.7, "security": 0.5}
THRILL = {"stimulation": 0.9, "hedonism": 0.8, "power": 0.6}


@pytest.fixture
def store(tmp_path: Path):
    dataset = build_movie_dataset(users=3)
    view = dataset.hide_from([make_task(dataset, "u1")])
    graph, _ = build_ladybug_graph(view, tmp_path / "g.lbdb")
    yield graph
    graph.close()


def run(store, tmp_path: Path, script: dict, **context) -> tuple:
    model = ScriptedChatModel(responses=script, cycle=True)
    config = MiningConfig(context=MinerContext(llm="scripted", **context), users=("u1", "u2"))
    report = mine_values(
        store, tmp_path / "out", config, chat_model=model, domain="movie", show_progress=False
    )
    return report, model


def test_consensus_stores_profiles_records_runs_and_resume_skips(store, tmp_path: Path) -> None:
    script = {"value evaluator": [proposal(KIND)], "value supervisor": [proposal(KIND)]}
    report, model = run(store, tmp_path, script)
    assert report.users == 2 and report.consensus_rate == 1.0 and report.fallback_rate == 0.0
    assert report.mean_rounds == 1.0 and report.calls_per_user == 4  # 2 evaluators + 2 supervisors
    profile, _ = store.get_value_profile("u1")
    assert profile is not None and profile.weights()["benevolence"] == pytest.approx(0.9)
    assert profile.meta["consensus"] is True and profile.scores[
        SCHWARTZ_VALUES.index("benevolence")
    ].item_ids == ("m1",)
    # Two decoding strategies: greedy and sampled, sent as sampling parameters.
    sent = {(c.kwargs.get("temperature"), c.kwargs.get("top_p")) for c in model.calls}
    assert sent == {(0.0, 1.0), (0.7, 0.9)}
    runs = list(RunsFile(tmp_path / "out").trajectories())
    assert [r.task_id for r in runs] == ["values:u1", "values:u2"]
    assert runs[0].nodes == ["summarise", "evaluate", "supervise", "finalise"]
    again, _ = run(store, tmp_path, script)
    assert again.skipped == 2 and again.users == 0


def test_deadlock_falls_back_to_the_first_evaluator_after_the_round_limit(store, tmp_path: Path) -> None:
    script = {
        "value evaluator": [proposal(KIND), proposal(THRILL)],
        "value supervisor 1 of": [proposal(KIND)],
        "value supervisor 2 of": [proposal(THRILL)],
    }
    report, model = run(store, tmp_path, script, max_rounds=2)
    assert report.consensus_rate == 0.0 and report.fallback_rate == 1.0 and report.rounds == {"2": 2}
    assert (
        sum("value supervisor" in c.prompt for c in model.calls) == 2 * 2 * 2
    )  # users x rounds x supervisors
    profile, _ = store.get_value_profile("u1")
    assert profile.top(1)[0].value == "benevolence" and profile.meta["fallback"] is True
    run_repairs = next(RunsFile(tmp_path / "out").trajectories()).repairs
    assert run_repairs["debate_fallback"] == 1


def test_hallucinated_ids_and_unknown_values_are_dropped_and_counted(store, tmp_path: Path) -> None:
    bad = json.loads(proposal({**KIND, "wealth": 0.9}, ids=["m1", "not-an-item"]))
    bad["values"].append(dict(bad["values"][0], weight=0.1))  # benevolence again
    bad = json.dumps(bad)
    report, _ = run(store, tmp_path, {"value evaluator": [bad], "value supervisor": [bad]})
    assert report.hallucinated_ids == 2 * 4 * 3  # users x answers x values citing it
    assert report.unknown_values == 2 * 4 and report.repeated_values == 2 * 4
    profile, _ = store.get_value_profile("u2")
    assert all("not-an-item" not in score.item_ids for score in profile.scores)


def test_the_miner_sees_only_the_leakage_free_history(store, tmp_path: Path) -> None:
    dataset = build_movie_dataset(users=3)
    answer = make_task(dataset, "u1").ground_truth
    script = {"value evaluator": [proposal(KIND)], "value supervisor": [proposal(KIND)]}
    _, model = run(store, tmp_path, script)
    u1_prompts = [c.prompt for c in model.calls if "User: u1" in c.prompt]
    assert u1_prompts and all(f"[{answer}]" not in prompt for prompt in u1_prompts)


def test_values_mine_command_writes_a_json_report(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from starrec.cli import app
    from starrec.data.agentsociety import write_dataset

    data = write_dataset(build_movie_dataset(users=2), tmp_path / "data")
    recording = tmp_path / "script.jsonl"
    line = json.dumps({"response": {"content": proposal(KIND)}})
    recording.write_text("\n".join([line] * 8) + "\n", encoding="utf-8")
    args = ["values", "mine", "--data", str(data), "--out", str(tmp_path / "out"), "--path",
            str(tmp_path / "g.lbdb"), "--llm", f"scripted:{recording}", "--json"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["users"] == 2 and report["consensus_rate"] == 1.0 and report["calls_per_user"] == 4
    again = json.loads(CliRunner().invoke(app, args).output.strip().splitlines()[-1])
    assert again["skipped"] == 2 and again["users"] == 0


def test_a_failed_summarisation_cannot_smuggle_in_values_or_items() -> None:
    """Items without metadata summarise to their bare ids; an evaluator that then invents values and
    items gets them dropped (counted), and a profile never cites an item outside the history."""
    import asyncio

    from starrec.graphs.recording import TrajectoryRecorder
    from starrec.graphs.values_graph import MINER_NODES, VALUES_STEP_EVENT, build_values_graph

    history = [{"item_id": "m1"}, {"item_id": "m2"}]  # no title, no categories
    invented = proposal({"wealth": 0.9, "fame": 0.8, "hedonism": 0.4}, ids=["m9", "blockbuster"])
    model = ScriptedChatModel(
        responses={"value evaluator": [invented], "value supervisor": [invented]}, cycle=True
    )
    recorder = TrajectoryRecorder(nodes=MINER_NODES, step_event=VALUES_STEP_EVENT)
    state = asyncio.run(
        build_values_graph(chat_model=model).ainvoke(
            {"user_id": "u1", "domain": "movie", "history": history},
            context=MinerContext(llm="scripted"),
            config={"callbacks": [recorder]},
        )
    )
    assert state["summaries"] == {"m1": "m1", "m2": "m2"}
    profile = state["profile"]
    weights = {score["value"]: score["weight"] for score in profile["values"]}
    assert set(weights) == set(SCHWARTZ_VALUES) and weights["hedonism"] == pytest.approx(0.4)
    assert sum(weights.values()) == pytest.approx(0.4)  # nothing but the one known value
    assert all(item in ("m1", "m2") for score in profile["values"] for item in score["item_ids"])
    repairs = recorder.trajectory(state, task_id="values:u1").repairs
    assert repairs["unknown_values"] == 2 * 4 and repairs["hallucinated_ids"] == 2 * 4
