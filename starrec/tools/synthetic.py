"""Synthetic power-law interaction graphs for graph benchmarks and Bolt smoke tests."""

from __future__ import annotations

import numpy as np

from starrec.data.schema import Dataset, Interaction

GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Documentary", "Thriller")


def _power_law_weights(count: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """P(rank r) proportional to r^-exponent, assigned to ids in random order."""
    weights = np.arange(1, count + 1, dtype=float) ** -exponent
    return rng.permutation(weights / weights.sum())


def power_law_dataset(
    users: int,
    items: int,
    edges: int,
    *,
    seed: int = 0,
    item_exponent: float = 1.0,
    user_exponent: float = 0.5,
    id_prefix: str = "",
) -> Dataset:
    """Exactly ``edges`` distinct (user, item) pairs with power-law item popularity and user activity.

    Items get one or two genres so the deterministic verbaliser has facets to group by;
    ``id_prefix`` lets tests put braces or Cypher keywords into every id.
    """
    if edges > users * items:
        raise ValueError(f"{edges} distinct edges do not fit in {users} x {items}")
    rng = np.random.default_rng(seed)
    user_p = _power_law_weights(users, user_exponent, rng)
    item_p = _power_law_weights(items, item_exponent, rng)
    seen = np.empty(0, dtype=np.int64)
    while seen.size < edges:
        draws = max(edges - seen.size, 1024) * 2
        codes = rng.choice(users, draws, p=user_p).astype(np.int64) * items + rng.choice(
            items, draws, p=item_p
        )
        _, first = np.unique(np.concatenate([seen, codes]), return_index=True)
        seen = np.concatenate([seen, codes])[np.sort(first)]
    seen = seen[:edges]
    user_of, item_of = np.divmod(seen, items)
    timestamps = rng.permutation(edges).astype(float)
    ratings = rng.integers(1, 6, edges).astype(float)
    item_ids = [f"{id_prefix}i{index}" for index in range(items)]
    user_ids = [f"{id_prefix}u{index}" for index in range(users)]
    genre_a = rng.integers(0, len(GENRES), items)
    genre_b = rng.integers(0, len(GENRES), items)
    item_meta = {
        item_ids[index]: {
            "title": f"Title {index}",
            "genres": sorted({GENRES[genre_a[index]], GENRES[genre_b[index]]}),
        }
        for index in range(items)
    }
    interactions = [
        Interaction(user_ids[u], item_ids[i], t, r)
        for u, i, t, r in zip(
            user_of.tolist(), item_of.tolist(), timestamps.tolist(), ratings.tolist(), strict=True
        )
    ]
    return Dataset({user: {} for user in user_ids}, item_meta, interactions, domain="movie", name="synthetic")
