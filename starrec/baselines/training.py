"""The torch side of the learned baselines: seeding, negative sampling, the BPR loop, and
training to convergence with early stopping on a hold-out carved from the training view.

Early stopping (:func:`early_stopped_fit`) is shared by every learned model (BPR-MF, LightGCN,
SASRec): a :class:`Holdout` hides the last training interaction of some training users by the
``classic`` scenario rule (so it looks like a test task), the model trains on the rest and is
scored on the hold-out every ``eval_every`` epochs; training stops after ``patience``
evaluations without improvement. With ``refit`` the model is then retrained from scratch on the
whole training view for the best epoch count, so the held-out interactions are not wasted.

Torch-free pieces (id index, option overrides, popularity fallback) live in
:mod:`starrec.baselines.interactions`.
"""

from __future__ import annotations

import math
import random
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from starrec.baselines.interactions import IndexedRecommender, InteractionIndex, rank_candidates
from starrec.data.scenarios import build_tasks
from starrec.data.schema import Dataset, RankRequest, Task
from starrec.eval.metrics import hr_avg, mean_reciprocal_rank

SelectionMetric = Literal["mrr", "hr_avg"]


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
class TrainingConfig:
    """How long and how a learned baseline trains; shared by BPR-MF, LightGCN and SASRec."""

    max_epochs: int = field(
        default=60,
        metadata={"help": "Upper bound on passes over the training data (early stopping may stop sooner)."},
    )
    early_stopping: bool = field(
        default=True,
        metadata={"help": "Stop when the hold-out metric stops improving; false trains exactly max_epochs."},
    )
    eval_every: int = field(default=2, metadata={"help": "Epochs between two hold-out evaluations."})
    patience: int = field(
        default=3, metadata={"help": "Hold-out evaluations without improvement before training stops."}
    )
    validation_users: int = field(
        default=500,
        metadata={"help": "Training users whose last training interaction is held out for early stopping."},
    )
    selection_metric: SelectionMetric = field(
        default="mrr",
        metadata={"help": "Hold-out metric early stopping maximises: mrr (smooth) or hr_avg (the headline)."},
    )
    refit: bool = field(
        default=True,
        metadata={
            "help": "After early stopping, retrain from scratch on the whole training view for the best "
            "epoch count (false keeps the best hold-out snapshot, trained without the held-out interactions)."
        },
    )
    learning_rate: float = field(default=5e-3, metadata={"help": "Adam learning rate."})
    weight_decay: float = field(
        default=0.0, metadata={"help": "Adam weight decay on every parameter (0 = none)."}
    )
    batch_size: int = field(default=2048, metadata={"help": "Training examples per optimiser step."})
    seed: int = field(default=0, metadata={"help": "Seeds initialisation, sampling and the hold-out."})
    threads: int = field(
        default=1,
        metadata={
            "help": "torch CPU threads while fitting (0 = torch's default). One thread is fastest on small, "
            "shared machines, where extra threads mostly spin; raise it for large datasets."
        },
    )

    def __post_init__(self) -> None:
        for name in ("max_epochs", "eval_every", "patience", "batch_size"):
            minimum = 0 if name == "max_epochs" else 1
            if getattr(self, name) < minimum:
                raise ValueError(f"{name} must be >= {minimum}, got {getattr(self, name)}")


@dataclass
class EmbeddingConfig(TrainingConfig):
    """Knobs of the dot-product models trained with the BPR loss."""

    embedding_dim: int = field(default=64, metadata={"help": "Size of user and item embeddings."})
    reg: float = field(
        default=1e-4, metadata={"help": "L2 weight on the batch's user/item (ego) embeddings, per example."}
    )
    negatives_per_positive: int = field(
        default=1, metadata={"help": "Uniform negatives drawn per positive pair and epoch."}
    )
    recent_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight in [0, 1] of the short-term term: each candidate's score mixes the user-item dot "
            "product (1 - w) with its dot product with a decay-weighted mean of the embeddings of the "
            "user's last recent_window items (w), each z-scored over the candidates (0 = plain dot product)."
        },
    )
    recent_window: int = field(
        default=5, metadata={"help": "Most recent distinct history items in the short-term term."}
    )
    recent_decay: float = field(
        default=0.7, metadata={"help": "The k-th most recent of them weighs recent_decay**k (1 = flat)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.recent_weight <= 1.0:
            raise ValueError(f"recent_weight must be in [0, 1], got {self.recent_weight}")
        if self.recent_window < 1:
            raise ValueError(f"recent_window must be >= 1, got {self.recent_window}")
        if not 0.0 < self.recent_decay <= 1.0:
            raise ValueError(f"recent_decay must be in (0, 1], got {self.recent_decay}")


class Trainable(Protocol):
    """A model under training, as early stopping sees it."""

    def train_epoch(self) -> float:
        """One pass over the training data; returns its mean loss."""

    def score(self, user_id: str, history: Sequence[str], items: Sequence[str]) -> dict[str, float]:
        """Scores of the ``items`` the model knows, for a user with this (oldest-first) history."""

    def snapshot(self) -> Any:
        """A copy of the parameters, to come back to the best epoch."""

    def restore(self, snapshot: Any) -> None:
        """Load a :meth:`snapshot`."""


@dataclass(frozen=True)
class Holdout:
    """Validation tasks carved from the training view, and the view to fit on without them."""

    fit_view: Dataset
    tasks: list[Task]

    @classmethod
    def carve(cls, train: Dataset, users: int, seed: int) -> Holdout:
        """Hold out the last training interaction of up to ``users`` users (the ``classic`` rule)."""
        try:
            tasks = build_tasks(train, "classic", users, seed).tasks
        except ValueError as error:
            raise ValueError(
                f"early-stopping hold-out of {train.name!r}: {error}; set early_stopping=false "
                "(and max_epochs) for a dataset this small"
            ) from error
        return cls(train.hide_from(tasks), list(tasks))

    def evaluate(self, model: Trainable) -> dict[str, float]:
        """HR_avg and MRR of ``model`` on the hold-out tasks (unscored candidates rank last)."""
        rankings = []
        for task in self.tasks:
            history = [event.item_id for event in self.fit_view.history(task.user_id)]
            scores = model.score(task.user_id, history, task.candidates)
            order = sorted(
                range(len(task.candidates)),
                key=lambda position: (-scores.get(task.candidates[position], -math.inf), position),
            )
            rankings.append([task.candidates[position] for position in order])
        truths = [str(task.ground_truth) for task in self.tasks]
        return {
            "hr_avg": hr_avg(rankings, truths),
            "mrr": mean_reciprocal_rank(rankings, truths, max(len(r) for r in rankings)),
        }


@dataclass
class TrainingCurve:
    """What happened while fitting: per-epoch losses, hold-out scores, the chosen epoch."""

    losses: list[float] = field(default_factory=list)
    validation: list[dict[str, float]] = field(default_factory=list)
    """One entry per evaluation: ``{"epoch": e, "hr_avg": ..., "mrr": ...}``."""
    best_epoch: int = 0
    stopped_early: bool = False
    refit_losses: list[float] = field(default_factory=list)
    validation_tasks: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "epochs_trained": len(self.losses),
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "refit_epochs": len(self.refit_losses),
            "validation_tasks": self.validation_tasks,
            "best_validation": next(
                (entry for entry in self.validation if entry["epoch"] == self.best_epoch), None
            ),
            "final_loss": round((self.refit_losses or self.losses)[-1], 5)
            if (self.refit_losses or self.losses)
            else None,
        }


def _progress(label: str, total: int) -> tuple[Progress, Any]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    progress = Progress(*columns, transient=True, disable=not Console().is_terminal)
    return progress, progress.add_task(label, total=total, status="")


def early_stopped_fit(
    train: Dataset, config: TrainingConfig, label: str, build: Callable[[Dataset], Trainable]
) -> tuple[Trainable, TrainingCurve]:
    """Train ``build(view)`` to convergence; see the module docstring for the procedure.

    ``build`` must return a freshly seeded model for the view it is given (it is called once
    on the fit view, and once more on ``train`` when refitting).
    """
    curve = TrainingCurve()
    if not config.early_stopping or config.max_epochs == 0:
        model = build(train)
        _train_epochs(model, config.max_epochs, f"{label} training", curve.losses)
        curve.best_epoch = config.max_epochs
        return model, curve
    holdout = Holdout.carve(train, config.validation_users, config.seed)
    curve.validation_tasks = len(holdout.tasks)
    model = build(holdout.fit_view)
    best_score, best_snapshot, waited = -math.inf, None, 0
    progress, bar = _progress(f"{label} training (early stopping)", config.max_epochs)
    with progress:
        for epoch in range(1, config.max_epochs + 1):
            curve.losses.append(model.train_epoch())
            if epoch % config.eval_every and epoch != config.max_epochs:
                progress.update(bar, advance=1, status=f"loss {curve.losses[-1]:.4f}")
                continue
            scores = holdout.evaluate(model)
            curve.validation.append({"epoch": epoch, **{k: round(v, 5) for k, v in scores.items()}})
            if scores[config.selection_metric] > best_score:
                best_score, curve.best_epoch, waited = scores[config.selection_metric], epoch, 0
                if not config.refit:
                    best_snapshot = model.snapshot()
            else:
                waited += 1
            progress.update(
                bar,
                advance=1,
                status=f"loss {curve.losses[-1]:.4f} {config.selection_metric} "
                f"{scores[config.selection_metric]:.4f} (best @{curve.best_epoch})",
            )
            if waited >= config.patience:
                curve.stopped_early = epoch < config.max_epochs
                break
    if not config.refit:
        if best_snapshot is not None:
            model.restore(best_snapshot)
        return model, curve
    model = build(train)
    _train_epochs(model, curve.best_epoch, f"{label} refit on the whole view", curve.refit_losses)
    return model, curve


def _train_epochs(model: Trainable, epochs: int, title: str, losses: list[float]) -> None:
    """``epochs`` passes over the data with a progress bar, each epoch's loss appended to ``losses``."""
    progress, bar = _progress(title, epochs)
    with progress:
        for _ in range(epochs):
            losses.append(model.train_epoch())
            progress.update(bar, advance=1, status=f"loss {losses[-1]:.4f}")


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


class EmbeddingModel(nn.Module):
    """A model that yields one vector per user and per item; score = dot product."""

    @abstractmethod
    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (users x dim, items x dim) representations."""

    @abstractmethod
    def ego_norm(self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """Squared L2 norm of the trainable parameters touched by this batch (for regularisation)."""

    def auxiliary_loss(self, users: torch.Tensor, user_vectors: torch.Tensor) -> torch.Tensor | None:
        """An extra loss term for this batch of users (e.g. a contrastive value term); none by default."""
        return None


class BPRTrainer:
    """One :class:`EmbeddingModel` under BPR training on one view (a :class:`Trainable`)."""

    def __init__(self, model: EmbeddingModel, index: InteractionIndex, config: EmbeddingConfig) -> None:
        if config.negatives_per_positive < 1:
            raise ValueError(f"negatives_per_positive must be >= 1, got {config.negatives_per_positive}")
        self.model, self.index, self.config = model, index, config
        self.rng = np.random.default_rng(config.seed)
        users, positives = index.matrix.nonzero()
        repeat = config.negatives_per_positive
        self.users = np.repeat(users.astype(np.int64), repeat)
        self.positives = np.repeat(positives.astype(np.int64), repeat)
        self.optimizer = torch.optim.Adam(
            model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self._vectors: tuple[np.ndarray, np.ndarray] | None = None

    def train_epoch(self) -> float:
        self.model.train()
        self._vectors = None
        negatives = draw_uniform_negatives(self.index, self.users, self.rng)
        order = self.rng.permutation(len(self.users))
        total = 0.0
        for start in range(0, len(order), self.config.batch_size):
            batch = order[start : start + self.config.batch_size]
            total += self._step(self.users[batch], self.positives[batch], negatives[batch]) * len(batch)
        return total / max(len(order), 1)

    def _step(self, users: np.ndarray, positives: np.ndarray, negatives: np.ndarray) -> float:
        u, p, n = (torch.from_numpy(x) for x in (users, positives, negatives))
        user_vectors, item_vectors = self.model.propagate()
        chosen = user_vectors[u]
        margin = (chosen * item_vectors[p]).sum(-1) - (chosen * item_vectors[n]).sum(-1)
        loss = -F.logsigmoid(margin).mean() + self.config.reg * self.model.ego_norm(u, p, n) / len(users)
        extra = self.model.auxiliary_loss(u, chosen)
        if extra is not None:
            loss = loss + extra
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """The final (user, item) vectors as arrays, cached until the next epoch."""
        if self._vectors is None:
            self.model.eval()
            with torch.no_grad():
                users, items = self.model.propagate()
            self._vectors = (users.detach().numpy().copy(), items.detach().numpy().copy())
        return self._vectors

    def score(self, user_id: str, history: Sequence[str], items: Sequence[str]) -> dict[str, float]:
        row = self.index.user_index.get(user_id)
        if row is None:
            return {}
        user_vectors, item_vectors = self.vectors()
        known = [item for item in items if item in self.index.item_index]
        candidates = item_vectors[[self.index.item_index[item] for item in known]]
        values = candidates @ user_vectors[row]
        profile = self.recent_profile(history, item_vectors)
        if profile is not None and len(known) > 1:
            weight = self.config.recent_weight
            values = (1.0 - weight) * standardised(values) + weight * standardised(candidates @ profile)
        return dict(zip(known, values.tolist(), strict=True))

    def recent_profile(self, history: Sequence[str], item_vectors: np.ndarray) -> np.ndarray | None:
        """Decay-weighted mean embedding of the last ``recent_window`` distinct known history items.

        The short-term half of a long/short-term fusion (as in Fossil, He & McAuley 2016): the user
        vector says what they like overall, this says what they watched just now, and the classic
        scenario's target is the next item. None when the term is off or no recent item is known.
        """
        if self.config.recent_weight == 0.0:
            return None
        recent: list[int] = []
        for item in reversed(history):
            index = self.index.item_index.get(item)
            if index is not None and index not in recent:
                recent.append(index)
                if len(recent) == self.config.recent_window:
                    break
        if not recent:
            return None
        weights = self.config.recent_decay ** np.arange(len(recent), dtype=np.float64)
        return (weights / weights.sum()) @ item_vectors[recent]

    def snapshot(self) -> dict[str, torch.Tensor]:
        return {key: value.detach().clone() for key, value in self.model.state_dict().items()}

    def restore(self, snapshot: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(snapshot)
        self._vectors = None


def standardised(values: np.ndarray) -> np.ndarray:
    """``values`` shifted to mean 0 and scaled to standard deviation 1 (all 0 when they are equal)."""
    spread = values.std()
    return (values - values.mean()) / spread if spread > 0 else np.zeros_like(values)


class EmbeddingRecommender(IndexedRecommender):
    """Shared fit/rank for the dot-product models (BPR-MF, LightGCN)."""

    config: EmbeddingConfig

    def __init__(self, config: EmbeddingConfig) -> None:
        super().__init__(config)
        self.curve = TrainingCurve()
        self._trainer: BPRTrainer | None = None
        self._train: Dataset | None = None

    @property
    def losses(self) -> list[float]:
        """Per-epoch losses of the model that ranks (the refit when there is one)."""
        return self.curve.refit_losses or self.curve.losses

    @abstractmethod
    def build_model(self, index: InteractionIndex, view: Dataset) -> EmbeddingModel:
        """A freshly initialised model for this index (called after seeding)."""

    def _build(self, view: Dataset) -> BPRTrainer:
        seed_everything(self.config.seed)
        index = InteractionIndex.from_dataset(view)
        return BPRTrainer(self.build_model(index, view), index, self.config)

    def learn(self, train: Dataset, index: InteractionIndex) -> None:
        with torch_threads(self.config.threads):
            trainer, self.curve = early_stopped_fit(train, self.config, self.name, self._build)
            assert isinstance(trainer, BPRTrainer)
            trainer.vectors()
        self._trainer, self._train = trainer, train

    def rank(self, request: RankRequest) -> list[str]:
        index = self.require_index()
        if self._trainer is None or request.user_id not in self._trainer.index.user_index:
            return self.counts.record(rank_candidates(request.candidates, {}, index), unknown_user=True)
        events = request.history
        if not events and self.config.recent_weight > 0 and self._train is not None:
            events = tuple(self._train.history(request.user_id))  # as ItemKNN: the view's history
        history = [event.item_id for event in events]
        scores = self._trainer.score(request.user_id, history, request.candidates)
        return self.counts.record(rank_candidates(request.candidates, scores, index))

    def stats(self) -> dict[str, Any]:
        return {
            **super().stats(),
            "training": self.curve.as_dict(),
            "final_loss": self.curve.as_dict()["final_loss"],
        }
