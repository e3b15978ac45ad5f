"""LLM usage accounting: calls, tokens, seconds, errors, repairs, cache hits and money per graph node.

Attach ``LLMUsageCallback`` to a run (``config={"callbacks": [usage]}``); the node is the LangGraph
``langgraph_node`` metadata, else the first tag, else ``"llm"``. Repairs come from the
``starrec.repair`` custom events fired by the structured-output path.

Money comes from one price lookup, :func:`price_for`, over the table shipped in
``starrec/llm/prices.json`` (list prices per 1M tokens, dated; ``STARREC_PRICES`` adds to it).
Self-hosted endpoints and in-process models cost 0; a hosted model the table does not know costs
``None`` (unknown, with a warning), never 0. A call answered from the LLM cache
(:mod:`starrec.llm.cache`) costs 0: nobody was paid for it.
"""

from __future__ import annotations

import ipaddress
import json
import re
import threading
import time
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult

from starrec.config import get_settings
from starrec.llm.cache import cache_status
from starrec.llm.structured import REPAIR_EVENT

LOCAL_LLM_TYPES = frozenset({"starrec-local-transformers", "starrec-scripted", "chat-ollama"})
"""``_llm_type`` of chat models that run on the caller's own hardware (never billed per token)."""
_DATED_SUFFIX = r"(?:-\d{4}-\d{2}-\d{2}|-\d{8}|-latest)?"
_UNPRICED_WARNED: set[str] = set()
_WARN_LOCK = threading.Lock()


@dataclass(frozen=True)
class Price:
    """Dollars per 1M input (prompt) and output (completion) tokens."""

    input_per_mtok: float
    output_per_mtok: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) / 1e6


FREE = Price(0.0, 0.0)


def _read_table(text: str, where: str) -> dict[str, Price]:
    try:
        models = json.loads(text)["models"]
        return {
            str(name).lower(): Price(float(entry["input"]), float(entry["output"]))
            for name, entry in models.items()
        }
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(
            f"{where}: not a price table ({type(error).__name__}: {error}); expected "
            '{"models": {"MODEL": {"input": DOLLARS_PER_1M, "output": DOLLARS_PER_1M}}}'
        ) from error


@lru_cache(maxsize=8)
def _price_table(extra: str) -> dict[str, Price]:
    packaged = resources.files("starrec.llm") / "prices.json"
    table = _read_table(packaged.read_text(encoding="utf-8"), "starrec/llm/prices.json")
    if extra:
        path = Path(extra)
        if not path.is_file():
            raise FileNotFoundError(f"STARREC_PRICES={extra}: no such price table")
        table.update(_read_table(path.read_text(encoding="utf-8"), str(path)))
    return table


def price_table() -> dict[str, Price]:
    """The packaged list prices, with ``STARREC_PRICES``'s models laid over them."""
    extra = get_settings().prices
    return _price_table(str(extra) if extra else "")


def is_self_hosted(base_url: str | None) -> bool:
    """True for endpoints on this machine or a private network (vLLM, llama.cpp, a balancer in front).

    Loopback, private and link-local addresses, ``localhost`` and ``*.local``/``*.internal``/
    ``*.lan`` names, and single-label host names (a Docker or Kubernetes service such as
    ``http://vllm:8000``) count as self-hosted.
    """
    if not base_url:
        return False
    host = (urlsplit(base_url).hostname or "").lower()
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost" or "." not in host or host.endswith((".local", ".internal", ".lan"))
    return address.is_loopback or address.is_private or address.is_link_local


def price_for(model: str, *, base_url: str | None = None, local: bool = False) -> Price | None:
    """The one price lookup: 0 for in-process and self-hosted models, the table's list price for a
    hosted model (exact name, or the name plus a date/``-latest`` suffix), else None (unknown)."""
    if local or is_self_hosted(base_url):
        return FREE
    extra = get_settings().prices
    return _listed_price(model.strip().lower(), str(extra) if extra else "")


@lru_cache(maxsize=256)
def _listed_price(name: str, extra: str) -> Price | None:
    """Memoised per table: the recorder prices every call of a run, and the suffix match scans."""
    table = _price_table(extra)
    if name in table:
        return table[name]
    for known in sorted(table, key=len, reverse=True):
        if re.fullmatch(re.escape(known) + _DATED_SUFFIX, name):
            return table[known]
    return None


def warn_unpriced(model: str) -> None:
    """Say once per process and model that its cost is unknown (reported as null, not 0)."""
    with _WARN_LOCK:
        if model in _UNPRICED_WARNED:
            return
        _UNPRICED_WARNED.add(model)
    warnings.warn(
        f"no price for hosted model {model!r} in starrec/llm/prices.json: its cost is reported as null; "
        "add it to a JSON table and set STARREC_PRICES=PATH",
        stacklevel=2,
    )


@dataclass(frozen=True)
class ModelIdentity:
    """Which model answered a call and where, as far as pricing needs to know."""

    model: str
    base_url: str | None = None
    local: bool = False

    @property
    def price(self) -> Price | None:
        return price_for(self.model, base_url=self.base_url, local=self.local)


def identify_model(
    serialized: Mapping[str, Any] | None,
    invocation_params: Mapping[str, Any] | None,
    metadata: Mapping[str, Any] | None,
) -> ModelIdentity:
    """The model of a call from what LangChain hands ``on_chat_model_start``: the LangSmith model name
    in the metadata, the endpoint from the serialised constructor (``openai_api_base``/``base_url``)
    and ``_llm_type`` for in-process models."""
    params = invocation_params or {}
    model = (metadata or {}).get("ls_model_name") or params.get("model") or params.get("model_name") or ""
    constructor = (serialized or {}).get("kwargs") or {}
    base_url = constructor.get("openai_api_base") or constructor.get("base_url") or params.get("base_url")
    return ModelIdentity(
        model=str(model),
        base_url=str(base_url) if base_url else None,
        local=params.get("_type") in LOCAL_LLM_TYPES,
    )


def call_cost(
    identity: ModelIdentity, prompt_tokens: int, completion_tokens: int, cache: str | None = None
) -> float | None:
    """Dollars one call cost: 0 from the cache, None (and a warning) for an unpriced hosted model."""
    if cache == "hit":
        return 0.0
    price = identity.price
    if price is None:
        warn_unpriced(identity.model)
        return None
    return price.cost(prompt_tokens, completion_tokens)


def add_costs(costs: list[float | None]) -> float | None:
    """A total that stays unknown (None) when any part is unknown."""
    return None if any(cost is None for cost in costs) else float(sum(c for c in costs if c is not None))


@dataclass
class NodeUsage:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    errors: int = 0
    repairs: Counter[str] = field(default_factory=Counter)
    cache_hits: int = 0
    cache_misses: int = 0
    cost_usd: float | None = 0.0
    """Dollars; None once any call of an unpriced hosted model is in the total."""


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
    """Thread-safe LLM usage totals per node and per model (works for sync and async runs).

    ``by_model`` splits the same calls by the model that served them (MARS with per-node models).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started: dict[UUID, tuple[str, float, ModelIdentity]] = {}
        self.by_node: dict[str, NodeUsage] = {}
        self.by_model: dict[str, NodeUsage] = {}

    def _usage(self, node: str) -> NodeUsage:
        return self.by_node.setdefault(node, NodeUsage())

    def _start(self, serialized: dict[str, Any] | None, run_id: UUID, kwargs: dict[str, Any]) -> None:
        tags, metadata = kwargs.get("tags"), kwargs.get("metadata")
        identity = identify_model(serialized, kwargs.get("invocation_params"), metadata)
        with self._lock:
            self._started[run_id] = (_node(tags, metadata), time.perf_counter(), identity)

    def _finish(self, run_id: UUID) -> tuple[NodeUsage, float, ModelIdentity]:
        node, started, identity = self._started.pop(
            run_id, ("llm", time.perf_counter(), ModelIdentity(model=""))
        )
        return self._usage(node), time.perf_counter() - started, identity

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[Any]], *, run_id: UUID, **kwargs: Any
    ) -> None:
        self._start(serialized, run_id, kwargs)

    def on_llm_start(
        self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID, **kwargs: Any
    ) -> None:
        self._start(serialized, run_id, kwargs)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        prompt, completion = _token_usage(response)
        cache = cache_status(response)
        with self._lock:
            usage, seconds, identity = self._finish(run_id)
            cost = call_cost(identity, prompt, completion, cache)
            for total in (usage, self.by_model.setdefault(identity.model or "unknown", NodeUsage())):
                total.calls += 1
                total.prompt_tokens += prompt
                total.completion_tokens += completion
                total.seconds += seconds
                total.cache_hits += cache == "hit"
                total.cache_misses += cache == "miss"
                total.cost_usd = add_costs([total.cost_usd, cost])

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            usage, seconds, identity = self._finish(run_id)
            for total in (usage, self.by_model.setdefault(identity.model or "unknown", NodeUsage())):
                total.calls += 1
                total.errors += 1
                total.seconds += seconds

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
                total.cache_hits += usage.cache_hits
                total.cache_misses += usage.cache_misses
                total.cost_usd = add_costs([total.cost_usd, usage.cost_usd])
            return total

    def as_dict(self, by: str = "node") -> dict[str, dict[str, Any]]:
        """``{node: {calls, prompt_tokens, completion_tokens, seconds, errors, repairs, cache_hits,
        cache_misses, cost_usd}}``; ``by="model"``: the same keyed by model (repairs stay per node)."""
        if by not in ("node", "model"):
            raise ValueError(f"LLMUsageCallback.as_dict(by={by!r}): use 'node' or 'model'")
        with self._lock:
            totals = self.by_node if by == "node" else self.by_model
            return {key: {**asdict(usage), "repairs": dict(usage.repairs)} for key, usage in totals.items()}
