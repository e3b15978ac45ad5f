"""Ranker: all candidates, best first, each exactly once; optionally fused with the CF evidence.

The LLM's list is made a permutation by :func:`starrec.eval.repair.repair_ranking` (hallucinated
ids dropped, duplicates removed, missing ids appended in **CF-evidence order**, ties in the order
the candidates were shown) and every repair is counted. ``ranker_fusion="rrf"`` then fuses that
order with the CF order by reciprocal-rank fusion, so a weak model cannot push MARS below its
own collaborative evidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field, field_validator

from starrec.agents.base import AgentEnv, Counters, UserView, ask, format_analyses, render
from starrec.eval.repair import RankingRepair, repair_ranking
from starrec.llm import textproto
from starrec.tools.base import EvidenceSource, QueryTrace

CF_HINT_SIZE = 5


class Ranking(BaseModel):
    thinking: str = ""
    ranking: list[str] = Field(default_factory=list, description="Candidate ids, best first.")

    @field_validator("ranking", mode="before")
    @classmethod
    def _ids(cls, value: Any) -> Any:
        # Small models write numeric ids as numbers, or entries like "[42] Title".
        if isinstance(value, list):
            return [str(v).strip() for v in value]
        return value


def cf_scores(
    evidence: EvidenceSource, recent_items: Sequence[str], candidates: Sequence[str], k: int
) -> tuple[dict[str, float], list[QueryTrace]]:
    """Score candidates by Item-CF co-occurrence with the user's recent items (newer items weigh more)."""
    wanted = set(candidates)
    scores = dict.fromkeys(candidates, 0.0)
    traces: list[QueryTrace] = []
    for age, item in enumerate(reversed(list(recent_items))):
        result = evidence.item_cf(item, k)
        traces.extend(result.queries)
        weight = 1.0 / (1 + 0.1 * age)
        for neighbour in result.neighbours:
            if neighbour.id in wanted:
                scores[neighbour.id] += weight * neighbour.shared
    return scores, traces


def order_by_score(scores: dict[str, float], candidates: Sequence[str]) -> list[str]:
    """Candidates by descending score; ties keep the shown (shuffled) order."""
    position = {item: index for index, item in enumerate(candidates)}
    return sorted(candidates, key=lambda item: (-scores.get(item, 0.0), position[item]))


def reciprocal_rank_fusion(orders: Sequence[Sequence[str]], k: int = 60) -> list[str]:
    """Fuse full rankings of the same items: score = sum 1/(k + rank); ties follow the first order."""
    if not orders:
        return []
    scores: dict[str, float] = {}
    for order in orders:
        for rank, item in enumerate(order, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    first = {item: index for index, item in enumerate(orders[0])}
    return sorted(first, key=lambda item: (-scores[item], first[item]))


def cf_hint(scores: dict[str, float], order: Sequence[str]) -> str:
    top = [item for item in order if scores.get(item, 0.0) > 0][:CF_HINT_SIZE]
    if not top:
        return ""
    return (
        "Collaborative hint: people who liked the user's recent items most often also chose: "
        + ", ".join(top)
        + "."
    )


async def llm_ranking(
    env: AgentEnv, view: UserView, analyses: dict[str, dict[str, Any]], hint: str, counters: Counters
) -> tuple[list[str], str]:
    """The ranker LLM's raw list (may be invalid) and its thinking."""
    candidates = [c["id"] for c in view.candidates]
    system = render("ranker", env.words)
    user = (
        f"{view.history_text()}\n\nAnalysts' conclusions:\n{format_analyses(analyses)}\n\n"
        + (f"{hint}\n\n" if hint else "")
        + f"Candidates ({len(candidates)}):\n{view.candidates_text()}\n\nRank all {len(candidates)} ids."
    )
    # Unusable JSON: take the candidate ids in the order they appear in the text (then repaired).
    output, _ = await ask(
        env,
        system,
        user,
        Ranking,
        lambda text: Ranking(ranking=textproto.extract_ids(text, candidates)),
        counters,
    )
    return output.ranking, output.thinking


def repair_counts(repair: RankingRepair) -> dict[str, int]:
    return {f"ranking_{name}": count for name, count in repair.counts().items() if count}


def finalise(
    raw: Sequence[str],
    candidates: Sequence[str],
    cf_order: Sequence[str],
    fusion: str,
    rrf_k: int,
    counters: Counters,
) -> tuple[list[str], list[str]]:
    """(repaired LLM order, final ranking) — both permutations of ``candidates``."""
    repaired, repair = repair_ranking(raw, candidates, fallback=cf_order or None)
    for name, count in repair_counts(repair).items():
        counters.count(name, count)
    if repair.needed:
        counters.count("ranking_repaired")
    if fusion == "rrf" and cf_order:
        return repaired, reciprocal_rank_fusion([repaired, cf_order], rrf_k)
    return repaired, repaired
