"""``--method star`` through the evaluation harness, with a scripted endpoint and scripted abstractor."""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_serving_loop import RecordingEvidence, ScriptedServer

from starrec.data.schema import Dataset, Task
from starrec.distill.student_prompt import star_system_prompt
from starrec.eval.harness import evaluate
from starrec.eval.methods import MethodOptions, make_method
from starrec.llm.scripted import ScriptedChatModel
from starrec.llm.toolcall_syntax import format_tool_call
from starrec.serving.backends import OpenAIBackend
from starrec.serving.loop import StarLoopConfig
from starrec.serving.recommender import StarOptions, StarRecommender, split_options

TASKS = [
    Task("t1", "u1", ("i5", "i6", "i7", "i8", "i4"), ground_truth="i4"),
    Task("t2", "u4", ("i7", "i6", "i8", "i4", "i2"), ground_truth="i6"),
]
GROUND_TRUTH = {task.user_id: task.ground_truth for task in TASKS}


def candidates_in(request: dict[str, Any]) -> tuple[str, list[str]]:
    """(user id, candidate ids) from the student prompt the loop sent."""
    user = request["messages"][1]["content"]
    listed = json.loads(user.split("## candidate ids\n", 1)[1].splitlines()[0])
    user_id = user.split("for user ", 1)[1].split(".", 1)[0]
    return user_id, listed


def oracle_student(request: dict[str, Any]) -> str:
    """Puts the ground truth first, after one user_cf call: a student that uses its tools well."""
    user_id, listed = candidates_in(request)
    if request["messages"][-1]["role"] != "assistant":
        call = format_tool_call("user_cf", {"user_id": user_id})
        return f'<plan>\nx {{"agents": ["user_profile"]}}\n</plan>\n<user_profile>\n{call}'
    best = GROUND_TRUTH[user_id]
    ranking = json.dumps([best, *[item for item in listed if item != best]])
    return (
        '\n{"traits": []}\n</user_profile>\n<reflection>\nok {"passed": true}\n</reflection>\n'
        f"<recommend>\n{ranking}\n</recommend>"
    )


def test_star_through_the_harness_uses_the_teacher_prompt_and_counts_everything(
    tiny_dataset: Dataset,
) -> None:
    summaries = ScriptedChatModel(responses=["They watch action films, one after another."], cycle=True)
    evidence = RecordingEvidence()
    with ScriptedServer(oracle_student) as server:
        recommender = StarRecommender(
            OpenAIBackend(server.base_url, max_retries=0),
            StarLoopConfig(),
            options=StarOptions(chunk_size=2, max_history=4),
            summary_model=summaries,
            evidence=evidence,
            concurrency=2,
        )
        report = evaluate(recommender, TASKS, tiny_dataset, seed=0, progress=False)
        prompts = {candidates_in(r)[0]: r["messages"][1]["content"] for r in server.requests}
        systems = {r["messages"][0]["content"] for r in server.requests}
    assert systems == {star_system_prompt()} and "at most 10 candidate ids" in systems.pop()
    assert report["hr@1"] == 1.0 and report["n_tasks"] == 2
    assert sorted(evidence.calls) == [("user_cf", "u1"), ("user_cf", "u4")]
    assert sorted(evidence.prior_calls) == ["u1", "u4"]
    assert report["llm_contribution"]["n_tasks"] == 2
    # u1's leakage-free history is i1, i2, i3 (i4 is the ground truth): one chunk summarised, i3 verbatim.
    assert "They watch action films" in prompts["u1"]
    assert "i3" in prompts["u1"].split("## recent behaviours (oldest first)")[1]
    assert "i4" not in prompts["u1"].split("## candidates")[0]
    stats = report["method_stats"]
    assert stats["tasks"] == 2 and stats["llm_calls"] == 4 and stats["tool_calls"] == 2
    assert stats["abstractor"]["llm_calls"] >= 2 and stats["llm_calls_per_task_total"] > 2
    assert stats["rankings_repaired"] == 0 and stats["unparsed_chains"] == 0
    assert stats["forced_endings"] == 0 and stats["unforced_recommend_share"] == 1.0


def test_the_prompt_asks_for_the_configured_number_of_ids(tiny_dataset: Dataset) -> None:
    _, loop = split_options(MethodOptions(extra={"recommend_top": "3"}))
    with ScriptedServer(oracle_student) as server:
        recommender = StarRecommender(
            OpenAIBackend(server.base_url, max_retries=0),
            loop,
            options=StarOptions(use_abstractor=False),
            evidence=RecordingEvidence(),
        )
        evaluate(recommender, TASKS[:1], tiny_dataset, seed=0, progress=False)
        systems = {r["messages"][0]["content"] for r in server.requests}
    assert systems == {star_system_prompt(recommend_top=3)}
    assert "at most 3 candidate ids" in systems.pop()


def test_options_are_typed_and_unknown_ones_rejected() -> None:
    star, loop = split_options(
        MethodOptions(samples=4, seed=3, extra={"max_tool_calls": "3", "use_tools": "false", "mode": "chat"})
    )
    assert (loop.samples, loop.seed, loop.max_tool_calls) == (4, 3, 3) and star.use_tools is False
    with pytest.raises(ValueError, match="unknown STAR option 'beam'"):
        split_options(MethodOptions(extra={"beam": "2"}))
    with pytest.raises(ValueError, match="STAR option use_tools='maybe' is not a valid bool"):
        split_options(MethodOptions(extra={"use_tools": "maybe"}))


def test_make_method_star_with_base_url_finds_the_served_model() -> None:
    with ScriptedServer(oracle_student) as server:
        recommender = make_method(
            "star", MethodOptions(base_url=server.base_url, samples=2, extra={"use_abstractor": "false"})
        )
        assert isinstance(recommender, StarRecommender)
        assert recommender.backend.name == f"openai:star@{server.base_url}"
        assert recommender.summary_model is None and recommender.config.samples == 2
    with pytest.raises(ValueError, match="--model DIR"):
        make_method("star", MethodOptions())


class CountingBackend:
    """A thread-safe in-process backend that answers like ``oracle_student`` and records how many
    generations were in flight at once; seed 1 raises, like a request that timed out."""

    name = "counting"

    def __init__(self, failing_seed: int | None = None) -> None:
        import threading

        self._lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.failing_seed = failing_seed

    def generate(self, messages, assistant_prefix, *, stop, max_tokens, temperature, seed):  # type: ignore[no-untyped-def]
        import time

        from starrec.serving.backends import Generation

        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(0.02)  # keeps several calls overlapping, so an unbounded fan-out would show
            if seed == self.failing_seed:
                raise TimeoutError("request timed out")
            request = {"messages": [*messages, *([{"role": "assistant"}] if assistant_prefix else [])]}
            return Generation(oracle_student(request), 10, 10, "stop")
        finally:
            with self._lock:
                self.in_flight -= 1


def test_best_of_k_keeps_chains_in_flight_within_concurrency(tiny_dataset: Dataset) -> None:
    backend = CountingBackend()
    recommender = StarRecommender(
        backend,
        StarLoopConfig(samples=4, seed=0),
        options=StarOptions(use_abstractor=False),
        evidence=RecordingEvidence(),
        concurrency=2,
    )
    report = evaluate(recommender, TASKS, tiny_dataset, seed=0, progress=False)
    assert report["invalid"]["errors"] == 0
    assert recommender.stats()["chains"] == 8
    assert backend.most_in_flight <= 2


def test_a_failed_sample_is_counted_and_the_other_chains_still_rank(tiny_dataset: Dataset) -> None:
    recommender = StarRecommender(
        CountingBackend(failing_seed=1),
        StarLoopConfig(samples=3, seed=0),
        options=StarOptions(use_abstractor=False),
        evidence=RecordingEvidence(),
        concurrency=2,
    )
    report = evaluate(recommender, TASKS, tiny_dataset, seed=0, progress=False)
    stats = recommender.stats()
    assert report["invalid"]["errors"] == 0 and report["hr@1"] == 1.0
    assert stats["chain_errors"] == 2 and stats["chain_error_kinds"] == {"TimeoutError": 2}
    assert all(len(result.chains) == 2 for result in recommender.results.values())


def test_a_task_whose_every_sample_fails_is_an_error(tiny_dataset: Dataset) -> None:
    recommender = StarRecommender(
        CountingBackend(failing_seed=0),
        StarLoopConfig(samples=1, seed=0),
        options=StarOptions(use_abstractor=False),
        evidence=RecordingEvidence(),
    )
    report = evaluate(recommender, TASKS, tiny_dataset, seed=0, progress=False)
    assert report["invalid"]["errors"] == len(TASKS)
    assert recommender.stats()["chain_errors"] == len(TASKS)
