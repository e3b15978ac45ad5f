"""Stable seeding: the same (seed, key...) gives the same draw on every machine and Python run.

Python's ``hash()`` is salted per process for strings, so it must never seed anything that has
to be reproducible (task shuffles, negative sampling, tie-breaking).
"""

from __future__ import annotations

import hashlib
import random


def stable_seed(*parts: object) -> int:
    """A 64-bit integer digest of ``parts`` (joined with a separator that ids never contain)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def seeded_rng(*parts: object) -> random.Random:
    """A generator seeded by :func:`stable_seed`."""
    return random.Random(stable_seed(*parts))


def stable_fraction(*parts: object) -> float:
    """A uniform-looking number in [0, 1) fixed by ``parts`` (a seeded tie-breaking key)."""
    return stable_seed(*parts) / 2.0**64
