"""Ranker: all candidates, best first, each exactly once, grounded in the collaborative prior.

The prior is one ``candidate_cf`` call (every candidate scored from the whole graph, see
:mod:`starrec.tools.candidate_cf`). The LLM sees the candidates in prior order with their
evidence. Its list is made a permutation by :func:`starrec.eval.repair.repair_ranking` (hallucinated
ids dropped, duplicates removed, missing ids appended in **prior order**) and every repair is
counted. Then ``ranker_fusion`` decides the final order:

- ``agreement`` (default): :func:`starrec.eval.fusion.agreement_fusion`; the LLM moves candidates
  only as far as its order agrees with the evidence beyond chance, so a weak model cannot pull
  MARS below its prior;
- ``rrf``: equal-weight reciprocal-rank fusion of the LLM order and the prior;
- ``llm``: the raw (repaired) LLM order.

``ranker_prior="neighbour_lists"`` keeps the old prior (one stored top-k Item-CF lookup per recent
item, candidates outside those lists score 0) for comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field, field_validator

from starrec.agents.analyst import format_analyses
from starrec.agents.env import AgentEnv, Counters
from starrec.agents.structured_answer import RANKING_PRESENCE_PENALTY, Constraint, ask
from starrec.agents.templates import render
from starrec.contract.trajectory import QueryTrace
from starrec.data.user_view import UserView, format_entry
from starrec.eval.fusion import FusionResult, agreement_fusion
from starrec.eval.repair import RankingRepair, repair_ranking
from starrec.llm.candidate_ids import extract_ids
from starrec.llm.constraints import answer_schema
from starrec.tools.base import EvidenceSource, candidate_cf_async
from starrec.tools.candidate_cf import CandidateCFResult

CF_HINT_SIZE = 5
RANKER_THINKING_CHARS = 120
"""The ranker's constrained thinking is short: its token budget belongs to the 20 ids."""


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


def neighbour_list_scores(
    evidence: EvidenceSource, recent_items: Sequence[str], candidates: Sequence[str], k: int
) -> tuple[dict[str, float], list[QueryTrace]]:
    """The old prior: candidates found in the stored top-k Item-CF lists of the recent items.

    One lookup per recent item; a candidate outside every list scores 0. Kept to measure against.
    """
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


async def candidate_prior(
    evidence: EvidenceSource, user_id: str, history: Sequence[str], candidates: Sequence[str]
) -> CandidateCFResult:
    """The prior: one candidate-scoped CF call over the run's own (leakage-free) history."""
    return await candidate_cf_async(evidence, user_id, candidates, history)


def cf_hint(scores: dict[str, float], order: Sequence[str]) -> str:
    top = [item for item in order if scores.get(item, 0.0) > 0][:CF_HINT_SIZE]
    if not top:
        return ""
    return (
        "Collaborative hint: people who liked the user's recent items most often also chose: "
        + ", ".join(top)
        + "."
    )


def compact_evidence(prior: CandidateCFResult) -> dict[str, str]:
    """Candidate -> a short evidence note for the ranker prompt (the full lines are in the trace)."""
    anchors = len(prior.anchors)
    return {
        entry.id: f"CF: with {len(entry.co_chosen)}/{anchors} recent, {entry.user_cf}/{prior.neighbours} "
        f"similar users"
        for entry in prior.scores
    }


def candidates_text(view: UserView, order: Sequence[str], notes: dict[str, str]) -> str:
    """Candidates in ``order`` (the prior's, so position bias echoes the evidence) with their notes."""
    by_id = {c["id"]: c for c in view.candidates}
    lines = []
    for item in order:
        line = f"- {format_entry(by_id[item])}"
        if item in notes:
            line += f" | {notes[item]}"
        lines.append(line)
    return "\n".join(lines)


async def llm_ranking(
    env: AgentEnv,
    view: UserView,
    analyses: dict[str, dict[str, Any]],
    hint: str,
    counters: Counters,
    order: Sequence[str] | None = None,
    notes: dict[str, str] | None = None,
) -> tuple[list[str], str]:
    """The ranker LLM's raw list (may be invalid) and its thinking.

    ``order``: how the candidates are shown (default: as given); ``notes``: evidence per candidate.
    """
    candidates = [c["id"] for c in view.candidates]
    shown = candidates_text(view, order or candidates, notes or {})
    system = render("ranker", env.words)
    user = (
        f"Analysts' conclusions:\n{format_analyses(analyses)}\n\n"
        + (f"{hint}\n\n" if hint else "")
        + f"Candidates ({len(candidates)}, strongest collaborative evidence first):\n{shown}\n\n"
        + f"Rank all {len(candidates)} ids."
    )
    # Unusable JSON: take the candidate ids in the order they appear in the text (then repaired).
    output, _ = await ask(
        env,
        system,
        user,
        Ranking,
        lambda text: Ranking(ranking=extract_ids(text, candidates)),
        counters,
        shared=view.history_text(),
        constraint=lambda: Constraint(
            answer_schema(
                Ranking,
                enums={"ranking": candidates},
                lengths={"ranking": (len(candidates), len(candidates))},
                max_text_chars=RANKER_THINKING_CHARS,
            ),
            presence_penalty=RANKING_PRESENCE_PENALTY,
        ),
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
    max_weight: float = 0.5,
    prior_scores: dict[str, float] | None = None,
) -> tuple[list[str], list[str], FusionResult | None]:
    """(repaired LLM order, final ranking, agreement details); rankings permute ``candidates``."""
    repaired, repair = repair_ranking(raw, candidates, fallback=cf_order or None)
    for name, count in repair_counts(repair).items():
        counters.count(name, count)
    if repair.needed:
        counters.count("ranking_repaired")
    if fusion == "rrf" and cf_order:
        return repaired, reciprocal_rank_fusion([repaired, cf_order], rrf_k), None
    if fusion == "agreement" and cf_order:
        result = agreement_fusion(raw, cf_order, prior_scores=prior_scores, max_weight=max_weight)
        return repaired, result.ranking, result
    return repaired, repaired, None
