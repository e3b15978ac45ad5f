"""Method names the CLI and benchmarks accept, mapped to their factories.

Factories are named by import path and imported only when chosen, so ``starrec eval
--method pop`` never imports torch or transformers. Every factory has the signature
``(options: MethodOptions) -> Recommender``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starrec.eval.recommender import Recommender

METHOD_FACTORIES: dict[str, str] = {
    "random": "starrec.baselines.simple:make_random",
    "identity": "starrec.baselines.simple:make_identity",
    "pop": "starrec.baselines.simple:make_pop",
    "itemknn": "starrec.baselines.itemknn:make_itemknn",
    "cf_prior": "starrec.baselines.prior:make_cf_prior",
    "bpr": "starrec.baselines.bpr:make_bpr",
    "lightgcn": "starrec.baselines.lightgcn:make_lightgcn",
    "mars": "starrec.graphs.recommender:make_mars",
    "star": "starrec.serving.recommender:make_star",
}


@dataclass(slots=True)
class MethodOptions:
    """Everything a factory may need; each method reads only its own fields."""

    seed: int = 0
    data_dir: Path | None = None
    """The dataset directory (lets LLM methods find/cache the graph and evidence built from it)."""
    llm: str | None = None
    """LLM backend spec for LLM methods (openai | local | scripted); None = settings default."""
    model: str | None = None
    """Model name or directory (LLM methods, STAR student)."""
    base_url: str | None = None
    concurrency: int = 4
    samples: int = 1
    """Best-of-k samples (STAR)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Method-specific knobs from ``--option key=value`` (e.g. ranker_fusion=rrf, epochs=30)."""


def make_method(name: str, options: MethodOptions | None = None) -> Recommender:
    """Instantiate a method by name, with a clear error listing the valid names."""
    if name not in METHOD_FACTORIES:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(METHOD_FACTORIES)}")
    module_name, _, factory_name = METHOD_FACTORIES[name].partition(":")
    factory = getattr(importlib.import_module(module_name), factory_name)
    return factory(options or MethodOptions())
