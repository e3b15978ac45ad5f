"""The one interface every ranking method implements: classical baselines, MARS and STAR."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from starrec.data.schema import Dataset, RankRequest


class Recommender(ABC):
    """Ranks the candidates of a :class:`RankRequest`, best first.

    ``fit`` receives only the leakage-free training view built by the harness. ``rank`` may
    return an imperfect list: the harness repairs it and counts the repair. Methods that can
    run requests concurrently (LLM agents) override :meth:`rank_batch`.
    """

    name: str = "recommender"
    needs_data: bool = True
    """False for methods (random, identity) that can run on task files alone."""

    def fit(self, train: Dataset) -> None:  # noqa: B027 - optional hook, default: nothing to learn
        """Learn from the leakage-free training interactions."""

    @abstractmethod
    def rank(self, request: RankRequest) -> Sequence[str]:
        """Return candidate ids, best first."""

    def rank_batch(self, requests: Sequence[RankRequest]) -> list[Sequence[str] | BaseException]:
        """Rank many requests; an exception is returned in place so one failure never sinks the batch."""
        results: list[Sequence[str] | BaseException] = []
        for request in requests:
            try:
                results.append(self.rank(request))
            except Exception as error:
                results.append(error)
        return results

    def stats(self) -> dict[str, Any]:
        """Method-specific counters (LLM calls, tokens, fallbacks) merged into the eval report."""
        return {}

    def prior_orders(self) -> dict[str, list[str]]:
        """Task id -> the collaborative prior order the method started from (LLM methods).

        The harness scores these beside the method's own rankings: the difference is the LLM's
        contribution. Methods without a prior return ``{}``.
        """
        return {}


class BatchRecommender(Recommender):
    """A method that ranks requests in batches (LLM agents run them concurrently).

    Subclasses implement :meth:`rank_batch`; :meth:`rank` is a batch of one whose failure is raised.
    """

    @abstractmethod
    def rank_batch(self, requests: Sequence[RankRequest]) -> list[Sequence[str] | BaseException]:
        """Rank many requests; an exception is returned in place so one failure never sinks the batch."""

    def rank(self, request: RankRequest) -> Sequence[str]:
        result = self.rank_batch([request])[0]
        if isinstance(result, BaseException):
            raise result
        return result
