"""BPR matrix factorisation (Rendle et al., 2009): dot-product user/item embeddings trained
with the pairwise BPR loss against uniformly sampled negatives.

Optional contrastive value term (ZOOM, arXiv 2505.00981): with ``value_weight`` λ > 0 the loss
gains λ x InfoNCE between each batch user's embedding and a learned projection of that user's
Schwartz value vector, the other users of the batch being the negatives. It pulls users with
similar values together in preference space; λ = 0 is plain BPR-MF.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from starrec.baselines.interactions import InteractionIndex
from starrec.baselines.training import EmbeddingConfig, EmbeddingModel, EmbeddingRecommender
from starrec.data.schema import Dataset
from starrec.eval.methods import MethodOptions, config_with_overrides

UserValues = Callable[[Dataset, Sequence[str]], np.ndarray]
"""``(view, user_ids) -> users x values`` matrix, read from the view only (leakage-free)."""


@dataclass
class BPRConfig(EmbeddingConfig):
    value_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight λ of the InfoNCE term between user embeddings and value vectors (0 = off)."
        },
    )
    value_temperature: float = field(default=0.2, metadata={"help": "Temperature of the InfoNCE value term."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.value_weight < 0 or self.value_temperature <= 0:
            raise ValueError(
                f"value_weight must be >= 0 and value_temperature > 0, got {self.value_weight}, "
                f"{self.value_temperature}"
            )


def info_nce(anchors: torch.Tensor, positives: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean InfoNCE loss of row i of ``anchors`` against row i of ``positives`` (in-batch negatives)."""
    logits = F.normalize(anchors, dim=-1) @ F.normalize(positives, dim=-1).T / temperature
    return F.cross_entropy(logits, torch.arange(len(anchors)))


class MatrixFactorization(EmbeddingModel):
    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int,
        user_values: np.ndarray | None = None,
        value_weight: float = 0.0,
        value_temperature: float = 0.2,
    ) -> None:
        super().__init__()
        self.users = nn.Embedding(n_users, dim)
        self.items = nn.Embedding(n_items, dim)
        nn.init.normal_(self.users.weight, std=0.1)
        nn.init.normal_(self.items.weight, std=0.1)
        self.value_weight, self.value_temperature = value_weight, value_temperature
        self.value_projection: nn.Linear | None = None
        if user_values is not None and value_weight > 0:
            self.register_buffer("user_values", torch.as_tensor(user_values, dtype=torch.float32))
            self.value_projection = nn.Linear(user_values.shape[1], dim)

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.users.weight, self.items.weight

    def ego_norm(self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        return (
            self.users(users).pow(2).sum()
            + self.items(positives).pow(2).sum()
            + self.items(negatives).pow(2).sum()
        )

    def auxiliary_loss(self, users: torch.Tensor, user_vectors: torch.Tensor) -> torch.Tensor | None:
        if self.value_projection is None:
            return None
        unique = torch.unique(users)
        if len(unique) < 2:
            return None
        values = self.value_projection(self.user_values[unique])
        return self.value_weight * info_nce(self.users(unique), values, self.value_temperature)


class BPRRecommender(EmbeddingRecommender):
    name = "bpr"
    config: BPRConfig

    def __init__(self, config: BPRConfig, user_values: UserValues | None = None) -> None:
        super().__init__(config)
        if config.value_weight > 0 and user_values is None:
            raise ValueError("bpr: value_weight > 0 needs a source of user value vectors (user_values=...)")
        self.user_values = user_values

    def build_model(self, index: InteractionIndex, view: Dataset) -> EmbeddingModel:
        values = None
        if self.user_values is not None and self.config.value_weight > 0:
            values = np.asarray(self.user_values(view, index.user_ids), dtype=np.float32)
            if values.shape[0] != index.n_users:
                raise ValueError(f"bpr: user_values gave {values.shape[0]} rows for {index.n_users} users")
        return MatrixFactorization(
            index.n_users,
            index.n_items,
            self.config.embedding_dim,
            values,
            self.config.value_weight,
            self.config.value_temperature,
        )


def make_bpr(options: MethodOptions) -> BPRRecommender:
    """Factory for ``--method bpr``; ``--option key=value`` overrides :class:`BPRConfig` fields.

    With ``value_weight`` > 0 the user value vectors come from the item value profiles of
    :mod:`starrec.tools.value_profiles` (the ``values`` extra's embedder).
    """
    config = config_with_overrides(BPRConfig(seed=options.seed), options.extra)
    if config.value_weight <= 0:
        return BPRRecommender(config)
    from starrec.tools.value_profiles import user_values_from_profiles

    return BPRRecommender(config, user_values_from_profiles(options.data_dir))
