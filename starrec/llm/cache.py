"""An opt-in, persistent LLM call cache behind LangChain's ``BaseCache`` interface (one SQLite file).

``make_chat_model`` passes it as the chat model's ``cache=`` when ``LLMSpec.cache`` names a file
(``--llm-cache PATH`` on ``starrec teach``/``eval``/``demo``, ``Context.llm_cache`` for MARS), so a
rerun of the same requests is answered from disk: same outputs, no tokens paid.

The key is LangChain's own: the serialised prompt messages (ids removed) and the ``llm_string``,
which holds the model's identity and sampling settings (model, endpoint, temperature, seed, max
tokens) plus the call's bound parameters (stop, tools, tool choice, response format / structured
output schema). starrec's chat models make sure of that: ``EndpointChatModel`` keeps everything
but its transport knobs (concurrency, retries, timeout, rate limit), ``LocalChatModel`` lists every
sampling field. Both are hashed (SHA-256) into the row key.

Sampling and the cache: with ``temperature > 0`` and a fixed ``seed`` a request is deterministic
on vLLM (the seed is per request), so replaying it is what a rerun would have produced. With
``temperature > 0`` and no seed, the cache replays the first sample it stored for that request:
every later "sample" is the same one, which defeats best-of-k or several teacher passes at the same
settings. Use a seed (MARS's ``Context.seed`` is passed on) or no cache there.

Concurrency: one connection per process and file, guarded by a lock (async callers go through a
worker thread, so a busy database never stalls the event loop); SQLite's WAL journal lets several
processes (``teach --shard`` on one machine, parallel evals) read while one writes, and a busy
timeout makes writers wait their turn. Two processes that miss the same key both call the model
and the last write wins; both rows hold a valid answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.messages import AIMessage, message_to_dict, messages_from_dict
from langchain_core.outputs import ChatGeneration, Generation, LLMResult

CACHE_METADATA_KEY = "starrec_llm_cache"
"""``response_metadata`` key on answers that passed through the cache: ``"hit"`` or ``"miss"``."""
KEY_VERSION = "1"
"""Part of every row key: bump it when the stored format changes, and old rows are simply missed."""
BUSY_TIMEOUT_S = 60.0

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS generations ("
    " key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL)"
)


def cache_key(prompt: str, llm_string: str) -> str:
    """SHA-256 of the format version, the model settings and the prompt."""
    digest = hashlib.sha256()
    for part in (KEY_VERSION, llm_string, prompt):
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


def _encode(generations: Sequence[Generation]) -> str:
    """JSON of the generations (messages as LangChain message dicts, without run ids or cache marks)."""
    items: list[dict[str, Any]] = []
    for generation in generations:
        if isinstance(generation, ChatGeneration):
            message = generation.message
            metadata = {k: v for k, v in message.response_metadata.items() if k != CACHE_METADATA_KEY}
            stored = message.model_copy(update={"id": None, "response_metadata": metadata})
            items.append({"message": message_to_dict(stored), "info": generation.generation_info})
        else:
            items.append({"text": generation.text, "info": generation.generation_info})
    return json.dumps(items, ensure_ascii=False)


def _decode(value: str) -> list[Generation]:
    generations: list[Generation] = []
    for item in json.loads(value):
        if "message" in item:
            [message] = messages_from_dict([item["message"]])
            message.response_metadata = {**message.response_metadata, CACHE_METADATA_KEY: "hit"}
            generations.append(ChatGeneration(message=message, generation_info=item.get("info")))
        else:
            generations.append(Generation(text=item["text"], generation_info=item.get("info")))
    return generations


def _mark(generations: Sequence[Generation], status: str) -> None:
    for generation in generations:
        if isinstance(generation, ChatGeneration) and isinstance(generation.message, AIMessage):
            generation.message.response_metadata[CACHE_METADATA_KEY] = status


def cache_status(response: LLMResult) -> str | None:
    """``"hit"``/``"miss"`` when the call's answer went through an :class:`SQLiteLLMCache`, else None."""
    for generations in response.generations:
        for generation in generations:
            message = getattr(generation, "message", None)
            status = getattr(message, "response_metadata", {}).get(CACHE_METADATA_KEY)
            if status:
                return str(status)
    return None


class SQLiteLLMCache(BaseCache):
    """LangChain cache in one SQLite file; counts hits, misses and answers it could not store."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._connection = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None
        )
        with self._lock:
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=NORMAL")
            self._connection.execute(_SCHEMA)
        self.hits = 0
        self.misses = 0
        self.unstorable = 0
        """Answers that are not JSON-serialisable (never stored; the next identical call misses)."""

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        key = cache_key(prompt, llm_string)
        with self._lock:
            row = self._connection.execute("SELECT value FROM generations WHERE key = ?", (key,)).fetchone()
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
        return _decode(row[0])

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        try:
            value = _encode(return_val)
        except (TypeError, ValueError):
            with self._lock:
                self.unstorable += 1
            return
        key = cache_key(prompt, llm_string)
        with self._lock:
            self._connection.execute(
                "INSERT OR REPLACE INTO generations (key, value, created) VALUES (?, ?, ?)",
                (key, value, time.time()),
            )
        _mark(return_val, "miss")

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        return await asyncio.to_thread(self.lookup, prompt, llm_string)

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        await asyncio.to_thread(self.update, prompt, llm_string, return_val)

    def clear(self, **kwargs: Any) -> None:
        with self._lock:
            self._connection.execute("DELETE FROM generations")

    async def aclear(self, **kwargs: Any) -> None:
        await asyncio.to_thread(self.clear)

    def __len__(self) -> int:
        with self._lock:
            return int(self._connection.execute("SELECT COUNT(*) FROM generations").fetchone()[0])

    def stats(self) -> dict[str, Any]:
        """Counters of this process since the cache was opened."""
        with self._lock:
            return {"path": str(self.path), "hits": self.hits, "misses": self.misses,
                    "unstorable": self.unstorable}  # fmt: skip


_OPEN: dict[tuple[int, str], SQLiteLLMCache] = {}
_OPEN_LOCK = threading.Lock()


def open_llm_cache(path: str | Path) -> SQLiteLLMCache:
    """The process's cache for ``path``: every model built for the same file shares one connection and
    one set of counters (a forked child opens its own connection)."""
    resolved = str(Path(path).expanduser().resolve())
    key = (os.getpid(), resolved)
    with _OPEN_LOCK:
        if key not in _OPEN:
            try:
                _OPEN[key] = SQLiteLLMCache(resolved)
            except sqlite3.Error as error:
                raise ValueError(f"--llm-cache {path}: cannot open it as an SQLite file ({error})") from error
        return _OPEN[key]
