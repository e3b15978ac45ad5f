"""The core install is torch-free: an app that only calls an endpoint gets the graph, tools and client."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "trl", "datasets", "accelerate", "gguf")

BLOCKER = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in {HEAVY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Block())
"""


def run_without_heavy_packages(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCKER + code], capture_output=True, text=True, timeout=120)


def test_core_dependencies_leave_torch_and_transformers_to_extras() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    assert not any(name in core for name in HEAVY)
    extras = project["optional-dependencies"]
    assert any(dep.startswith("torch") for dep in extras["local"])
    assert any(dep.startswith("torch") for dep in extras["baselines"])


def test_the_mars_graph_and_the_cf_prior_work_without_torch() -> None:
    result = run_without_heavy_packages(
        "from starrec import build_mars_graph\n"
        "graph = build_mars_graph()\n"
        "from starrec.eval.methods import make_method\n"
        "print(graph.name, make_method('cf_prior').name, make_method('itemknn').name)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["mars", "cf_prior", "itemknn"]


def test_a_method_that_needs_torch_names_the_extra() -> None:
    result = run_without_heavy_packages(
        "from starrec.eval.methods import make_method\n"
        "try:\n    make_method('bpr')\nexcept ValueError as error:\n    print(error)\n"
    )
    assert result.returncode == 0, result.stderr
    assert "needs torch" in result.stdout and "starrec[baselines]" in result.stdout
