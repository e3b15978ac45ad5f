"""Graph state: the small input surface callers fill, and the full state the nodes share.

Everything is plain JSON (lists, dicts, strings) so runs can be streamed to LangGraph
Studio, checkpointed by an embedding app and written to ``runs.jsonl`` unchanged.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import ConfigDict

from starrec.data.schema import Dataset, RankRequest
from starrec.data.user_view import Candidate, HistoryEntry, candidate_entries, history_entries


def merge_dicts(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    """Reducer: later keys win (agent outputs re-run in a correction round replace the first pass)."""
    return {**left, **right}


def add_counts(left: dict[str, int], right: dict[str, int]) -> dict[str, int]:
    """Reducer: repair counters add up across nodes."""
    merged = dict(left)
    for key, value in right.items():
        merged[key] = merged.get(key, 0) + int(value)
    return merged


@dataclass(kw_only=True)
class InputState:
    """What a caller provides: one ranking request (a :class:`RankRequest` plus titles)."""

    # LangGraph Studio draws its forms from these schemas; the attribute docstrings become descriptions.
    __pydantic_config__ = ConfigDict(use_attribute_docstrings=True)

    task_id: str = ""
    """Task id (recorded in the trajectory)."""
    user_id: str = ""
    """The user to rank for (candidate_cf reads their graph neighbourhood)."""
    domain: str = "item"
    """What items are: movie, book, product, business."""
    scenario: str = ""
    """AgentRecBench scenario label (classic, cold_user, ...), informational."""
    candidates: list[Candidate] = field(default_factory=list)
    """The 20 candidates in the (already shuffled) order shown to the model."""
    history: list[HistoryEntry] = field(default_factory=list)
    """The user's leakage-free history, oldest first."""


@dataclass(kw_only=True)
class State(InputState):
    """Full internal state shared by the nodes."""

    summary: str = ""
    """Long-term summary fused by the abstractor over all chunks but the last."""
    recent: list[HistoryEntry] = field(default_factory=list)
    """The last chunk of behaviours, verbatim (the 'hybrid' input's short-term part)."""
    agents: list[str] = field(default_factory=list)
    """The execution agents this run may use, in roster order (set by the abstractor: the roster less
    agents switched off or without data, e.g. user_values where no value profile is stored)."""
    plan: list[str] = field(default_factory=list)
    """Agents to run, in order (planner output, or the fixed order when the planner is off)."""
    analyses: Annotated[dict[str, Any], merge_dicts] = field(default_factory=dict)
    """Agent name -> its latest structured output ({thinking, conclusions, evidence_ids})."""
    done: list[str] = field(default_factory=list)
    """Agents finished in the current round (routing reads it)."""
    round: int = 0
    """0 on the first pass, n in correction round n."""
    reflection: dict[str, Any] = field(default_factory=dict)
    """Latest reflector output ({verdict, issues: [{agent, suggestion}], thinking})."""
    corrections: dict[str, str] = field(default_factory=dict)
    """Agent -> suggestion it must address in the current correction round."""
    correction_bound_reached: bool = False
    llm_ranking: list[str] = field(default_factory=list)
    """The ranker LLM's order after repair."""
    cf_ranking: list[str] = field(default_factory=list)
    """Candidates ordered by CF evidence (co-occurrence with recent items)."""
    ranking: list[str] = field(default_factory=list)
    """Final ranking: a permutation of the candidates."""
    repairs: Annotated[dict[str, int], add_counts] = field(default_factory=dict)
    """Counted repairs and retries over the whole run (json_retry, fallback, hallucinated, ...)."""
    warnings: Annotated[list[str], operator.add] = field(default_factory=list)


def input_from_request(request: RankRequest, dataset: Dataset) -> dict[str, Any]:
    """The graph input for one request (what ``graph.invoke`` takes)."""
    return {
        "task_id": request.task_id,
        "user_id": request.user_id,
        "domain": dataset.domain,
        "scenario": request.scenario,
        "candidates": candidate_entries(request.candidates, dataset),
        "history": history_entries(request, dataset),
    }
