"""Shared fixtures: real data (MovieLens-100k, the Yelp slice, the official task folders) and a tiny dataset.

MovieLens is fetched once into the cache directory (``STARREC_CACHE_DIR``, else the settings
default), so CI and repeated runs reuse it. ``../shared`` beside the repository holds the Yelp
slice and the official AgentSociety task folders; tests that need it skip cleanly without it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from starrec.config import get_settings
from starrec.data import fetch_movielens_100k, load_dataset
from starrec.data.schema import Dataset, Interaction

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
OFFICIAL_DOMAINS = ("amazon", "goodreads", "yelp")


def shared_path(*parts: str) -> Path:
    """A path under ``../shared``, skipping the calling test when it is absent."""
    path = SHARED_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found (../shared beside the repository holds the shared data)")
    return path


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    """MovieLens-100k in the AgentSociety layout, fetched once into the cache directory."""
    return fetch_movielens_100k(get_settings().cache_dir / "datasets" / "ml-100k")


@pytest.fixture(scope="session")
def ml100k(ml100k_dir: Path) -> Dataset:
    return load_dataset(ml100k_dir)


@pytest.fixture(scope="session")
def yelp_slice_dir() -> Path:
    return shared_path("data", "yelp-slice")


@pytest.fixture(scope="session")
def official_tasks_dir() -> Callable[[str], Path]:
    """``official_tasks_dir("amazon")`` -> the published task folder (skips when ../shared is absent)."""

    def locate(domain: str) -> Path:
        if domain not in OFFICIAL_DOMAINS:
            raise ValueError(f"unknown domain {domain!r}; choose one of {OFFICIAL_DOMAINS}")
        return shared_path("data", "agentsociety-tasks", domain)

    return locate


def build_tiny_dataset() -> Dataset:
    """Five users, eight movies, two genres; timestamps are day numbers so order is obvious.

    ``u1`` and ``u2`` like action, ``u3`` drama, ``u4`` switches from action to drama late,
    ``u5`` has a single interaction. Item ``i1`` is the most popular, ``i8`` is never seen.
    """
    genres = {"i1": "Action", "i2": "Action", "i3": "Action", "i4": "Action",
              "i5": "Drama", "i6": "Drama", "i7": "Drama", "i8": "Drama"}
    items = {item: {"item_id": item, "title": f"Movie {item[1:]}", "genres": [genre]}
             for item, genre in genres.items()}
    users = {user: {"user_id": user, "age": 20 + index}
             for index, user in enumerate(("u1", "u2", "u3", "u4", "u5"))}
    day = 86_400.0
    events = [
        ("u1", "i1", 1), ("u1", "i2", 2), ("u1", "i3", 3), ("u1", "i4", 4),
        ("u2", "i1", 1), ("u2", "i2", 3), ("u2", "i3", 5),
        ("u3", "i5", 2), ("u3", "i6", 4), ("u3", "i1", 6), ("u3", "i7", 8),
        ("u4", "i1", 1), ("u4", "i2", 2), ("u4", "i3", 3), ("u4", "i5", 9), ("u4", "i6", 10),
        ("u5", "i1", 7),
    ]
    interactions = [
        Interaction(user, item, when * day, stars=4.0, text=f"{user} on {item}", review_id=f"r-{user}-{item}")
        for user, item, when in events
    ]
    return Dataset(users, items, interactions, domain="movie", name="tiny")


@pytest.fixture
def tiny_dataset() -> Dataset:
    """A fresh hand-built :class:`Dataset` (see :func:`build_tiny_dataset`)."""
    return build_tiny_dataset()
