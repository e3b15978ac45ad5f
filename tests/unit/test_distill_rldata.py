"""Difficulty buckets and the 3:4:3 mix of the RL data."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from starrec.distill.rldata import (
    SampledInstance,
    bucket_of,
    mix_buckets,
    mix_counts,
    parse_mix,
    score_samples,
)


@pytest.mark.parametrize(
    ("hits", "bucket"),
    [
        (0, None),
        (1, "hard"),
        (2, "hard"),
        (3, "medium"),
        (4, "medium"),
        (5, "medium"),
        (6, "easy"),
        (7, "easy"),
        (8, None),
    ],
)
def test_buckets_for_eight_samples(hits: int, bucket: str | None) -> None:
    assert bucket_of(hits, 8) == bucket


def test_bucket_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError, match="between 0 and 8"):
        bucket_of(9, 8)
    with pytest.raises(ValueError, match="no bucket"):
        bucket_of(10, 12)


def test_mix_counts_keep_the_exact_ratio() -> None:
    assert mix_counts({"easy": 30, "medium": 10, "hard": 30}) == {"easy": 6, "medium": 8, "hard": 6}
    assert mix_counts({"easy": 300, "medium": 400, "hard": 300}, total=500) == {
        "easy": 150,
        "medium": 200,
        "hard": 150,
    }
    assert mix_counts({"easy": 3, "medium": 4, "hard": 2}) == {"easy": 0, "medium": 0, "hard": 0}
    assert mix_counts({"easy": 7, "medium": 9, "hard": 100}) == {"easy": 6, "medium": 8, "hard": 6}
    assert mix_counts({"easy": 0, "medium": 5, "hard": 0}, {"easy": 0, "medium": 1, "hard": 0})["medium"] == 5
    with pytest.raises(ValueError, match="not all 0"):
        mix_counts({"easy": 1}, {"easy": 0})
    assert parse_mix("3:4:3") == {"easy": 3, "medium": 4, "hard": 3}
    with pytest.raises(ValueError, match="E:M:H"):
        parse_mix("3:4")


def test_mix_buckets_samples_each_bucket_and_is_seeded() -> None:
    buckets = {name: [f"{name}{index}" for index in range(20)] for name in ("easy", "medium", "hard")}
    mixed = mix_buckets(buckets, seed=3)
    counts = Counter(item.rstrip("0123456789") for item in mixed)
    assert counts == {"easy": 15, "medium": 20, "hard": 15}
    assert len(set(mixed)) == len(mixed)
    assert mix_buckets(buckets, seed=3) == mixed
    assert mix_buckets(buckets, seed=4) != mixed


def test_score_samples_counts_hits_with_repair() -> None:
    candidates = [f"i{index}" for index in range(20)]
    good = "<plan>p</plan><reflection>ok</reflection><recommend>" + json.dumps(candidates) + "</recommend>"
    second = (
        "<plan>p</plan><reflection>ok</reflection><recommend>" + json.dumps(candidates[1:]) + "</recommend>"
    )
    garbage = "no chain at all"
    instance = SampledInstance("t", [], "i0", candidates)
    score_samples(instance, [good, second, garbage], success_at=1)
    # `second` omits i0: repaired by appending it last (a miss); `garbage` gets a seeded random order.
    assert instance.samples == 3
    assert (instance.unparsed, instance.repaired, instance.format_ok) == (1, 2, 2)
    assert instance.outcome_rewards == [1.0, 0.0, 0.0]
    # Unparseable answers are random guesses, not one presented order repeated across samples.
    guesses = score_samples(SampledInstance("t", [], "i0", candidates), [garbage] * 200, success_at=10)
    assert 60 < guesses.hits < 140
    again = score_samples(SampledInstance("t", [], "i0", candidates), [garbage] * 200, success_at=10)
    assert again.hits == guesses.hits


def test_a_line_cut_by_a_stop_is_dropped_so_later_samples_are_kept(tmp_path) -> None:
    from starrec.distill.rldata import SamplesCheckpoint

    path = tmp_path / "samples.partial.jsonl"
    checkpoint = SamplesCheckpoint(path, {"model": "m", "config": {"samples": 2}})
    checkpoint.append({"task_id": "a"})
    path.write_text(path.read_text() + '{"task_id": "b", "hi')  # the stop cut this line
    assert list(checkpoint.load()) == ["a"]
    checkpoint.append({"task_id": "c"})
    assert list(checkpoint.load()) == ["a", "c"]


def test_resume_skips_a_checkpoint_cut_while_saving(tmp_path) -> None:
    from starrec.distill.training import mark_resumable, resume_point

    identity = {"config": {"a": 1}, "data_sha256": "x"}
    mark_resumable(tmp_path, identity)
    for step, complete in ((10, True), (20, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    assert resume_point(tmp_path, identity) == str(tmp_path / "checkpoint-10")


def test_a_retrained_student_in_the_same_folder_has_another_fingerprint(tmp_path) -> None:
    from starrec.distill.training import model_fingerprint

    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "model.safetensors").write_bytes(b"weights of the first SFT")
    first = model_fingerprint(tmp_path)
    assert model_fingerprint(tmp_path) == first
    # Same path, same config.json: only the weights tell the second training apart.
    (tmp_path / "model.safetensors").write_bytes(b"weights of the second SFT")
    assert model_fingerprint(tmp_path) != first
    # A copy of the folder elsewhere is the same student.
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("config.json", "model.safetensors"):
        (copy / name).write_bytes((tmp_path / name).read_bytes())
    assert model_fingerprint(copy) == model_fingerprint(tmp_path)
    # Metrics (timings) are not part of it; a missing student is an error, not the hash of nothing.
    (tmp_path / "sft_metrics.json").write_text('{"seconds": 12.5}')
    assert model_fingerprint(tmp_path) == model_fingerprint(copy)
    with pytest.raises(FileNotFoundError, match="holds no model weights"):
        model_fingerprint(tmp_path / "missing")


def test_the_resume_record_is_replaced_whole(tmp_path) -> None:
    from starrec.distill.training import RESUME_FILE, mark_resumable

    mark_resumable(tmp_path, {"config": {"a": 1}, "data_sha256": "x"})
    mark_resumable(tmp_path, {"config": {"a": 2}, "data_sha256": "y"})
    assert json.loads((tmp_path / RESUME_FILE).read_text()) == {"config": {"a": 2}, "data_sha256": "y"}
    assert [path.name for path in tmp_path.iterdir()] == [RESUME_FILE]  # no temporary file left


def test_a_restored_row_must_come_from_the_same_question() -> None:
    from starrec.distill.rldata import restore_instance

    candidates = [f"i{index}" for index in range(20)]
    prompt = [{"role": "user", "content": "rank these"}]
    row = {
        **SampledInstance("t", prompt, "i0", candidates).row(),
        "hits": 3,
        "samples": 8,
        "bucket": "medium",
        "outcome_rewards": [1.0] * 3 + [0.0] * 5,
    }
    instance = SampledInstance("t", prompt, "i0", candidates)
    restore_instance(instance, row)
    assert (instance.hits, instance.samples, instance.bucket) == (3, 8, "medium")
    retaught = SampledInstance("t", [{"role": "user", "content": "another history"}], "i0", candidates)
    with pytest.raises(ValueError, match="task t was sampled with a different prompt"):
        restore_instance(retaught, row, "samples.partial.jsonl")
    reshuffled = SampledInstance("t", prompt, "i0", candidates[::-1])
    with pytest.raises(ValueError, match="a different candidates"):
        restore_instance(reshuffled, row)
