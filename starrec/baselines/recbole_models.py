"""RecBole's general recommenders (BPR by default) behind starrec's :class:`Recommender`.

It answers "does our BPR match the reference one?" on any dataset, through the same harness,
the same leakage-free training view and the same shuffled candidates. ``fit`` writes the view
as a RecBole atomic ``.inter`` file in a temporary folder, trains the model with RecBole's own
``Trainer`` on every interaction (split ``RS [1, 0, 0]``: no validation, a fixed number of
epochs, as in the issue's reference run: 40 epochs, dimension 64, lr 1e-3), and ``rank`` reads
``full_sort_predict`` for the user. Candidates or users RecBole never saw fall back to popularity
and are counted.

Optional: ``pip install 'starrec[recbole]'`` (RecBole 1.2.1). That release predates NumPy 2 and
reads ``np.float_``, ``np.complex_`` and ``np.unicode_``; :func:`numpy_compat` restores those
aliases before RecBole is imported.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starrec.baselines.interactions import IndexedRecommender, InteractionIndex, rank_candidates
from starrec.data.schema import Dataset, RankRequest
from starrec.eval.methods import MethodOptions, config_with_overrides

DATASET_NAME = "starrec"
NUMPY_ALIASES = {"float_": "float64", "complex_": "complex128", "unicode_": "str_"}


@dataclass
class RecBoleConfig:
    model: str = field(default="BPR", metadata={"help": "A RecBole general recommender (BPR, LightGCN...)."})
    embedding_size: int = field(default=64, metadata={"help": "Embedding dimension."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate."})
    epochs: int = field(default=40, metadata={"help": "Training epochs (no early stopping: no validation)."})
    train_batch_size: int = field(default=2048, metadata={"help": "Interactions per batch."})
    negatives: int = field(default=1, metadata={"help": "Uniform negatives per positive."})
    weight_decay: float = field(default=0.0, metadata={"help": "Adam weight decay."})

    def __post_init__(self) -> None:
        for name in ("embedding_size", "epochs", "train_batch_size", "negatives"):
            if getattr(self, name) < 1:
                raise ValueError(f"recbole option {name} must be >= 1, got {getattr(self, name)}")


def numpy_compat() -> None:
    """Give NumPy 2 the aliases RecBole 1.2.1 reads at import and configuration time."""
    import numpy as np

    for alias, target in NUMPY_ALIASES.items():
        if alias not in np.__dict__:
            setattr(np, alias, getattr(np, target))


def write_inter_file(train: Dataset, folder: Path) -> Path:
    """The training view as ``folder/starrec/starrec.inter`` (tab-separated RecBole atomic file)."""
    directory = folder / DATASET_NAME
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{DATASET_NAME}.inter"
    rows = ["user_id:token\titem_id:token\ttimestamp:float"]
    rows += [f"{e.user_id}\t{e.item_id}\t{e.timestamp!r}" for e in train.interactions]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


class RecBoleRecommender(IndexedRecommender):
    """A RecBole model trained on the harness's training view; ranks by ``full_sort_predict``."""

    name = "recbole"
    config: RecBoleConfig

    def __init__(self, config: RecBoleConfig, seed: int = 0) -> None:
        super().__init__(config)
        self.seed = seed
        self.train_seconds = 0.0
        self._model: Any = None
        self._dataset: Any = None
        self._scores: dict[str, dict[str, float]] = {}

    def recbole_config(self, data_path: Path) -> dict[str, Any]:
        config = self.config
        return {
            "data_path": str(data_path),
            "USER_ID_FIELD": "user_id",
            "ITEM_ID_FIELD": "item_id",
            "TIME_FIELD": "timestamp",
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "epochs": config.epochs,
            "embedding_size": config.embedding_size,
            "learning_rate": config.learning_rate,
            "weight_decay": config.weight_decay,
            "train_batch_size": config.train_batch_size,
            "train_neg_sample_args": {"distribution": "uniform", "sample_num": config.negatives},
            "eval_args": {"split": {"RS": [1.0, 0.0, 0.0]}, "order": "RO", "group_by": None, "mode": "full"},
            "seed": self.seed,
            "reproducibility": True,
            "device": "cpu",
            "use_gpu": False,
            "show_progress": False,
            "state": "WARNING",
            "checkpoint_dir": str(data_path / "checkpoints"),
        }

    def learn(self, train: Dataset, index: InteractionIndex) -> None:
        numpy_compat()
        from recbole.config import Config
        from recbole.data import create_dataset
        from recbole.data.utils import create_samplers, get_dataloader
        from recbole.trainer import Trainer
        from recbole.utils import get_model, init_seed

        self._scores = {}
        with tempfile.TemporaryDirectory(prefix="starrec-recbole-") as folder:
            write_inter_file(train, Path(folder))
            argv, sys.argv = sys.argv, sys.argv[:1]  # RecBole reads --key=value from the command line too
            try:
                config = Config(model=self.config.model, dataset=DATASET_NAME,
                                config_dict=self.recbole_config(Path(folder)))  # fmt: skip
            finally:
                sys.argv = argv
            init_seed(config["seed"], config["reproducibility"])
            dataset = create_dataset(config)
            built = dataset.build()
            train_sampler, _, _ = create_samplers(config, dataset, built)
            loader = get_dataloader(config, "train")(config, built[0], train_sampler, shuffle=True)
            model = get_model(config["model"])(config, built[0]).to(config["device"])
            started = time.perf_counter()
            Trainer(config, model).fit(loader, None, saved=False, show_progress=False)
            self.train_seconds = time.perf_counter() - started
        model.eval()
        self._model, self._dataset = model, dataset

    def item_scores(self, user_id: str) -> dict[str, float]:
        """RecBole's score of every item it knows for a user it knows (``{}`` for an unknown user)."""
        import torch
        from recbole.data.interaction import Interaction

        if user_id not in self._scores:
            dataset = self._dataset
            if user_id not in dataset.field2token_id["user_id"]:
                return {}
            uid = dataset.token2id("user_id", user_id)
            with torch.no_grad():
                scores = self._model.full_sort_predict(Interaction({"user_id": torch.tensor([uid])}))
            tokens = dataset.field2id_token["item_id"]
            values = scores.view(-1).tolist()
            self._scores = {user_id: {str(tokens[i]): values[i] for i in range(1, len(tokens))}}
        return self._scores[user_id]

    def rank(self, request: RankRequest) -> list[str]:
        index = self.require_index()
        if self._model is None:
            raise RuntimeError("recbole: rank() called before fit(); fit it on the training view first")
        scores = self.item_scores(request.user_id)
        if not scores:
            return self.counts.record(rank_candidates(request.candidates, {}, index), unknown_user=True)
        shown = {item: scores[item] for item in request.candidates if item in scores}
        return self.counts.record(rank_candidates(request.candidates, shown, index))

    def stats(self) -> dict[str, Any]:
        import recbole

        return {**super().stats(), "recbole_version": recbole.__version__,
                "train_seconds": round(self.train_seconds, 3)}  # fmt: skip


def make_recbole(options: MethodOptions) -> RecBoleRecommender:
    """Factory for ``--method recbole``; ``--option model=BPR epochs=40 ...`` set :class:`RecBoleConfig`."""
    import recbole  # noqa: F401 - fail here with the install hint (see starrec.eval.methods.OPTIONAL_MODULES)

    return RecBoleRecommender(config_with_overrides(RecBoleConfig(), options.extra, "recbole"), options.seed)
