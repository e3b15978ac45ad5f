"""Verbalise CF evidence with any LangChain chat model: concurrent, cached, resumable, counted.

Each answer is cached (JSON lines, keyed by the neighbour-set hash) as soon as it arrives, so an
interrupted build resumes where it stopped. Malformed answers are retried; hallucinated ids are
dropped; an anchor whose answers stay unusable falls back to the deterministic verbaliser. Every
one of those events is counted in :class:`LLMVerbaliseStats`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from starrec.data.agentsociety import read_json_lines
from starrec.tools.verbalise import (
    EvidenceGroup,
    EvidenceRequest,
    MetadataVerbaliser,
    Verbalised,
    llm_prompt,
    parse_llm_groups,
    render_evidence,
)

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

SYSTEM_PROMPT = (
    "You explain collaborative-filtering signals for a recommender. You group related items into "
    "named categories and answer only in the requested line format."
)


@dataclass(slots=True)
class LLMVerbaliseStats:
    requests: int = 0
    cache_hits: int = 0
    llm_calls: int = 0
    retries: int = 0
    errors: int = 0
    """Calls that raised (timeouts, HTTP errors)."""
    malformed: int = 0
    """Answers with no usable CATEGORY line."""
    dropped_ids: int = 0
    """Cited ids that were not among the neighbours."""
    fallbacks: int = 0
    """Anchors verbalised deterministically after every attempt failed."""
    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def model_label(model: BaseChatModel) -> str:
    """A stable name for the model (cache file name and ``evidence_by``)."""
    for attribute in ("model_name", "model", "model_id"):
        value = getattr(model, attribute, None)
        if isinstance(value, str) and value:
            return value
    return type(model).__name__


class LLMVerbaliser:
    """Cluster neighbours with a chat model; see the module docstring for the guarantees."""

    def __init__(
        self,
        model: BaseChatModel,
        cache_path: Path,
        *,
        concurrency: int = 8,
        max_attempts: int = 3,
    ) -> None:
        self.model = model
        self.label = model_label(model)
        self.cache_path = cache_path
        self.concurrency = max(1, concurrency)
        self.max_attempts = max(1, max_attempts)
        self.stats = LLMVerbaliseStats()
        self.fallback = MetadataVerbaliser()
        self._cache = self._read_cache()
        self._write_lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"llm:{self.label}"

    def _read_cache(self) -> dict[str, dict]:
        cache: dict[str, dict] = {}
        if not self.cache_path.exists():
            return cache
        for _, record in read_json_lines(self.cache_path):  # a corrupt line raises with its number
            cache[record["key"]] = record
        return cache

    def _remember(self, key: str, groups: list[EvidenceGroup]) -> None:
        record = {"key": key, "model": self.label, "groups": [asdict(group) for group in groups]}
        with self._write_lock:
            self._cache[key] = record
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            with self.cache_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    def _cache_key(self, request: EvidenceRequest) -> str:
        return f"{self.label}:{request.fingerprint()}"

    def _ask(self, request: EvidenceRequest) -> list[EvidenceGroup] | None:
        from langchain_core.messages import HumanMessage, SystemMessage

        messages = [SystemMessage(SYSTEM_PROMPT), HumanMessage(llm_prompt(request))]
        for attempt in range(self.max_attempts):
            if attempt:
                self._count("retries")
            self._count("llm_calls")
            try:
                answer = self.model.invoke(messages)
            except Exception:  # any provider error: counted, retried, then fallback
                self._count("errors")
                continue
            usage = getattr(answer, "usage_metadata", None) or {}
            self._count("input_tokens", int(usage.get("input_tokens", 0)))
            self._count("output_tokens", int(usage.get("output_tokens", 0)))
            parsed = parse_llm_groups(str(answer.content), request)
            self._count("dropped_ids", parsed.dropped_ids)
            if parsed.groups:
                return parsed.groups
            self._count("malformed")
        return None

    def _count(self, field_name: str, amount: int = 1) -> None:
        with self._write_lock:
            setattr(self.stats, field_name, getattr(self.stats, field_name) + amount)

    def verbalise(self, request: EvidenceRequest) -> Verbalised:
        """One anchor: cache hit, else the model (with retries), else the deterministic fallback."""
        self._count("requests")
        if not request.neighbours:
            return self.fallback.verbalise(request)
        key = self._cache_key(request)
        cached = self._cache.get(key)
        if cached is not None:
            self._count("cache_hits")
            groups = [EvidenceGroup(**group) for group in cached["groups"]]
            return Verbalised(render_evidence(request, groups), groups, self.name)
        groups = self._ask(request)
        if groups is None:
            self._count("fallbacks")
            result = self.fallback.verbalise(request)
            return Verbalised(result.text, result.groups, f"{self.fallback.name} (llm fallback)")
        self._remember(key, groups)
        return Verbalised(render_evidence(request, groups), groups, self.name)

    def verbalise_many(self, requests: Sequence[EvidenceRequest], progress=None) -> list[Verbalised]:
        """Verbalise concurrently (``concurrency`` calls in flight); results keep the input order.

        ``progress`` is called once per finished request (a progress-bar advance).
        """
        started = time.perf_counter()
        results: list[Verbalised | None] = [None] * len(requests)
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = {pool.submit(self.verbalise, request): index for index, request in enumerate(requests)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                if progress is not None:
                    progress()
        self.stats.seconds += time.perf_counter() - started
        return [result for result in results if result is not None]
