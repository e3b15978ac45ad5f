"""Shared helpers for the value-profile tests: a deterministic fake embedder and a planted catalogue."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from starrec.contract.values import SCHWARTZ_VALUES
from starrec.data.schema import Dataset, Interaction, Task

DAY = 86_400.0
NAMES = tuple(name.replace("_", "-") for name in SCHWARTZ_VALUES)


class FakeValueEmbedder:
    """A text that names a Schwartz value points along that value's axis (+ a little hashed noise)."""

    name = "fake-values"

    def __init__(self, dim: int = 16) -> None:
        self.dim = dim
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        rows = []
        for text in texts:
            lowered = text.lower().replace("_", "-")
            found = [(lowered.find(name), k) for k, name in enumerate(NAMES) if name in lowered]
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
            vector = 0.1 * np.random.default_rng(seed).standard_normal(self.dim)
            if found:
                vector[min(found)[1]] += 1.0
            rows.append(vector / np.linalg.norm(vector))
        return np.asarray(rows, dtype=np.float32)


def value_item(value: str, j: int) -> str:
    return f"{value}-{j}"


def build_value_dataset(per_value: int = 4) -> Dataset:
    """Items named after a value (genre = the value); user ``u_<value>`` watched that value's items.

    Each user's last item is the same shared item ``hub`` (its task's answer), so leakage shows.
    """
    items = {
        value_item(value, j): {"title": f"{NAMES[k]} film {j}", "genres": [NAMES[k]]}
        for k, value in enumerate(SCHWARTZ_VALUES)
        for j in range(per_value)
    }
    items["hub"] = {"title": "power film hub", "genres": ["power"]}
    users = {f"u_{value}": {"user_id": f"u_{value}"} for value in SCHWARTZ_VALUES}
    events = []
    for value in SCHWARTZ_VALUES:
        for day in range(per_value - 1):
            events.append(Interaction(f"u_{value}", value_item(value, day), (day + 1) * DAY))
        events.append(Interaction(f"u_{value}", "hub", per_value * DAY))
    return Dataset(users, items, events, domain="movie", name="values")


def hub_tasks(dataset: Dataset) -> list[Task]:
    """One task per user whose answer is ``hub``; candidates: hub, each value's unseen last item."""
    per_value = max(int(item.rsplit("-", 1)[1]) for item in dataset.items if item != "hub") + 1
    candidates = ("hub", *(value_item(v, per_value - 1) for v in SCHWARTZ_VALUES))
    return [Task(f"t_{value}", f"u_{value}", candidates, "hub") for value in SCHWARTZ_VALUES]
