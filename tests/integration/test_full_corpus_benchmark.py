"""The full-corpus benchmark runs on MovieLens-100k, resumes, and scores LLM rows against paired baselines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark


def test_benchmark_writes_json_markdown_and_plot_and_resumes(ml100k_dir: Path, tmp_path: Path) -> None:
    benchmark = load_benchmark("full_corpus")
    arguments = ["--n", "8", "--methods", "pop,itemknn", "--rerankers", "", "--work", str(tmp_path / "work"),
                 "--results", str(tmp_path)]  # fmt: skip
    benchmark.main(arguments)
    saved = json.loads((tmp_path / "full_corpus.json").read_text())
    assert set(saved["rows"]) == {"pop", "itemknn"}
    for row in saved["rows"].values():
        assert row["n_tasks"] == 8 and row["catalogue_size"] == 1682
        assert 0.0 <= row["hr@10"] <= row["recall"] <= 1.0  # the truth in the top 10 is in the top 50
        assert row["invalid"]["errors"] == 0 and "ranks" not in row
    markdown = (tmp_path / "full_corpus.md").read_text()
    assert "| itemknn | 8 |" in markdown and "Not measured in this run: bpr, lightgcn, sasrec." in markdown
    assert (tmp_path / "full_corpus.png").read_bytes().startswith(b"\x89PNG")
    stored = json.loads((tmp_path / "work" / "rows.json").read_text())
    stored["rows"]["pop"]["hr@10"] = 0.123  # a resumed run keeps finished rows instead of recomputing them
    (tmp_path / "work" / "rows.json").write_text(json.dumps(stored))
    again = benchmark.main(arguments)
    assert again["rows"]["pop"]["hr@10"] == 0.123


def test_paired_delta_compares_the_same_users() -> None:
    benchmark = load_benchmark("full_corpus")
    llm = {"label": "llm", "ranks": {"a": 1, "b": 20, "c": None}}
    base = {"label": "base", "ranks": {"a": 2, "b": 5, "c": None, "d": 1}}
    delta = benchmark.paired_delta(llm, base)
    assert delta["n_tasks"] == 3 and delta["tasks_changed_rank"] == 2  # d is not paired
    assert delta["hr@10"] == pytest.approx((0 - 1) / 3)
    assert delta["mrr"] == pytest.approx(((1 - 1 / 2) + (1 / 20 - 1 / 5)) / 3)


def test_llm_rows_resume_and_a_stopped_run_is_scored_partially(
    ml100k_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in re-ranker (pop, with a sorted 'prior') replaces MARS: the rows' plumbing, not the LLM."""
    from starrec.eval.methods import MethodOptions, make_method

    benchmark = load_benchmark("full_corpus")
    calls: list[str] = []

    def stand_in(name: str, options: MethodOptions | None = None):
        if name != "mars":
            return make_method(name, options)
        inner = make_method("pop", MethodOptions())
        shown: dict[str, list[str]] = {}
        rank = inner.rank

        def recording(request):
            calls.append(request.task_id)
            shown[request.task_id] = sorted(request.candidates)
            return rank(request)

        inner.rank = recording  # type: ignore[method-assign]
        inner.prior_orders = lambda: dict(shown)  # type: ignore[method-assign]
        return inner

    monkeypatch.setattr(benchmark, "make_method", stand_in)
    work = tmp_path / "work"
    arguments = ["--n", "8", "--llm-users", "3", "--methods", "", "--rerankers", "mars", "--work", str(work),
                 "--results", str(tmp_path)]  # fmt: skip
    full = benchmark.main(arguments)["rows"]["mars"]
    assert full["n_tasks"] == 3 and len(calls) == 3 and full["vs_retriever"]["n_tasks"] == 3
    assert full["vs_prior"]["n_tasks"] == 3 and full["invalid"]["errors"] == 0
    checkpoint = next(work.glob("mars-answers-*.jsonl"))
    lines = checkpoint.read_text().splitlines()
    assert len(lines) == 3
    checkpoint.write_text("\n".join(lines[:2]) + "\n")  # as if stopped after two users
    stored = json.loads((work / "rows.json").read_text())
    del stored["rows"]["mars"], stored["rows"]["mars_prior"]
    (work / "rows.json").write_text(json.dumps(stored))
    partial = benchmark.main([*arguments, "--report-only"])["rows"]["mars"]
    assert partial["n_tasks"] == 2 and "partial: 2 of 3 users" in partial["label"] and len(calls) == 3
    for task_id, rank in partial["ranks"].items():
        assert rank == full["ranks"][task_id]  # scored exactly as the full run scored those users
    assert "partial: 2 of 3 users" in (tmp_path / "full_corpus.md").read_text()
