"""BPR matrix factorisation (Rendle et al., 2009): dot-product user/item embeddings trained
with the pairwise BPR loss against uniformly sampled negatives."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from starrec.baselines.interactions import InteractionIndex
from starrec.baselines.training import EmbeddingConfig, EmbeddingModel, EmbeddingRecommender
from starrec.data.schema import Dataset
from starrec.eval.methods import MethodOptions, config_with_overrides


@dataclass
class BPRConfig(EmbeddingConfig):
    """BPR-MF needs nothing beyond the shared embedding knobs."""


class MatrixFactorization(EmbeddingModel):
    def __init__(self, n_users: int, n_items: int, dim: int) -> None:
        super().__init__()
        self.users = nn.Embedding(n_users, dim)
        self.items = nn.Embedding(n_items, dim)
        nn.init.normal_(self.users.weight, std=0.1)
        nn.init.normal_(self.items.weight, std=0.1)

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.users.weight, self.items.weight

    def ego_norm(self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        return (
            self.users(users).pow(2).sum()
            + self.items(positives).pow(2).sum()
            + self.items(negatives).pow(2).sum()
        )


class BPRRecommender(EmbeddingRecommender):
    name = "bpr"

    def build_model(self, index: InteractionIndex, view: Dataset) -> EmbeddingModel:
        return MatrixFactorization(index.n_users, index.n_items, self.config.embedding_dim)


def make_bpr(options: MethodOptions) -> BPRRecommender:
    """Factory for ``--method bpr``; ``--option key=value`` overrides :class:`BPRConfig` fields."""
    return BPRRecommender(config_with_overrides(BPRConfig(seed=options.seed), options.extra))
