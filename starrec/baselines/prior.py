"""The collaborative prior on its own: ``starrec eval --method cf_prior``.

The order MARS's ranker and the STAR completion start from (:mod:`starrec.tools.candidate_cf`),
computed from the harness's leakage-free training view with no LLM and no graph database, so the
prior's own HR is one command away and every LLM row can be read against it.
"""

from __future__ import annotations

from starrec.data.schema import Dataset, RankRequest
from starrec.eval.methods import MethodOptions, config_with_overrides
from starrec.eval.recommender import Recommender
from starrec.tools.candidate_cf import CandidateCF, CandidateCFConfig


class CandidatePriorRecommender(Recommender):
    """Ranks by Item-CF (cosine, recency-weighted), then User-CF, then popularity."""

    name = "cf_prior"

    def __init__(self, config: CandidateCFConfig | None = None) -> None:
        self.config = config or CandidateCFConfig()
        self.scorer: CandidateCF | None = None

    def fit(self, train: Dataset) -> None:
        self.scorer = CandidateCF.from_dataset(train, self.config)

    def rank(self, request: RankRequest) -> list[str]:
        if self.scorer is None:
            raise RuntimeError("cf_prior: rank() called before fit(); fit it on the training view first")
        history = [event.item_id for event in request.history]
        return list(self.scorer.score(request.user_id, request.candidates, history).order)

    def stats(self) -> dict[str, object]:
        return {"config": {"window": self.config.window, "decay": self.config.decay,
                           "similar_users": self.config.similar_users}}  # fmt: skip


def make_cf_prior(options: MethodOptions) -> CandidatePriorRecommender:
    """Factory for ``--method cf_prior``; ``--option window=|decay=|similar_users=`` override the config."""
    return CandidatePriorRecommender(config_with_overrides(CandidateCFConfig(), options.extra))
