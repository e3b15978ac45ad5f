"""``starrec teach`` at scale: the LLM cache replays a batch, runs report money, shards split and merge."""

from __future__ import annotations

import itertools
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from mars_fixtures import FakeEvidence, build_movie_dataset, default_script, make_task
from typer.testing import CliRunner

from starrec.cli import app
from starrec.contract.runs_file import RunsFile, load_trajectories
from starrec.data.agentsociety import write_dataset
from starrec.data.tasks import write_tasks
from starrec.eval.commands import markdown_report
from starrec.eval.harness import evaluate
from starrec.graphs.context import Context
from starrec.graphs.recommender import MarsRecommender
from starrec.graphs.resources import Resources
from starrec.graphs.teach import Shard, merge_runs, shard_of, teach
from starrec.llm.cache import SQLiteLLMCache, open_llm_cache
from starrec.llm.scripted import ScriptedChatModel

USERS = ("u1", "u2", "u3", "u4", "u5", "u6")


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Any]:
    dataset = build_movie_dataset()
    tasks = [make_task(dataset, user, index) for index, user in enumerate(USERS)]
    write_tasks(tasks, tmp_path / "tasks")
    data = write_dataset(dataset, tmp_path / "data")
    return {"dataset": dataset, "data": data, "tasks": tmp_path / "tasks", "root": tmp_path}


def varying_script() -> dict[str, Any]:
    """Node responses that differ on every call, so only a replay can reproduce a batch exactly."""
    script = default_script([])
    counter = itertools.count()

    def summary(messages: list[Any]) -> str:
        return f"Summary number {next(counter)}: the viewer watched Film 1 [m1]."

    def ranking(messages: list[Any]) -> str:
        ids = sorted(set(re.findall(r"\bm\d+\b", "\n".join(str(m.content) for m in messages))))
        random.Random(next(counter)).shuffle(ids)
        return json.dumps({"thinking": "rank", "ranking": ids})

    return {**script, "abstractor": summary, "ranker": ranking}


def run_teach(folders: dict[str, Any], out: str, model: Any, **kwargs: Any) -> Any:
    evidence = FakeEvidence(folders["dataset"])
    context = Context(chunk_size=3)
    out_dir = folders["root"] / out
    return teach(
        folders["data"], folders["tasks"], out_dir, context, chat_model=model, evidence=evidence, **kwargs
    )


def without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: without_timings(item) for key, item in value.items() if key != "seconds"}
    return [without_timings(item) for item in value] if isinstance(value, list) else value


def comparable(line: dict[str, Any]) -> dict[str, Any]:
    """What a run decided: ranking, each step's output and LLM answers (no timings, no cache marks)."""
    steps = [{"node": s["node"], "output": without_timings(s["output"]),
              "responses": [c["response"] for c in s["llm_calls"]]} for s in line["steps"]]  # fmt: skip
    return {"task": line["task_id"], "ranking": line["ranking"], "steps": steps}


def test_a_second_teach_with_the_cache_hits_every_call_and_records_the_same_runs(
    folders: dict[str, Any],
) -> None:
    cache_file = folders["root"] / "llm.sqlite"
    first = run_teach(
        folders,
        "runs-1",
        ScriptedChatModel(responses=varying_script(), cycle=True, cache=SQLiteLLMCache(cache_file)),
    )
    calls = sum(line["llm_calls"] for line in RunsFile(folders["root"] / "runs-1").records())
    # Users with the same history ask the abstractor the same thing: those repeats hit already.
    assert first.llm_cache_misses > 0 and first.llm_cache_hits + first.llm_cache_misses == calls

    silent = ScriptedChatModel(responses=[], cache=SQLiteLLMCache(cache_file))  # answers nothing itself
    second = run_teach(folders, "runs-2", silent)
    assert silent.calls == [] and second.errors == 0
    assert (second.llm_cache_hits, second.llm_cache_misses) == (calls, 0)
    before = sorted(map(comparable, RunsFile(folders["root"] / "runs-1").records()), key=lambda c: c["task"])
    after = RunsFile(folders["root"] / "runs-2").records()
    assert sorted(map(comparable, after), key=lambda c: c["task"]) == before
    assert all(
        call["cache"] == "hit" for line in after for step in line["steps"] for call in step["llm_calls"]
    )
    assert all(line["llm_cache_hits"] == line["llm_calls"] and line["cost_usd"] == 0.0 for line in after)


def test_the_context_route_attaches_the_cache_to_the_built_model(tmp_path: Path) -> None:
    recording = tmp_path / "rec.jsonl"
    recording.write_text(json.dumps({"response": {"content": "hello"}}) + "\n")
    context = Context(llm=f"scripted:{recording}", llm_cache=str(tmp_path / "llm.sqlite"))
    model = Resources().chat_model(context)
    assert model.cache is open_llm_cache(tmp_path / "llm.sqlite")
    assert Resources().chat_model(Context(llm=f"scripted:{recording}")).cache is None


class HostedScripted(ScriptedChatModel):
    """A scripted model presenting itself as a hosted model whose name sets the price."""

    @property
    def _llm_type(self) -> str:
        return "openai-chat"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        return {**super()._get_ls_params(stop=stop, **kwargs), "ls_model_name": self.model_name}


def test_runs_record_their_cost_from_the_price_table(folders: dict[str, Any]) -> None:
    model = HostedScripted(responses=varying_script(), cycle=True, model_name="gpt-4o-mini")
    summary = run_teach(folders, "runs", model, limit=2)
    lines = RunsFile(folders["root"] / "runs").records()
    for line in lines:
        calls = [call for step in line["steps"] for call in step["llm_calls"]]
        assert all(call["model"] == "gpt-4o-mini" and call["cache"] is None for call in calls)
        expected = (line["prompt_tokens"] * 0.15 + line["completion_tokens"] * 0.60) / 1e6
        assert line["cost_usd"] == pytest.approx(expected) and line["cost_usd"] > 0
    assert summary.cost_usd == pytest.approx(sum(line["cost_usd"] for line in lines))
    assert summary.as_dict()["cost_usd_per_run"] == pytest.approx(summary.cost_usd / 2)


def test_an_unpriced_hosted_model_is_reported_unknown_not_free(folders: dict[str, Any]) -> None:
    model = HostedScripted(responses=varying_script(), cycle=True, model_name="in-house-llm-v9")
    with pytest.warns(UserWarning, match="no price for hosted model 'in-house-llm-v9'"):
        summary = run_teach(folders, "runs", model, limit=2)
    assert summary.cost_usd is None and summary.unpriced_runs == 2
    assert all(line["cost_usd"] is None for line in RunsFile(folders["root"] / "runs").records())


def test_eval_reports_cost_in_json_and_markdown(folders: dict[str, Any]) -> None:
    from starrec.data.tasks import read_tasks

    model = HostedScripted(responses=varying_script(), cycle=True, model_name="gpt-4o-mini")
    method = MarsRecommender(
        Context(chunk_size=3), chat_model=model, evidence=FakeEvidence(folders["dataset"])
    )
    report = evaluate(method, read_tasks(folders["tasks"]), folders["dataset"], progress=False)
    assert report["cost_usd"] > 0 and report["cost_usd_per_task"] == pytest.approx(report["cost_usd"] / 6)
    assert report["method_stats"]["cost_usd"] == report["cost_usd"]
    text = markdown_report(report, "mars on tasks")
    assert "| cost $ | cost $/task |" in text and f"{report['cost_usd']:.4f}" in text


@pytest.mark.parametrize("text", ["2/2", "-1/2", "1/0", "a/b", "1", "1/2/3", ""])
def test_bad_shards_are_one_line_errors(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected I/N with 0 <= I < N"):
        Shard.parse(text)


def test_shards_are_stable_and_partition_the_task_ids() -> None:
    ids = [str(index) for index in range(200)]
    # SHA-1 based, so every machine and Python version agrees (hash() is salted per process).
    assert [shard_of(task_id, 4) for task_id in ("0", "1", "task_17")] == [
        int.from_bytes(__import__("hashlib").sha1(t.encode()).digest()[:8], "big") % 4
        for t in ("0", "1", "task_17")
    ]
    shards = [Shard(index, 4) for index in range(4)]
    owners = [[shard for shard in shards if shard.owns(task_id)] for task_id in ids]
    assert all(len(owner) == 1 for owner in owners)
    assert all(20 < sum(shard.owns(task_id) for task_id in ids) < 80 for shard in shards)


def test_shards_run_apart_and_merge_into_the_full_batch(folders: dict[str, Any]) -> None:
    script = default_script([])
    full = run_teach(folders, "full", ScriptedChatModel(responses=script, cycle=True), passes=2)
    for index in range(3):
        run_teach(folders, f"shard-{index}", ScriptedChatModel(responses=script, cycle=True), passes=2,
                  shard=Shard(index, 3))  # fmt: skip
    sources = [folders["root"] / f"shard-{index}" for index in range(3)]
    per_shard = [{line["task_id"] for line in RunsFile(source).records()} for source in sources]
    assert all(ids == {t for t in ids if shard_of(t, 3) == i} for i, ids in enumerate(per_shard))
    report = merge_runs(sources, folders["root"] / "merged")
    merged = load_trajectories(folders["root"] / "merged")
    expected = {(t.task_id, t.pass_) for t in load_trajectories(folders["root"] / "full")}
    assert {(t.task_id, t.pass_) for t in merged} == expected and len(merged) == len(expected)
    assert report.missing_shards == [] and report.summary.runs == full.runs
    assert report.summary.metrics == full.metrics

    with pytest.raises(FileExistsError, match="already exists"):
        merge_runs(sources, folders["root"] / "merged")
    with pytest.raises(ValueError, match="are both shard 0/3"):
        merge_runs([sources[0], sources[0]], folders["root"] / "twice")
    with pytest.raises(ValueError, match="was recorded in both"):
        merge_runs([folders["root"] / "full", sources[1]], folders["root"] / "overlap")
    assert merge_runs(sources[:2], folders["root"] / "partial").missing_shards == [2]
    with pytest.raises(ValueError, match="holds the runs of shard 1/3, not 0/3"):
        run_teach(folders, "shard-1", ScriptedChatModel(responses=script, cycle=True), shard=Shard(0, 3))


def test_cli_shard_and_cache_flags(folders: dict[str, Any]) -> None:
    runner = CliRunner()
    base = ["teach", "--data", str(folders["data"]), "--tasks", str(folders["tasks"]),
            "--out", str(folders["root"] / "cli")]  # fmt: skip
    bad = runner.invoke(app, [*base, "--shard", "3/3"])
    assert bad.exit_code == 2 and "expected I/N with 0 <= I < N" in bad.output
    merged = runner.invoke(
        app, ["merge-runs", str(folders["root"] / "missing"), "--out", str(folders["root"] / "m")]
    )
    assert merged.exit_code == 1 and "error: no runs at" in merged.output
    help_text = runner.invoke(app, ["teach", "--help"]).output
    assert "--llm-cache" in help_text and "--shard" in help_text
    assert "--llm-cache" in runner.invoke(app, ["eval", "--help"]).output
    assert "--llm-cache" in runner.invoke(app, ["demo", "--help"]).output


def test_teach_reads_the_graph_from_neo4j_when_asked(folders: dict[str, Any], monkeypatch) -> None:
    monkeypatch.setenv("NEO4J_URI", "bolt://127.0.0.1:9")  # nothing listens there
    result = CliRunner().invoke(
        app,
        ["teach", "--data", str(folders["data"]), "--tasks", str(folders["tasks"]),
         "--out", str(folders["root"] / "neo4j-runs"), "--store", "neo4j"],
    )  # fmt: skip
    assert result.exit_code == 1 and "error: cannot reach Neo4j at bolt://127.0.0.1:9" in result.output
