"""LightGCN (He et al., 2020): embeddings smoothed over the user-item graph by parameter-free
propagation, ``E_{k+1} = D^-1/2 A D^-1/2 E_k``, final vector = mean of layers 0..K, trained
with the BPR loss. Propagation is one full-graph sparse CSR product per layer and step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from starrec.baselines.interactions import InteractionIndex
from starrec.baselines.training import EmbeddingConfig, EmbeddingModel, EmbeddingRecommender
from starrec.data.schema import Dataset
from starrec.eval.methods import MethodOptions, config_with_overrides


@dataclass
class LightGCNConfig(EmbeddingConfig):
    layers: int = field(
        default=3, metadata={"help": "Propagation layers K (0 = plain matrix factorisation)."}
    )
    learning_rate: float = field(
        default=5e-2, metadata={"help": "Adam learning rate (large batches, so high)."}
    )
    batch_size: int = field(
        default=16384,
        metadata={"help": "Triples per step; large because every step propagates the whole graph."},
    )


def normalized_adjacency(index: InteractionIndex) -> torch.Tensor:
    """Symmetrically normalised (users + items) square adjacency as a torch sparse CSR tensor."""
    n_users, n_items = index.n_users, index.n_items
    interactions = index.matrix.astype(np.float32)
    adjacency = sp.bmat([[None, interactions], [interactions.T, None]], format="coo")
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    inverse_sqrt = np.zeros_like(degree)
    inverse_sqrt[degree > 0] = degree[degree > 0] ** -0.5
    values = inverse_sqrt[adjacency.row] * adjacency.data * inverse_sqrt[adjacency.col]
    indices = torch.from_numpy(np.vstack([adjacency.row, adjacency.col]).astype(np.int64))
    size = (n_users + n_items, n_users + n_items)
    with torch.sparse.check_sparse_tensor_invariants(enable=True):
        coo = torch.sparse_coo_tensor(indices, torch.from_numpy(values.astype(np.float32)), size)
    return coo.coalesce().to_sparse_csr()


class SymmetricPropagation(torch.autograd.Function):
    """``adjacency @ x`` whose backward is the same product (the matrix is symmetric).

    torch's generic sparse-matmul backward is 3-4x slower on CPU than this.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        ctx.adjacency = adjacency
        return adjacency @ x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return ctx.adjacency @ grad, None


class LightGCN(EmbeddingModel):
    def __init__(self, index: InteractionIndex, dim: int, layers: int) -> None:
        super().__init__()
        self.n_users = index.n_users
        self.layers = layers
        self.embeddings = nn.Embedding(index.n_users + index.n_items, dim)
        nn.init.normal_(self.embeddings.weight, std=0.1)
        self.adjacency = normalized_adjacency(index)

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        layer = self.embeddings.weight
        total = layer
        for _ in range(self.layers):
            layer = SymmetricPropagation.apply(layer, self.adjacency)
            total = total + layer
        final = total / (self.layers + 1)
        return final[: self.n_users], final[self.n_users :]

    def ego_norm(self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        ego = self.embeddings
        return (
            ego(users).pow(2).sum()
            + ego(positives + self.n_users).pow(2).sum()
            + ego(negatives + self.n_users).pow(2).sum()
        )


class LightGCNRecommender(EmbeddingRecommender):
    name = "lightgcn"
    config: LightGCNConfig

    def build_model(self, index: InteractionIndex, view: Dataset) -> EmbeddingModel:
        return LightGCN(index, self.config.embedding_dim, self.config.layers)


def make_lightgcn(options: MethodOptions) -> LightGCNRecommender:
    """Factory for ``--method lightgcn``; ``--option key=value`` overrides :class:`LightGCNConfig` fields."""
    return LightGCNRecommender(config_with_overrides(LightGCNConfig(seed=options.seed), options.extra))
