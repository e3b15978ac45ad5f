"""Item-based k-NN: score each candidate by its similarity to the user's recent history.

Similarity is computed on demand from the binary user x item matrix of the training view,
``sim(i, j) = |U_i ∩ U_j| / (|U_i|^a |U_j|^(1-a) + shrink)`` (``a = 0.5`` is cosine), only for
the (history x candidates) block a request needs, so it scales to large catalogues without a
dense item x item matrix. Recent history items weigh more: the k-th most recent one counts
``decay ** k``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from starrec.baselines.interactions import (
    IndexedRecommender,
    InteractionIndex,
    rank_candidates,
)
from starrec.data.schema import Dataset, Interaction, RankRequest
from starrec.eval.methods import MethodOptions, config_with_overrides


@dataclass
class ItemKNNConfig:
    window: int = field(
        default=10, metadata={"help": "Most recent distinct history items used as anchors (0 = all)."}
    )
    decay: float = field(
        default=0.8,
        metadata={"help": "Recency weight: the k-th most recent anchor counts decay**k (1 = flat)."},
    )
    shrink: float = field(
        default=0.0, metadata={"help": "Added to the similarity denominator; damps pairs of rare items."}
    )
    alpha: float = field(
        default=0.5,
        metadata={"help": "Asymmetric cosine exponent on the anchor's popularity (0.5 = cosine)."},
    )


class ItemKNNRecommender(IndexedRecommender):
    name = "itemknn"
    config: ItemKNNConfig

    def __init__(self, config: ItemKNNConfig) -> None:
        super().__init__(config)
        self._train: Dataset | None = None
        self._item_users = sp.csr_matrix((0, 0))

    def learn(self, train: Dataset, index: InteractionIndex) -> None:
        self._train = train
        self._item_users = index.matrix.T.tocsr()

    def rank(self, request: RankRequest) -> list[str]:
        index = self.require_index()
        history = request.history or tuple(self._require_train().history(request.user_id))
        anchors, weights = self.anchors(history, index)
        if not anchors:
            return self.counts.record(rank_candidates(request.candidates, {}, index), unknown_user=True)
        known = [item for item in request.candidates if item in index.item_index]
        scores = self._scores(anchors, weights, [index.item_index[item] for item in known])
        scored = {item: value for item, value in zip(known, scores.tolist(), strict=True) if value > 0}
        return self.counts.record(rank_candidates(request.candidates, scored, index))

    def anchors(
        self, history: tuple[Interaction, ...], index: InteractionIndex
    ) -> tuple[list[int], np.ndarray]:
        """Indices of the most recent distinct known history items and their recency weights."""
        anchors: list[int] = []
        seen: set[int] = set()
        for event in sorted(history, key=lambda e: e.timestamp, reverse=True):
            column = index.item_index.get(event.item_id)
            if column is None or column in seen:
                continue
            seen.add(column)
            anchors.append(column)
            if self.config.window and len(anchors) >= self.config.window:
                break
        return anchors, self.config.decay ** np.arange(len(anchors), dtype=np.float64)

    def _scores(self, anchors: list[int], weights: np.ndarray, columns: list[int]) -> np.ndarray:
        if not columns:
            return np.zeros(0)
        index = self.require_index()
        co_occurrence = (self._item_users[anchors] @ self._item_users[columns].T).toarray()
        anchor_pop = index.popularity[anchors] ** self.config.alpha
        candidate_pop = index.popularity[columns] ** (1.0 - self.config.alpha)
        similarity = co_occurrence / (np.outer(anchor_pop, candidate_pop) + self.config.shrink)
        return weights @ similarity

    def _require_train(self) -> Dataset:
        if self._train is None:
            raise RuntimeError("itemknn: rank() called before fit(); fit it on the training view first")
        return self._train


def make_itemknn(options: MethodOptions) -> ItemKNNRecommender:
    """Factory for ``--method itemknn``; ``--option key=value`` overrides :class:`ItemKNNConfig` fields."""
    return ItemKNNRecommender(config_with_overrides(ItemKNNConfig(), options.extra))
