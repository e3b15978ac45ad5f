"""Live value mining: the ``user_values`` tool's fallback when a user has no stored profile.

Offline mining (``starrec values mine``) is the normal path: profiles are on the ``User`` nodes
and a tool call is a lookup. A graph user whose profile was never mined (mining ran on a subset,
or not at all) would otherwise get "no profile stored"; with ``Context.values_live_mining`` the
tool runs the same miner subgraph on that user's graph history, bounded to
``Context.values_live_rounds`` debate rounds, on the user_values node's own model. A profile mined
live is kept for the rest of the process, per graph, model and round limit (online stores are
read-only), concurrent calls for one user mine once, and every live run, cache hit, failure and
empty history is counted (:attr:`LiveMiningValues.counts`).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable

from langchain_core.language_models import BaseChatModel

from starrec.contract.values import ValueProfile
from starrec.data.user_view import HistoryEntry
from starrec.graphs.values_graph import MinerContext, build_values_graph
from starrec.tools.base import ValuesResult, ValuesSource
from starrec.tools.evidence import profile_result

_MINED: dict[tuple[str, ...], dict[str, ValuesResult]] = {}
"""Profiles mined live in this process: cache key (graph, model, rounds, domain) -> user -> result."""
_MINED_LOCK = threading.Lock()


class LiveMiningValues:
    """A :class:`ValuesSource` that mines a profile live where ``source`` has none stored."""

    def __init__(
        self,
        source: ValuesSource,
        history: Callable[[str], list[HistoryEntry]],
        chat_model: BaseChatModel,
        miner_context: MinerContext,
        domain: str = "item",
        cache_key: tuple[str, ...] | None = None,
    ) -> None:
        self.source = source
        self.history = history
        self.miner_context = miner_context
        self.domain = domain
        self.graph = build_values_graph(chat_model=chat_model, name="values_live")
        self.counts: Counter[str] = Counter()
        with _MINED_LOCK:  # no key: a cache of this instance only
            self._mined = _MINED.setdefault(cache_key, {}) if cache_key is not None else {}
        self._lock = threading.Lock()
        self._in_flight: dict[tuple[int, str], tuple[asyncio.Lock, list[int]]] = {}
        """(loop, user) -> its lock and how many callers hold or await it; dropped at zero, so a
        long-lived app keeps no lock per user it ever mined."""

    def has_value_profiles(self) -> bool:
        """Always: a user without a stored profile is mined."""
        return True

    def value_profile(self, user_id: str) -> ValuesResult:
        """The stored profile, else one mined now (synchronous callers: not inside a running loop)."""
        return asyncio.run(self.avalue_profile(user_id))

    async def avalue_profile(self, user_id: str) -> ValuesResult:
        stored = await asyncio.to_thread(self.source.value_profile, user_id)
        if stored.found:
            return stored
        key = (id(asyncio.get_running_loop()), user_id)
        with self._lock:  # one mining per user at a time on this loop; the others wait for its result
            user_lock, users = self._in_flight.setdefault(key, (asyncio.Lock(), [0]))
            users[0] += 1
        try:
            async with user_lock:
                with self._lock:
                    cached = self._mined.get(user_id)
                if cached is not None:
                    self.counts["live_cached"] += 1
                    return cached.model_copy(update={"cached": True})
                result = await self._mine(user_id, stored)
                if result.found:
                    with self._lock:
                        self._mined[user_id] = result
            return result
        finally:
            with self._lock:
                users[0] -= 1
                if users[0] == 0:
                    del self._in_flight[key]

    async def _mine(self, user_id: str, stored: ValuesResult) -> ValuesResult:
        history = await asyncio.to_thread(self.history, user_id)
        if not history:
            self.counts["live_empty_history"] += 1
            return stored
        try:
            state = await self.graph.ainvoke(
                {"user_id": user_id, "domain": self.domain, "history": history}, context=self.miner_context
            )
        except Exception as failure:  # counted; the agent still runs, on the history alone
            self.counts["live_failed"] += 1
            return stored.model_copy(
                update={"evidence": f"{stored.evidence}\n(live mining failed: {type(failure).__name__})"}
            )
        profile = ValueProfile.from_dict(state["profile"])
        if profile.meta.get("empty"):
            self.counts["live_no_usable_proposal"] += 1
            return stored
        self.counts["live_mined"] += 1
        return profile_result(user_id, profile, list(stored.queries), source="live")


def live_miner_context(
    llm: str, base_url: str | None, rounds: int, constrained_decoding: str, max_new_tokens: int
) -> MinerContext:
    """The miner's knobs for a live run: its defaults, bounded to ``rounds`` debate rounds."""
    return MinerContext(
        llm=llm,
        base_url=base_url,
        max_rounds=rounds,
        constrained_decoding="vllm" if constrained_decoding == "vllm" else "none",
        max_new_tokens=max_new_tokens,
    )
