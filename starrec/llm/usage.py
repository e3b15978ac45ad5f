"""LLM usage accounting per graph node: calls, tokens, seconds, errors and repairs.

Attach ``LLMUsageCallback`` to a run (``config={"callbacks": [usage]}``); the node is the LangGraph
``langgraph_node`` metadata, else the first tag, else ``"llm"``. Repairs come from the
``starrec.repair`` custom events fired by the structured-output path.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult

from starrec.llm.structured import REPAIR_EVENT


@dataclass
class NodeUsage:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    errors: int = 0
    repairs: Counter[str] = field(default_factory=Counter)


def _node(tags: list[str] | None, metadata: dict[str, Any] | None) -> str:
    node = (metadata or {}).get("langgraph_node")
    if node:
        return str(node)
    return tags[0] if tags else "llm"


def _token_usage(response: LLMResult) -> tuple[int, int]:
    prompt = completion = 0
    for generations in response.generations:
        for generation in generations:
            usage = getattr(getattr(generation, "message", None), "usage_metadata", None) or {}
            prompt += int(usage.get("input_tokens", 0))
            completion += int(usage.get("output_tokens", 0))
    if prompt == completion == 0 and response.llm_output:
        usage = response.llm_output.get("token_usage") or {}
        prompt, completion = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
    return prompt, completion


class LLMUsageCallback(BaseCallbackHandler):
    """Thread-safe per-node LLM usage totals (works for sync and async runs)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started: dict[UUID, tuple[str, float]] = {}
        self.by_node: dict[str, NodeUsage] = {}

    def _usage(self, node: str) -> NodeUsage:
        return self.by_node.setdefault(node, NodeUsage())

    def _start(self, run_id: UUID, tags: list[str] | None, metadata: dict[str, Any] | None) -> None:
        with self._lock:
            self._started[run_id] = (_node(tags, metadata), time.perf_counter())

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[Any]], *, run_id: UUID, **kwargs: Any
    ) -> None:
        self._start(run_id, kwargs.get("tags"), kwargs.get("metadata"))

    def on_llm_start(
        self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID, **kwargs: Any
    ) -> None:
        self._start(run_id, kwargs.get("tags"), kwargs.get("metadata"))

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        prompt, completion = _token_usage(response)
        with self._lock:
            node, started = self._started.pop(run_id, ("llm", time.perf_counter()))
            usage = self._usage(node)
            usage.calls += 1
            usage.prompt_tokens += prompt
            usage.completion_tokens += completion
            usage.seconds += time.perf_counter() - started

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            node, started = self._started.pop(run_id, ("llm", time.perf_counter()))
            usage = self._usage(node)
            usage.calls += 1
            usage.errors += 1
            usage.seconds += time.perf_counter() - started

    def on_custom_event(
        self,
        name: str,
        data: Any,
        *,
        run_id: UUID,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if name != REPAIR_EVENT:
            return
        with self._lock:
            self._usage(_node(tags, metadata)).repairs[str(data.get("kind", "unknown"))] += 1

    def totals(self) -> NodeUsage:
        """All nodes added up."""
        with self._lock:
            total = NodeUsage()
            for usage in self.by_node.values():
                total.calls += usage.calls
                total.prompt_tokens += usage.prompt_tokens
                total.completion_tokens += usage.completion_tokens
                total.seconds += usage.seconds
                total.errors += usage.errors
                total.repairs.update(usage.repairs)
            return total

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """``{node: {calls, prompt_tokens, completion_tokens, seconds, errors, repairs}}``."""
        with self._lock:
            return {
                node: {**asdict(usage), "repairs": dict(usage.repairs)}
                for node, usage in self.by_node.items()
            }
