"""RecBole's BPR through starrec's harness (skipped where RecBole is not installed)."""

from __future__ import annotations

import pytest
from baselines_fixtures import planted_clusters

from starrec.eval.harness import evaluate
from starrec.eval.methods import MethodOptions, make_method

pytest.importorskip("recbole", reason="the optional recbole extra is not installed")


def test_recbole_bpr_learns_planted_clusters_through_the_harness() -> None:
    dataset, tasks = planted_clusters()
    options = MethodOptions(seed=0, extra={"epochs": "30", "embedding_size": "16", "learning_rate": "0.01"})
    report = evaluate(make_method("recbole", options), tasks, dataset, progress=False, include_per_task=False)
    # The 19 negatives come from other clusters; random order scores HR_avg 0.15.
    assert report["hr_avg"] > 0.6 and report["invalid"]["errors"] == 0
    stats = report["method_stats"]
    assert stats["recbole_version"] == "1.2.1" and stats["config"]["model"] == "BPR"
    assert stats["fallbacks"]["requests"] == len(tasks) and stats["fallbacks"]["unknown_user"] == 0


def test_recbole_options_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown recbole option 'dim'"):
        make_method("recbole", MethodOptions(extra={"dim": "8"}))
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        make_method("recbole", MethodOptions(extra={"epochs": "0"}))
