"""Item value profiles and user-item value affinity (ZOOM's value signal without a strong LLM).

- **Item profile.** Each item's text (title, year, categories, description) and a short text per
  Schwartz value (:data:`starrec.contract.values.VALUE_DESCRIPTIONS`) are embedded by a
  :class:`~starrec.tools.text_embedder.TextEmbedder`. The item's 10 cosines are standardised per
  value over the catalogue (so a value every text resembles does not dominate) and turned into a
  distribution by a softmax: 10 non-negative weights summing to 1, float32. Only item metadata
  enters, never interactions, so every catalogue item may be profiled (no leakage).
- **User vector** (:func:`user_value_matrix`): the mean profile of the distinct items of the user's
  history *in the view passed* (the training view), so a test answer never enters. Mined LLM
  profiles (``starrec values mine``) are not mixed in: only some users have one, on another scale.
  A user with no profiled item gets the catalogue mean, which carries no preference.
- **Affinity** (:func:`value_affinity`): cosine between the user vector and the item profile, both
  centred on the catalogue mean, in [-1, 1]; 0 when either says nothing.

Profiles are cached as ``<cache_dir>/values/item-profiles-<hash>.npz``, keyed by the embedder's
name, the value texts, the item texts and the temperature, so a rerun never re-embeds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from starrec.config import get_settings
from starrec.contract.values import SCHWARTZ_VALUES, VALUE_DESCRIPTIONS
from starrec.data.schema import Dataset, Interaction
from starrec.tools.text_embedder import TextEmbedder

ITEM_TEXT_CHARS = 300
"""Longest item text embedded (MiniLM reads 256 word pieces; titles and genres fit easily)."""
DEFAULT_TEMPERATURE = 1.0
"""Softmax temperature over the standardised cosines: 1 keeps a profile far from one-hot."""
PROFILE_FORMAT = 1


def value_texts(domain: str = "item") -> list[str]:
    """The text each Schwartz value is embedded as, in vocabulary order."""
    return [
        f"A {domain} about {name.replace('_', '-')}: {VALUE_DESCRIPTIONS[name]}." for name in SCHWARTZ_VALUES
    ]


def item_text(dataset: Dataset, item_id: str) -> str:
    """What an item is embedded as: title (year), categories, description; at most 300 characters."""
    meta = dataset.items.get(item_id, {})
    title = dataset.item_title(item_id)
    year = meta.get("year") or meta.get("release_year")
    parts = [f"{title} ({year})" if year else title]
    categories = dataset.item_categories(item_id)
    if categories:
        parts.append(", ".join(categories[:6]))
    description = meta.get("description")
    if isinstance(description, list):
        description = " ".join(str(d) for d in description)
    if description:
        parts.append(str(description))
    return ". ".join(parts)[:ITEM_TEXT_CHARS]


@dataclass(frozen=True)
class ItemValueProfiles:
    """One 10-dim Schwartz value distribution per item (rows in ``item_ids`` order)."""

    item_ids: tuple[str, ...]
    matrix: np.ndarray
    """items x 10, float32, each row non-negative and summing to 1 (vocabulary order)."""
    embedder: str
    """Name of the embedder that made them (recorded with every result)."""

    def __post_init__(self) -> None:
        if self.matrix.shape != (len(self.item_ids), len(SCHWARTZ_VALUES)):
            raise ValueError(
                f"item value profiles: matrix shape {self.matrix.shape} does not match "
                f"{len(self.item_ids)} items x {len(SCHWARTZ_VALUES)} values"
            )

    @property
    def row_of(self) -> dict[str, int]:
        return {item: row for row, item in enumerate(self.item_ids)}

    @property
    def centre(self) -> np.ndarray:
        """The catalogue's mean profile: what a vector that says nothing looks like."""
        if not self.item_ids:
            return np.full(len(SCHWARTZ_VALUES), 1.0 / len(SCHWARTZ_VALUES), dtype=np.float32)
        return self.matrix.mean(axis=0).astype(np.float32)

    def rows(self, item_ids: Sequence[str]) -> np.ndarray:
        """Profiles of ``item_ids``; an item without one gets :attr:`centre` (affinity 0)."""
        if not item_ids:
            return np.zeros((0, len(SCHWARTZ_VALUES)), dtype=np.float32)
        index, centre = self.row_of, self.centre
        rows = [self.matrix[index[i]] if i in index else centre for i in item_ids]
        return np.stack(rows).astype(np.float32)

    def weights(self, item_id: str) -> dict[str, float]:
        """Value -> weight of one item (for reports and docs)."""
        row = self.rows([item_id])[0]
        return {name: round(float(w), 4) for name, w in zip(SCHWARTZ_VALUES, row, strict=True)}

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(
            tmp,
            matrix=self.matrix,
            item_ids=np.array(self.item_ids, dtype=object),
            meta=np.array(json.dumps({"embedder": self.embedder, "format": PROFILE_FORMAT})),
        )
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> ItemValueProfiles:
        with np.load(path, allow_pickle=True) as payload:
            meta = json.loads(str(payload["meta"]))
            if meta.get("format") != PROFILE_FORMAT:
                raise ValueError(f"{path}: item value profiles of format {meta.get('format')}; delete it")
            return cls(
                tuple(str(i) for i in payload["item_ids"]),
                payload["matrix"].astype(np.float32),
                str(meta["embedder"]),
            )


def profiles_from_embeddings(
    items: np.ndarray, values: np.ndarray, temperature: float = DEFAULT_TEMPERATURE
) -> np.ndarray:
    """Unit item rows x unit value rows -> per-item value distributions (standardised cosines, softmax)."""
    if temperature <= 0:
        raise ValueError(f"item value profiles: temperature must be > 0, got {temperature}")
    cosines = items.astype(np.float64) @ values.astype(np.float64).T
    if len(cosines) > 1:
        spread = cosines.std(axis=0)
        cosines = (cosines - cosines.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    logits = cosines / temperature
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def _cache_key(embedder: str, texts: Sequence[str], values: Sequence[str], temperature: float) -> str:
    digest = hashlib.sha256(json.dumps([PROFILE_FORMAT, embedder, list(values), temperature]).encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def item_value_profiles(
    dataset: Dataset,
    embedder: TextEmbedder,
    *,
    temperature: float = DEFAULT_TEMPERATURE,
    cache_dir: Path | None = None,
    use_cache: bool = True,
) -> ItemValueProfiles:
    """Value profiles of every item of ``dataset``'s catalogue, cached under ``cache_dir``/values."""
    item_ids = tuple(sorted(dataset.items))
    texts = [item_text(dataset, item) for item in item_ids]
    values = value_texts(dataset.domain)
    key = _cache_key(embedder.name, texts, values, temperature)
    path = (cache_dir or get_settings().cache_dir) / "values" / f"item-profiles-{key}.npz"
    if use_cache and path.is_file():
        return ItemValueProfiles.load(path)
    if not item_ids:
        return ItemValueProfiles((), np.zeros((0, len(SCHWARTZ_VALUES)), dtype=np.float32), embedder.name)
    matrix = profiles_from_embeddings(embedder.embed(texts), embedder.embed(values), temperature)
    profiles = ItemValueProfiles(item_ids, matrix, embedder.name)
    if use_cache:
        profiles.save(path)
    return profiles


def history_vector(history: Sequence[str], profiles: ItemValueProfiles) -> np.ndarray:
    """Mean profile of the distinct profiled item ids of ``history``; the centre when there are none."""
    index = profiles.row_of
    rows = sorted({index[item] for item in history if item in index})
    if not rows:
        return profiles.centre
    return profiles.matrix[rows].mean(axis=0).astype(np.float32)


def item_ids_of(history: Sequence[Interaction]) -> list[str]:
    return [event.item_id for event in history]


def user_value_matrix(train: Dataset, user_ids: Sequence[str], profiles: ItemValueProfiles) -> np.ndarray:
    """users x 10 (float32): each user's mean item value profile over their ``train`` history.

    Read from ``train`` only (pass the leakage-free training view); users without a profiled
    training item get the catalogue mean. Mined LLM profiles are not used (see the module doc).
    """
    if not user_ids:
        return np.zeros((0, len(SCHWARTZ_VALUES)), dtype=np.float32)
    vectors = [history_vector(item_ids_of(train.history(user)), profiles) for user in user_ids]
    return np.stack(vectors).astype(np.float32)


def value_affinity(user_vector: np.ndarray, item_rows: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Cosine of the centred user vector with each centred item row, in [-1, 1] (0 where either is flat)."""
    user = user_vector.astype(np.float64) - centre
    items = item_rows.astype(np.float64) - centre
    norms = np.linalg.norm(items, axis=1) * np.linalg.norm(user)
    dots = items @ user
    return np.where(norms > 1e-12, dots / np.where(norms > 1e-12, norms, 1.0), 0.0)


def candidate_affinity(
    history: Sequence[str], candidates: Sequence[str], profiles: ItemValueProfiles
) -> dict[str, float]:
    """Candidate -> value affinity with the item ids of the user's (training) history."""
    scores = value_affinity(history_vector(history, profiles), profiles.rows(candidates), profiles.centre)
    return {item: float(score) for item, score in zip(candidates, scores, strict=True)}


UserValues = Callable[[Dataset, Sequence[str]], np.ndarray]


def user_values_from_profiles(
    data_dir: str | Path | None = None, embedder: TextEmbedder | None = None
) -> UserValues:
    """``(view, user_ids) -> users x 10`` for BPR's contrastive value term (``make_bpr``).

    The item profiles are built (once, then cached) for the catalogue of ``data_dir`` when given,
    else of the view passed; the user vectors come from the view passed, so a training view keeps
    them leakage-free. ``embedder`` defaults to the bundled all-MiniLM-L6-v2.
    """
    built: dict[str, ItemValueProfiles] = {}

    def user_values(view: Dataset, user_ids: Sequence[str]) -> np.ndarray:
        if "profiles" not in built:
            from starrec.tools.text_embedder import SentenceEmbedder

            catalogue = view
            if data_dir is not None:
                from starrec.data import load_dataset

                catalogue = load_dataset(Path(data_dir))
            built["profiles"] = item_value_profiles(catalogue, embedder or SentenceEmbedder())
        return user_value_matrix(view, user_ids, built["profiles"])

    return user_values


def top_values(weights: Mapping[str, float], n: int = 3) -> list[str]:
    """The n heaviest value names, heaviest first (ties in vocabulary order)."""
    return sorted(SCHWARTZ_VALUES, key=lambda name: -weights.get(name, 0.0))[:n]
