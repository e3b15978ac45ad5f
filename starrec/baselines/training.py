"""The torch side shared by BPR-MF and LightGCN: seeding, uniform negative sampling, the BPR
training loop and the fit/rank logic of dot-product embedding recommenders.

Torch-free pieces (id index, option overrides, popularity fallback) live in
:mod:`starrec.baselines.interactions`.
"""

from __future__ import annotations

import random
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from starrec.baselines.interactions import IndexedRecommender, InteractionIndex, rank_candidates
from starrec.data.schema import Dataset, RankRequest


def seed_everything(seed: int) -> None:
    """The single place where the baselines seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def draw_uniform_negatives(
    index: InteractionIndex, users: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """One uniformly drawn item per entry of ``users`` that this user never interacted with."""
    n_items = index.n_items
    counts = np.diff(index.matrix.indptr)
    if np.any(counts[users] >= n_items):
        saturated = index.user_ids[int(users[np.argmax(counts[users] >= n_items)])]
        raise ValueError(f"user {saturated!r} interacted with every item; no negative can be sampled")
    positive_keys = _pair_keys(index)
    negatives = rng.integers(0, n_items, size=len(users))
    pending = np.arange(len(users))
    while pending.size:
        keys = users[pending].astype(np.int64) * n_items + negatives[pending]
        found = np.searchsorted(positive_keys, keys)
        found = np.minimum(found, len(positive_keys) - 1)
        clash = positive_keys[found] == keys
        pending = pending[clash]
        negatives[pending] = rng.integers(0, n_items, size=pending.size)
    return negatives


def _pair_keys(index: InteractionIndex) -> np.ndarray:
    """Sorted ``user * n_items + item`` keys of all positive pairs (CSR rows are sorted)."""
    coo = index.matrix.tocoo()
    return np.sort(coo.row.astype(np.int64) * index.n_items + coo.col.astype(np.int64))


@dataclass
class EmbeddingConfig:
    """Knobs shared by the embedding models trained with the BPR loss."""

    embedding_dim: int = field(default=64, metadata={"help": "Size of user and item embeddings."})
    epochs: int = field(default=20, metadata={"help": "Passes over the training interactions."})
    learning_rate: float = field(default=5e-3, metadata={"help": "Adam learning rate."})
    reg: float = field(
        default=1e-4, metadata={"help": "L2 weight on the batch's user/item (ego) embeddings, per example."}
    )
    batch_size: int = field(default=2048, metadata={"help": "(user, positive, negative) triples per step."})
    seed: int = field(default=0, metadata={"help": "Seeds initialisation and negative sampling."})
    threads: int = field(
        default=1,
        metadata={
            "help": "torch CPU threads while fitting (0 = torch's default). One thread is fastest on small, "
            "shared machines, where extra threads mostly spin; raise it for large datasets."
        },
    )


class EmbeddingModel(nn.Module):
    """A model that yields one vector per user and per item; score = dot product."""

    @abstractmethod
    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (users x dim, items x dim) representations."""

    @abstractmethod
    def ego_norm(self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """Squared L2 norm of the trainable parameters touched by this batch (for regularisation)."""


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run a block with ``threads`` torch CPU threads (0 = unchanged), restoring the setting after."""
    previous = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train_bpr(
    model: EmbeddingModel, index: InteractionIndex, config: EmbeddingConfig, label: str
) -> list[float]:
    """Fit ``model`` with the BPR loss and uniform negatives; returns the mean loss of each epoch."""
    rng = np.random.default_rng(config.seed)
    users, positives = index.matrix.nonzero()
    users = users.astype(np.int64)
    positives = positives.astype(np.int64)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    losses: list[float] = []
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=True, disable=not Console().is_terminal) as progress:
        bar = progress.add_task(f"{label} training", total=config.epochs, loss="")
        for _ in range(config.epochs):
            negatives = draw_uniform_negatives(index, users, rng)
            order = rng.permutation(len(users))
            total = 0.0
            for start in range(0, len(order), config.batch_size):
                batch = order[start : start + config.batch_size]
                loss = _bpr_step(
                    model, optimizer, users[batch], positives[batch], negatives[batch], config.reg
                )
                total += loss * len(batch)
            losses.append(total / len(order))
            progress.update(bar, advance=1, loss=f"loss {losses[-1]:.4f}")
    return losses


def _bpr_step(
    model: EmbeddingModel,
    optimizer: torch.optim.Optimizer,
    users: np.ndarray,
    positives: np.ndarray,
    negatives: np.ndarray,
    reg: float,
) -> float:
    u, p, n = (torch.from_numpy(x) for x in (users, positives, negatives))
    user_vectors, item_vectors = model.propagate()
    chosen = user_vectors[u]
    margin = (chosen * item_vectors[p]).sum(-1) - (chosen * item_vectors[n]).sum(-1)
    loss = -F.logsigmoid(margin).mean() + reg * model.ego_norm(u, p, n) / len(users)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.detach())


class EmbeddingRecommender(IndexedRecommender):
    """Shared fit/rank for the dot-product models (BPR-MF, LightGCN)."""

    config: EmbeddingConfig

    def __init__(self, config: EmbeddingConfig) -> None:
        super().__init__(config)
        self.losses: list[float] = []
        self._user_vectors = np.zeros((0, 0), dtype=np.float32)
        self._item_vectors = np.zeros((0, 0), dtype=np.float32)

    @abstractmethod
    def build_model(self, index: InteractionIndex) -> EmbeddingModel:
        """A freshly initialised model for this index (called after seeding)."""

    def learn(self, train: Dataset, index: InteractionIndex) -> None:
        seed_everything(self.config.seed)
        with torch_threads(self.config.threads):
            model = self.build_model(index)
            self.losses = train_bpr(model, index, self.config, self.name)
            model.eval()
            with torch.no_grad():
                user_vectors, item_vectors = model.propagate()
        self._user_vectors = user_vectors.detach().numpy().copy()
        self._item_vectors = item_vectors.detach().numpy().copy()

    def rank(self, request: RankRequest) -> list[str]:
        index = self.require_index()
        row = index.user_index.get(request.user_id)
        if row is None:
            return self.counts.record(rank_candidates(request.candidates, {}, index), unknown_user=True)
        known = [item for item in request.candidates if item in index.item_index]
        values = self._item_vectors[[index.item_index[item] for item in known]] @ self._user_vectors[row]
        scores = dict(zip(known, values.tolist(), strict=True))
        return self.counts.record(rank_candidates(request.candidates, scores, index))

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "final_loss": round(self.losses[-1], 5) if self.losses else None}
