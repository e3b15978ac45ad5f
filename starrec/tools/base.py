"""Data types shared by the CF tools, the graph stores and every consumer of tool evidence."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field, model_validator

from starrec.contract.tool_names import AgentToolName
from starrec.contract.trajectory import QueryTrace

if TYPE_CHECKING:
    from starrec.tools.candidate_cf import CandidateCFResult


class Neighbour(BaseModel):
    """A collaborative neighbour: an item (Item-CF, User-CF) with its co-occurrence count."""

    id: str
    title: str = ""
    shared: int = Field(description="Distinct users (Item-CF) or similar users (User-CF) behind the link.")


class CFResult(BaseModel):
    """What a CF tool returns: verbalised evidence plus the structured neighbours behind it."""

    tool: AgentToolName
    anchor: str = Field(description="The item id (item_cf) or user id (user_cf) asked about.")
    found: bool = Field(description="False when the anchor is not in the graph; evidence then says so.")
    evidence: str = Field(description="Natural-language evidence (named categories with representative ids).")
    neighbours: list[Neighbour] = Field(default_factory=list)
    queries: list[QueryTrace] = Field(default_factory=list)


class ValuesResult(BaseModel):
    """What the ``user_values`` tool returns: the stored profile as text plus its JSON."""

    user_id: str
    found: bool = Field(description="False when no profile is stored for the user; evidence then says so.")
    evidence: str
    profile: dict[str, Any] | None = None
    queries: list[QueryTrace] = Field(default_factory=list)
    source: Literal["stored", "live", "none"] | None = Field(
        default=None,
        description="Where the profile came from: the graph, a live mining run (none stored), or nowhere "
        "(default: stored when found, else none).",
    )
    cached: bool = Field(default=False, description="A live profile answered from the process cache.")

    @model_validator(mode="after")
    def _default_source(self) -> ValuesResult:
        if self.source is None:
            self.source = "stored" if self.found else "none"
        return self


@runtime_checkable
class ValuesSource(Protocol):
    """An evidence source that also holds mined value profiles (``starrec values mine``)."""

    def value_profile(self, user_id: str) -> ValuesResult: ...

    def has_value_profiles(self) -> bool: ...


class EvidenceSource(Protocol):
    """What agents need from the CF layer: one lookup per tool call."""

    def item_cf(self, item_id: str, k: int = 10) -> CFResult: ...

    def user_cf(self, user_id: str, k: int = 10) -> CFResult: ...

    def candidate_cf(
        self,
        user_id: str,
        candidates: Sequence[str],
        history: Sequence[str] | None = None,
        k: int | None = None,
    ) -> CandidateCFResult:
        """Every candidate scored against the user's history, plus the prior order."""
        ...


def answers_in_memory(source: object, call: str) -> bool:
    """Whether ``source`` answers ``call`` (a method name such as ``"candidate_cf"``) from memory.

    A caller on an event loop then calls it inline instead of through ``asyncio.to_thread``: for a
    sub-millisecond, GIL-holding computation the thread hop costs more than the call (at concurrency
    50 the ranker's hop alone took about 6 ms of CPU per MARS run, ``benchmarks/results/mars.md``).
    Sources that may block on a database or the network keep the thread; a source without an
    ``answers_in_memory`` method is assumed to block.
    """
    check = getattr(source, "answers_in_memory", None)
    return bool(check(call)) if callable(check) else False


async def candidate_cf_async(
    source: EvidenceSource,
    user_id: str,
    candidates: Sequence[str],
    history: Sequence[str] | None = None,
    k: int | None = None,
) -> CandidateCFResult:
    """``source.candidate_cf`` from an event loop: inline when :func:`answers_in_memory` says so,
    otherwise in a thread so concurrent runs keep going while the graph is queried."""
    if answers_in_memory(source, "candidate_cf"):
        return source.candidate_cf(user_id, candidates, history, k)
    return await asyncio.to_thread(source.candidate_cf, user_id, candidates, history, k)
