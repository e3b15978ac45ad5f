"""Synthetic power-law interaction graphs for graph benchmarks and Bolt smoke tests."""

from __future__ import annotations

import numpy as np

from starrec.data.schema import Dataset, Interaction

GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Documentary", "Thriller")


def power_law_dataset(
    users: int, items: int, edges: int, *, seed: int = 0, exponent: float = 1.3, id_prefix: str = ""
) -> Dataset:
    """``edges`` draws of (uniform user, Zipf(``exponent``) item), duplicates dropped.

    Items get one or two genres so the deterministic verbaliser has facets to group by;
    ``id_prefix`` lets tests put quotes, braces or Cypher keywords into every id.
    """
    rng = np.random.default_rng(seed)
    user_of = rng.integers(0, users, edges)
    item_of = np.minimum(rng.zipf(exponent, edges), items) - 1
    # Shuffle item identities so popularity is not correlated with the id order.
    item_of = rng.permutation(items)[item_of]
    pairs = np.unique(np.stack([user_of, item_of], axis=1), axis=0)
    timestamps = rng.permutation(len(pairs)).astype(float)
    ratings = rng.integers(1, 6, len(pairs)).astype(float)
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
        Interaction(user_ids[u], item_ids[i], float(t), float(r))
        for (u, i), t, r in zip(pairs.tolist(), timestamps.tolist(), ratings.tolist(), strict=True)
    ]
    return Dataset({user: {} for user in user_ids}, item_meta, interactions, domain="movie", name="synthetic")
