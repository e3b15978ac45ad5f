"""The baselines benchmark runs end to end on MovieLens-100k and writes its three result files."""

from __future__ import annotations

import json
from pathlib import Path

from benchmark_scripts import load_benchmark

from starrec.data.scenarios import SCENARIOS


def test_benchmark_writes_json_markdown_and_plot(ml100k_dir: Path, tmp_path: Path) -> None:
    benchmark = load_benchmark("baselines")
    arguments = ["--n", "5", "--methods", "random,pop,itemknn", "--no-tune", "--out", str(tmp_path),
                 "--work", str(tmp_path / "work")]  # fmt: skip
    payload = benchmark.main(arguments)
    saved = json.loads((tmp_path / "baselines.json").read_text())
    assert saved["command"] == "python benchmarks/baselines.py --n 5 --methods random,pop,itemknn --no-tune"
    assert saved["results"] == json.loads(json.dumps(payload["results"]))
    assert list(saved["results"]) == list(SCENARIOS)
    for rows in saved["results"].values():
        assert list(rows) == ["random", "pop", "itemknn"]
        for row in rows.values():
            assert row["n_tasks"] == 5
            assert 0.0 <= row["hr@1"] <= row["hr@3"] <= row["hr@5"] <= 1.0
            assert row["invalid"]["errors"] == 0
    assert saved["results"]["classic"]["itemknn"]["method_stats"]["fallbacks"]["requests"] == 5
    markdown = (tmp_path / "baselines.md").read_text()
    assert "| itemknn |" in markdown and "Not tuned" in markdown
    assert (tmp_path / "baselines.png").read_bytes().startswith(b"\x89PNG")


def test_a_stopped_run_resumes_from_its_cells(ml100k_dir: Path, tmp_path: Path) -> None:
    benchmark = load_benchmark("baselines")
    arguments = ["--n", "5", "--methods", "random,pop", "--no-tune", "--out", str(tmp_path),
                 "--work", str(tmp_path / "work")]  # fmt: skip
    benchmark.main(arguments)
    cells_file = tmp_path / "work" / "untuned" / "cells.json"
    cells = json.loads(cells_file.read_text())
    assert set(cells) == set(SCENARIOS) and set(cells["classic"]) == {"random", "pop"}
    cells["classic"]["pop"]["hr_avg"] = 0.123  # a marker: a resumed run reads it, not re-measures
    del cells["classic"]["random"]  # as if the run had stopped before this cell
    cells_file.write_text(json.dumps(cells))
    again = benchmark.main(arguments)
    assert again["results"]["classic"]["pop"]["hr_avg"] == 0.123
    assert again["results"]["classic"]["random"]["n_tasks"] == 5  # measured again
    assert "random" in json.loads(cells_file.read_text())["classic"]


def test_tuning_made_by_an_older_rule_is_redone_unless_kept(ml100k_dir: Path, tmp_path: Path) -> None:
    benchmark = load_benchmark("baselines")
    from starrec.baselines.tuning import SELECTION_RULE
    from starrec.data import load_dataset

    dataset = load_dataset(ml100k_dir)
    tasks = benchmark.build_scenario_tasks(ml100k_dir, dataset, 5, 0)
    checkpoint = benchmark.Checkpoint(tmp_path / "tuned")
    old = {
        "method": "itemknn",
        "best_params": {"window": 50, "decay": 0.9, "shrink": 20.0},
        "best_validation": {"hr_avg": 0.5},
        "n_validation_tasks": 1,
        "seconds": 1,
        "trials": [],
    }
    checkpoint.save("tuning", {"itemknn": old})
    kept = benchmark.tune_methods(dataset, tasks, ["itemknn"], 0, checkpoint, keep=["itemknn"])
    assert kept["methods"]["itemknn"]["best_params"] == old["best_params"]
    assert "kept by --keep-tuning" in kept["methods"]["itemknn"]["note"]
    redone = benchmark.tune_methods(dataset, tasks, ["itemknn"], 0, checkpoint)
    assert redone["methods"]["itemknn"]["selection"] == SELECTION_RULE
    assert len(redone["methods"]["itemknn"]["trials"]) > 1
    saved = json.loads((tmp_path / "tuned" / "tuning.json").read_text())
    assert saved["itemknn"]["selection"] == SELECTION_RULE


def test_keep_tuning_names_a_tuned_method(capsys) -> None:
    import pytest

    benchmark = load_benchmark("baselines")
    assert benchmark.parse_args(["--keep-tuning", "sasrec"]).keep_tuning == ["sasrec"]
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--keep-tuning", "sasrek"])
    assert "--keep-tuning: sasrek is not tuned" in capsys.readouterr().err


def test_carry_over_keeps_the_rows_of_methods_not_rerun_on_the_same_tasks(
    ml100k_dir: Path, tmp_path: Path
) -> None:
    import pytest

    benchmark = load_benchmark("baselines")
    common = ["--n", "5", "--no-tune", "--out", str(tmp_path), "--work", str(tmp_path / "work")]
    first = benchmark.main(["--methods", "random,pop", *common])
    again = benchmark.main(["--methods", "random", "--carry-over", *common])
    assert again["methods"] == ["random", "pop"]
    assert again["carried_over"] == {"pop": first["command"]}
    assert again["results"]["classic"]["pop"] == json.loads(json.dumps(first["results"]["classic"]["pop"]))
    assert again["carried_matched_on"] == "the test-task fingerprint"
    assert "Rows carried over from an earlier run" in (tmp_path / "baselines.md").read_text()
    with pytest.raises(SystemExit, match="other test tasks; re-run those methods"):
        benchmark.main(["--methods", "random", "--carry-over", *common[:1], "6", *common[2:]])
    tuned = [part for part in common if part != "--no-tune"]
    with pytest.raises(SystemExit, match=r"holds untuned \(--no-tune\) rows, this run is not"):
        benchmark.main(["--methods", "random", "--carry-over", *tuned])


def test_a_tuning_over_another_search_space_is_stale() -> None:
    benchmark = load_benchmark("baselines")
    from starrec.baselines.tuning import SELECTION_RULE

    space = {"window": [5, 10], "decay": [0.7]}
    trials = [{"params": {"window": 5, "decay": 0.7}}, {"params": {"window": 10, "decay": 0.7}}]
    saved = {"selection": SELECTION_RULE, "trials": trials}
    assert benchmark.stale_tuning(saved, space) is None  # inferred from the values its trials tried
    assert (
        benchmark.stale_tuning(saved, {**space, "shrink": [0.0, 20.0]}) == "tuned over another search space"
    )
    assert benchmark.stale_tuning({**saved, "search_space": {"window": [5]}}, space) is not None
    assert "earlier 'best-mean' rule" in benchmark.stale_tuning({"trials": trials}, space)
