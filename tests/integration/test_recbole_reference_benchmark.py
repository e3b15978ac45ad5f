"""The RecBole reference benchmark runs both BPRs on the same tasks and writes JSON and Markdown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark

pytest.importorskip("recbole", reason="the optional recbole extra is not installed")


@pytest.mark.slow  # two BPR fits on the whole of MovieLens-100k: about a minute
def test_both_bprs_are_scored_on_the_same_tasks(ml100k_dir: Path, tmp_path: Path) -> None:
    benchmark = load_benchmark("recbole_reference")
    payload = benchmark.main(["--n", "5", "--recbole-option", "epochs=1", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "recbole_reference.json").read_text())
    assert saved["command"] == "python benchmarks/recbole_reference.py --n 5 --recbole-option epochs=1"
    assert set(saved["reports"]) == {"recbole", "bpr"}
    for report in saved["reports"].values():
        assert report["n_tasks"] == 5 and report["invalid"]["errors"] == 0
        assert 0.0 <= report["hr@1"] <= report["hr@3"] <= report["hr@5"] <= 1.0
    assert saved["reports"]["recbole"]["config"]["epochs"] == 1
    assert saved["reports"]["bpr"]["config"]["embedding_dim"] == 64
    assert payload["reports"]["recbole"]["hr_avg"] == saved["reports"]["recbole"]["hr_avg"]
    markdown = (tmp_path / "recbole_reference.md").read_text()
    assert "| RecBole BPR (--method recbole) | 5 |" in markdown and "minus RecBole BPR" in markdown
