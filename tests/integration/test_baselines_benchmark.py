"""The baselines benchmark runs end to end on MovieLens-100k and writes its three result files."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

from starrec.data.scenarios import SCENARIOS

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "baselines.py"


def load_benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("baselines_benchmark", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_writes_json_markdown_and_plot(ml100k_dir: Path, tmp_path: Path) -> None:
    benchmark = load_benchmark()
    arguments = ["--n", "5", "--methods", "random,pop,itemknn", "--no-tune", "--out", str(tmp_path)]
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
