"""RL data sampled through a served student: the STAR loop as the RL-data sampler."""

from __future__ import annotations

import json
import random
import threading

import pytest

from starrec.distill.rldata import SAMPLES_PARTIAL, RLDataConfig, SampledInstance, build_rl_data
from starrec.serving.backends import Generation
from starrec.serving.rl_sampling import served_sampler

CANDIDATES = [f"i{index}" for index in range(20)]


class SeededStudent:
    """Writes a whole chain in one segment; its ranking is a shuffle drawn from the request's seed."""

    name = "seeded"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seeds: list[int | None] = []

    def generate(self, messages, assistant_prefix, *, stop, max_tokens, temperature, seed):  # type: ignore[no-untyped-def]
        with self.lock:
            self.seeds.append(seed)
        ranking = random.Random(seed).sample(CANDIDATES, 10)
        text = f"<plan>p</plan><reflection>ok</reflection><recommend>{json.dumps(ranking)}</recommend>"
        return Generation(text, 100, 40, "stop")


def student_dir(tmp_path):  # type: ignore[no-untyped-def]
    """A folder with weights to fingerprint (the served sampler never loads them)."""
    folder = tmp_path / "sft"
    folder.mkdir(exist_ok=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    return folder


def instances() -> list[SampledInstance]:
    prompt = [{"role": "user", "content": "rank"}]
    return [SampledInstance(f"t{index}", prompt, CANDIDATES[index], CANDIDATES) for index in range(6)]


def test_served_samples_are_seeded_per_sample_and_scored(tmp_path) -> None:
    config = RLDataConfig(samples=4, success_at=10, mix="1:1:1", max_completion_length=256)
    student = SeededStudent()
    chains = served_sampler(student, None, config)(instances()[0], 4, 100)
    assert sorted(student.seeds) == [400, 401, 402, 403]  # seed * samples + j
    assert [chain.generated for chain in chains] == [40] * 4
    assert not any(chain.forced for chain in chains)
    expected = [random.Random(seed).sample(CANDIDATES, 10) for seed in range(400, 404)]
    assert [
        json.loads(chain.text.split("<recommend>")[1].split("</recommend>")[0]) for chain in chains
    ] == expected


def test_concurrent_sampling_writes_what_sequential_sampling_writes(tmp_path) -> None:
    from datasets import load_from_disk

    config = RLDataConfig(samples=4, success_at=10, mix="0:0:1", max_completion_length=256)
    runs = {}
    for concurrency in (1, 3):
        out = tmp_path / f"c{concurrency}"
        sampler = served_sampler(SeededStudent(), None, config)
        runs[concurrency] = build_rl_data(
            student_dir(tmp_path), instances(), out, config, None, progress=False,
            sampler=sampler, sampler_name="served:test", concurrency=concurrency,
        )  # fmt: skip
        assert runs[concurrency]["sampler"] == "served:test"
    rows = [[dict(row) for row in load_from_disk(str(tmp_path / f"c{c}" / "all"))] for c in (1, 3)]
    assert rows[0] == rows[1]
    assert runs[1]["buckets"] == runs[3]["buckets"]
    assert runs[1]["samples"] == 6 * 4


def test_samples_of_another_sampler_are_not_mixed_in(tmp_path) -> None:
    config = RLDataConfig(samples=2, success_at=10, mix="1:1:1", max_completion_length=256)
    out = tmp_path / "rl"
    calls = []

    def stopping(instance, samples, seed):  # type: ignore[no-untyped-def]
        calls.append(instance.task_id)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return served_sampler(SeededStudent(), None, config)(instance, samples, seed)

    with pytest.raises(KeyboardInterrupt):
        build_rl_data(student_dir(tmp_path), instances(), out, config, None, progress=False, sampler=stopping,
                      sampler_name="served:vllm")  # fmt: skip
    assert (out / SAMPLES_PARTIAL).is_file()
    with pytest.raises(ValueError, match="holds samples of another model or config"):
        build_rl_data(student_dir(tmp_path), instances(), out, config, None, progress=False, sampler=stopping,
                      sampler_name="transformers")  # fmt: skip


def test_an_instance_with_a_failed_request_is_not_kept_and_is_sampled_again(tmp_path) -> None:
    class FailsOnSeed(SeededStudent):
        def __init__(self, failing: int | None) -> None:
            super().__init__()
            self.failing = failing

        def generate(self, messages, assistant_prefix, **kwargs):  # type: ignore[no-untyped-def]
            if kwargs["seed"] == self.failing:
                raise ValueError("This model's maximum context length is 4096 tokens")
            return super().generate(messages, assistant_prefix, **kwargs)

    config = RLDataConfig(samples=4, success_at=10, mix="0:0:1", max_completion_length=256)
    model, out = student_dir(tmp_path), tmp_path / "rl"
    # Instance 0 samples request seeds 0-3, instance 1 seeds 4-7: only instance 0's seed 1 fails.
    failing = served_sampler(FailsOnSeed(1), None, config)
    with pytest.raises(RuntimeError, match=r"1 of 3 instances had failed requests .*t0: 1/4 chains failed"):
        build_rl_data(model, instances()[:3], out, config, None, progress=False, sampler=failing,
                      sampler_name="served")  # fmt: skip
    kept = [json.loads(line)["task_id"] for line in (out / SAMPLES_PARTIAL).read_text().splitlines()[1:]]
    assert kept == ["t1", "t2"]  # no random guess stands in for the failed chain
    healthy = FailsOnSeed(None)
    summary = build_rl_data(model, instances()[:3], out, config, None, progress=False,
                            sampler=served_sampler(healthy, None, config), sampler_name="served")  # fmt: skip
    assert summary["resumed_instances"] == 2 and sorted(healthy.seeds) == [0, 1, 2, 3]


@pytest.mark.parametrize("concurrency", [1, 4])
def test_many_failed_instances_stop_the_stage_early(tmp_path, concurrency: int) -> None:
    class Down(SeededStudent):
        def generate(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise ConnectionError("Connection refused")

    config = RLDataConfig(samples=2, success_at=10, mix="0:0:1", max_completion_length=256)
    many = [
        SampledInstance(f"t{i}", [{"role": "user", "content": "rank"}], "i0", CANDIDATES) for i in range(50)
    ]
    calls = []

    def counted(instance, samples, seed):  # type: ignore[no-untyped-def]
        calls.append(instance.task_id)
        return served_sampler(Down(), None, config)(instance, samples, seed)

    stopped = (
        r"stopped once 5 instances had failed requests \(max\(3, 10%\) of 50; [5-9] in all, first: t0: 2/2"
    )
    with pytest.raises(RuntimeError, match=stopped):
        build_rl_data(student_dir(tmp_path), many, tmp_path / "rl", config, None, progress=False,
                      sampler=counted, sampler_name="served", concurrency=concurrency)  # fmt: skip
    # max(3, 50 // 10) failures stop it; the queued instances are dropped (a few more may have been
    # picked up by the workers before the failure reached the caller).
    assert len(calls) == 5 if concurrency == 1 else 5 <= len(calls) <= 5 + 2 * concurrency
