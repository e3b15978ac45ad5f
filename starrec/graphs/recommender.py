"""MARS behind the common :class:`~starrec.eval.recommender.Recommender` interface.

``starrec eval --method mars`` goes through here and through the same runner as ``starrec
teach``: the harness's shuffled, leakage-free requests, one recorded trajectory per request,
runs concurrent (``--concurrency``), failures isolated and counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel

from starrec.contract.roster import PLANNER
from starrec.contract.trajectory import Trajectory
from starrec.data.schema import Dataset, RankRequest
from starrec.eval.methods import MethodOptions, config_with_overrides
from starrec.eval.recommender import BatchRecommender
from starrec.graphs.context import Context
from starrec.graphs.graph import build_mars_graph
from starrec.graphs.runner import RunJob, run_batch, summarise_runs
from starrec.tools.base import EvidenceSource


def evidence_for_training_view(train: Dataset) -> EvidenceSource:
    """Graph + evidence of the harness's leakage-free training view, cached by its content."""
    from starrec.tools.toolkit import open_dataset_toolkit

    return open_dataset_toolkit(train)


class MarsRecommender(BatchRecommender):
    """Ranks with the MARS graph; keeps every trajectory of the last batch for inspection."""

    name = "mars"

    def __init__(
        self,
        context: Context,
        *,
        chat_model: BaseChatModel | None = None,
        evidence: EvidenceSource | None = None,
        concurrency: int = 1,
        timeout_s: float | None = None,
        chat_models: Mapping[str, BaseChatModel] | None = None,
    ) -> None:
        self.context = context
        self.chat_model = chat_model
        self.chat_models = dict(chat_models or {})
        self.evidence = evidence
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.train: Dataset | None = None
        self.trajectories: list[Trajectory] = []
        self._evidence_from_fit = False

    def fit(self, train: Dataset) -> None:
        """Bind to a training view; evidence built here is rebuilt for each view (a new fit means new
        hidden answers), and the runs of an earlier fit are dropped."""
        self.train = train
        self.trajectories = []
        if self._evidence_from_fit or (self.evidence is None and self.context.use_tools):
            self.evidence = evidence_for_training_view(train) if self.context.use_tools else None
            self._evidence_from_fit = self.evidence is not None

    def rank_batch(self, requests: Sequence[RankRequest]) -> list[Sequence[str] | BaseException]:
        if self.train is None:
            raise RuntimeError("MarsRecommender.fit(train) must run before rank_batch")
        graph = build_mars_graph(
            self.context, chat_model=self.chat_model, evidence=self.evidence, chat_models=self.chat_models
        )
        jobs = [RunJob(request) for request in requests]
        trajectories = asyncio.run(
            run_batch(
                graph,
                jobs,
                self.train,
                self.context,
                concurrency=self.concurrency,
                timeout_s=self.timeout_s,
                model_name=self.context.llm,
            )
        )
        self.trajectories.extend(trajectories)
        return [RuntimeError(t.error) if t.error else t.ranking for t in trajectories]

    def prior_orders(self) -> dict[str, list[str]]:
        """Task id -> the ranker's candidate-CF prior, from the recorded ranker step."""
        priors: dict[str, list[str]] = {}
        for trajectory in self.trajectories:
            for step in trajectory.steps:
                if step.node == "ranker" and step.output.get("cf_ranking"):
                    priors[trajectory.task_id] = list(step.output["cf_ranking"])
        return priors

    def stats(self) -> dict[str, Any]:
        summary = summarise_runs(self.trajectories).as_dict()
        return {
            key: summary[key]
            for key in (
                "runs",
                "errors",
                "repaired_runs",
                "repairs",
                "llm_calls_per_run",
                "tokens_per_run",
                "seconds_per_run",
                "cost_usd",
                "cost_usd_per_run",
                "unpriced_runs",
                "llm_cache_hits",
                "llm_cache_misses",
                "per_model",
            )
        }


def context_from_options(options: MethodOptions) -> Context:
    """A :class:`Context` from method options: ``--llm/--model/--base-url`` + ``--option key=value``."""
    llm = options.llm or "local"
    if options.model and ":" not in llm:
        llm = f"{llm}:{options.model}"
    base = Context(
        llm=llm,
        base_url=options.base_url or None,
        models=dict(options.models),
        seed=options.seed,
        data_dir=str(options.data_dir) if options.data_dir is not None else None,
        llm_cache=options.llm_cache,
    )
    return config_with_overrides(base, options.extra, label="MARS")


def make_mars(options: MethodOptions) -> MarsRecommender:
    """Factory for ``starrec eval --method mars`` (see :data:`starrec.eval.methods.METHOD_FACTORIES`)."""
    return MarsRecommender(context_from_options(options), concurrency=options.concurrency)


class MarsPlannerRecommender(MarsRecommender):
    """The paper's MARS-Planner hybrid: a planner fine-tuned on the teacher's planning steps
    (``starrec distill sft --target planner``) with the teacher's executors, reflector and ranker;
    it isolates what planning alignment alone is worth."""

    name = "mars_planner"


def make_mars_planner(options: MethodOptions) -> MarsPlannerRecommender:
    """Factory for ``starrec eval --method mars_planner``: MARS with ``--llm-for planner=SPEC`` required
    (the fine-tuned planner, e.g. ``local:DIR``); every other node runs the teacher (``--llm``)."""
    context = context_from_options(options)
    if PLANNER not in context.models:
        raise ValueError(
            "method 'mars_planner' needs the fine-tuned planner: --llm-for planner=local:DIR (a checkpoint "
            "of `starrec distill sft --target planner`); the other nodes use --llm"
        )
    if not context.use_planner:
        raise ValueError("method 'mars_planner' runs the fine-tuned planner; drop use_planner=false")
    return MarsPlannerRecommender(context, concurrency=options.concurrency)
