"""SASRec (Kang & McAuley, 2018): a causal self-attention encoder over the user's item sequence;
the next item's score is the dot product of the last hidden state with its (tied) embedding.

A small, documented torch module rather than a dependency. Two choices differ from the paper:

- the loss is a full softmax cross-entropy over the catalogue at every position instead of
  binary cross-entropy against one sampled negative; Klenitskiy & Vasilev (RecSys 2023) show it
  trains SASRec markedly better, and a catalogue of a few thousand items makes it cheap;
- every interaction is used: a history longer than ``max_length`` is cut, from its end, into
  consecutive windows, not truncated to its last ``max_length`` items.

It trains with the shared early stopping of :mod:`starrec.baselines.training`, and ranks with
the history each request carries (the leakage-free view's sequence up to the task).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from starrec.baselines.interactions import IndexedRecommender, InteractionIndex, rank_candidates
from starrec.baselines.training import (
    TrainingConfig,
    TrainingCurve,
    early_stopped_fit,
    seed_everything,
    torch_threads,
)
from starrec.data.schema import Dataset, RankRequest
from starrec.eval.methods import MethodOptions, config_with_overrides

PADDING = 0
"""Item id 0 is padding; real items are their index position + 1."""


@dataclass
class SASRecConfig(TrainingConfig):
    embedding_dim: int = field(default=64, metadata={"help": "Size of item and position embeddings."})
    max_length: int = field(default=50, metadata={"help": "Longest sequence the encoder reads."})
    layers: int = field(default=2, metadata={"help": "Self-attention blocks."})
    heads: int = field(default=1, metadata={"help": "Attention heads per block."})
    dropout: float = field(default=0.2, metadata={"help": "Dropout on embeddings and in every block."})
    max_epochs: int = field(default=200, metadata={"help": "Upper bound on passes over the sequences."})
    eval_every: int = field(default=3, metadata={"help": "Epochs between two hold-out evaluations."})
    learning_rate: float = field(default=3e-3, metadata={"help": "Adam learning rate."})
    batch_size: int = field(default=128, metadata={"help": "Sequences per optimiser step."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.embedding_dim % self.heads:
            raise ValueError(
                f"embedding_dim ({self.embedding_dim}) must be divisible by heads ({self.heads})"
            )
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")


class SASRec(nn.Module):
    def __init__(self, n_items: int, config: SASRecConfig) -> None:
        super().__init__()
        dim = config.embedding_dim
        self.items = nn.Embedding(n_items + 1, dim, padding_idx=PADDING)
        self.positions = nn.Embedding(config.max_length, dim)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim,
                config.heads,
                dim_feedforward=dim,
                dropout=config.dropout,
                batch_first=True,
                norm_first=True,
            )
            for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.items.weight, std=0.02)
        with torch.no_grad():
            self.items.weight[PADDING].zero_()
        self.scale = dim**0.5

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        """Hidden states (batch x length x dim) of left-padded item sequences."""
        length = sequences.shape[1]
        keep = (sequences != PADDING).unsqueeze(-1).float()
        hidden = self.items(sequences) * self.scale + self.positions(torch.arange(length))
        hidden = self.dropout(hidden) * keep
        causal = torch.triu(torch.full((length, length), float("-inf")), diagonal=1)
        for block in self.blocks:
            # Padded positions are zeroed after every block (the original's timeline mask), so real
            # positions attend to them as to empty slots; no all-masked softmax row can produce NaN.
            hidden = block(hidden, src_mask=causal) * keep
        return self.norm(hidden)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.items.weight.T


def windows(sequence: Sequence[int], max_length: int) -> list[list[int]]:
    """Consecutive windows of ``max_length + 1`` ids (inputs + shifted targets), cut from the end."""
    windows_: list[list[int]] = []
    end = len(sequence)
    while end >= 2:
        start = max(0, end - max_length - 1)
        windows_.append(list(sequence[start:end]))
        end = start + 1 if start > 0 else 0
    return windows_


def left_pad(sequences: Sequence[Sequence[int]], length: int) -> np.ndarray:
    padded = np.full((len(sequences), length), PADDING, dtype=np.int64)
    for row, sequence in enumerate(sequences):
        tail = list(sequence)[-length:]
        if tail:
            padded[row, -len(tail) :] = tail
    return padded


class SASRecTrainer:
    """SASRec under training on one view (a :class:`~starrec.baselines.training.Trainable`)."""

    def __init__(self, view: Dataset, config: SASRecConfig) -> None:
        self.config = config
        self.item_ids = tuple(sorted(view.by_item))
        self.item_index = {item: position + 1 for position, item in enumerate(self.item_ids)}
        self.model = SASRec(len(self.item_ids), config)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.rng = np.random.default_rng(config.seed)
        chunks = [
            chunk
            for user in sorted(view.by_user)
            for chunk in windows(
                [self.item_index[event.item_id] for event in view.history(user)], config.max_length
            )
        ]
        self.inputs = left_pad([chunk[:-1] for chunk in chunks], config.max_length)
        self.targets = left_pad([chunk[1:] for chunk in chunks], config.max_length)

    def train_epoch(self) -> float:
        self.model.train()
        order = self.rng.permutation(len(self.inputs))
        total, count = 0.0, 0
        for start in range(0, len(order), self.config.batch_size):
            batch = order[start : start + self.config.batch_size]
            inputs, targets = torch.from_numpy(self.inputs[batch]), torch.from_numpy(self.targets[batch])
            hidden = self.model(inputs)
            real = targets != PADDING
            loss = F.cross_entropy(self.model.logits(hidden[real]), targets[real])
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            total += float(loss.detach()) * int(real.sum())
            count += int(real.sum())
        return total / max(count, 1)

    def score(self, user_id: str, history: Sequence[str], items: Sequence[str]) -> dict[str, float]:
        sequence = [self.item_index[item] for item in history if item in self.item_index]
        known = [item for item in items if item in self.item_index]
        if not sequence or not known:
            return {}
        self.model.eval()
        with torch.no_grad():
            inputs = torch.from_numpy(left_pad([sequence], self.config.max_length))
            last = self.model(inputs)[0, -1]
            vectors = self.model.items.weight[[self.item_index[item] for item in known]]
            values = (vectors @ last).tolist()
        return dict(zip(known, values, strict=True))

    def snapshot(self) -> dict[str, torch.Tensor]:
        return {key: value.detach().clone() for key, value in self.model.state_dict().items()}

    def restore(self, snapshot: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(snapshot)


class SASRecRecommender(IndexedRecommender):
    name = "sasrec"
    config: SASRecConfig

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__(config)
        self.curve = TrainingCurve()
        self._trainer: SASRecTrainer | None = None

    def _build(self, view: Dataset) -> SASRecTrainer:
        seed_everything(self.config.seed)
        return SASRecTrainer(view, self.config)

    def learn(self, train: Dataset, index: InteractionIndex) -> None:
        with torch_threads(self.config.threads):
            trainer, self.curve = early_stopped_fit(train, self.config, self.name, self._build)
        assert isinstance(trainer, SASRecTrainer)
        self._trainer = trainer

    def rank(self, request: RankRequest) -> list[str]:
        index = self.require_index()
        history = [event.item_id for event in request.history]
        scores = self._trainer.score(request.user_id, history, request.candidates) if self._trainer else {}
        if not scores:
            return self.counts.record(rank_candidates(request.candidates, {}, index), unknown_user=True)
        return self.counts.record(rank_candidates(request.candidates, scores, index))

    def stats(self) -> dict[str, Any]:
        training = self.curve.as_dict()
        return {**super().stats(), "training": training, "final_loss": training["final_loss"]}


def make_sasrec(options: MethodOptions) -> SASRecRecommender:
    """Factory for ``--method sasrec``; ``--option key=value`` overrides :class:`SASRecConfig` fields."""
    return SASRecRecommender(config_with_overrides(SASRecConfig(seed=options.seed), options.extra))
