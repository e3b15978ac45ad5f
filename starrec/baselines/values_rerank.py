"""``--method values-rerank``: a classical recommender's order re-ranked by user-item value affinity.

The base method (``base``, default itemknn) is fitted on the leakage-free training view and ranks
the candidates; each candidate then scores ``(1 - weight) * base points + weight * (affinity + 1) / 2``
(:func:`starrec.eval.fusion.value_prior`, the same blend as MARS's ``Context.value_weight``), where
the base points are Borda points of its order and the affinity compares the candidate's value
profile with the mean profile of the user's training history (:mod:`starrec.tools.value_profiles`).
``weight`` 0 returns the base order. Options: ``--option weight=0.1``, ``--option base=pop``,
``--option profiles=FILE.npz``; ``--option base.KEY=VALUE`` goes to the base method.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from starrec.data.schema import Dataset, RankRequest
from starrec.eval.fusion import value_prior
from starrec.eval.methods import MethodOptions, config_with_overrides, make_method
from starrec.eval.recommender import Recommender
from starrec.eval.repair import repair_ranking
from starrec.tools.text_embedder import TextEmbedder
from starrec.tools.value_profiles import (
    DEFAULT_TEMPERATURE,
    ItemValueProfiles,
    candidate_affinity,
    item_ids_of,
    item_value_profiles,
)

BASE_PREFIX = "base."


@dataclass
class ValuesRerankConfig:
    base: str = field(default="itemknn", metadata={"help": "The method whose order is re-ranked."})
    weight: float = field(
        default=0.1,
        metadata={
            "help": "Share of the score given to value affinity (0 = the base order). 0.1: the best of "
            "0.1/0.2/0.3 on the 100 ML-100k tasks of benchmarks/values.py, and no better than itemknn there."
        },
    )
    profiles: str | None = field(
        default=None,
        metadata={
            "help": "Item value profiles (.npz of ItemValueProfiles.save); None = built from the training "
            "view's catalogue with the bundled all-MiniLM-L6-v2 and cached."
        },
    )
    temperature: float = field(
        default=DEFAULT_TEMPERATURE, metadata={"help": "Softmax temperature of the item value profiles."}
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"values-rerank option weight must be in [0, 1], got {self.weight}")
        if self.base == "values-rerank":
            raise ValueError("values-rerank option base cannot be values-rerank; use e.g. base=itemknn")


class ValuesRerankRecommender(Recommender):
    name = "values-rerank"

    def __init__(
        self,
        config: ValuesRerankConfig,
        base: Recommender,
        embedder: TextEmbedder | None = None,
        profiles: ItemValueProfiles | None = None,
    ) -> None:
        self.config = config
        self.base = base
        self.embedder = embedder
        self.profiles = profiles
        self._train: Dataset | None = None
        self.changed = 0
        self.requests = 0

    def fit(self, train: Dataset) -> None:
        self.base.fit(train)
        self._train = train
        if self.profiles is None:
            if self.config.profiles:
                self.profiles = ItemValueProfiles.load(Path(self.config.profiles))
            else:
                if self.embedder is None:
                    from starrec.tools.text_embedder import SentenceEmbedder

                    self.embedder = SentenceEmbedder()
                self.profiles = item_value_profiles(train, self.embedder, temperature=self.config.temperature)

    def rank(self, request: RankRequest) -> list[str]:
        if self._train is None or self.profiles is None:
            raise RuntimeError("values-rerank: rank() called before fit(); fit it on the training view first")
        base_order, _ = repair_ranking(self.base.rank(request), request.candidates)
        history = request.history or tuple(self._train.history(request.user_id))
        affinity = candidate_affinity(item_ids_of(history), base_order, self.profiles)
        order, _ = value_prior(base_order, affinity, self.config.weight)
        self.requests += 1
        self.changed += order != base_order
        return order

    def stats(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "embedder": self.profiles.embedder if self.profiles is not None else None,
            "requests": self.requests,
            "reordered_requests": self.changed,
            "base": {"name": self.base.name, **self.base.stats()},
        }


def split_base_options(extra: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(values-rerank's own options, the base method's ``base.KEY`` options without the prefix)."""
    own = {key: value for key, value in extra.items() if not key.startswith(BASE_PREFIX)}
    base = {key[len(BASE_PREFIX) :]: value for key, value in extra.items() if key.startswith(BASE_PREFIX)}
    return own, base


def make_values_rerank(
    options: MethodOptions, embedder: TextEmbedder | None = None, profiles: ItemValueProfiles | None = None
) -> ValuesRerankRecommender:
    """Factory for ``--method values-rerank``; see the module doc for the options."""
    own, base_extra = split_base_options(dict(options.extra))
    config = config_with_overrides(ValuesRerankConfig(), own, "values-rerank")
    base = make_method(config.base, replace(options, extra=base_extra))
    return ValuesRerankRecommender(config, base, embedder, profiles)


def rerank_orders(
    base_orders: Sequence[Sequence[str]],
    histories: Sequence[Sequence[str]],
    profiles: ItemValueProfiles,
    weight: float,
) -> list[list[str]]:
    """Re-rank already computed base orders (a benchmark reuses one base run for several weights)."""
    return [
        value_prior(list(order), candidate_affinity(history, order, profiles), weight)[0]
        for order, history in zip(base_orders, histories, strict=True)
    ]
