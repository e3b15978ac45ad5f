"""ZOOM's value mining, agent by agent: evaluators propose value profiles, supervisors debate them.

* **Evaluators** (one per decoding strategy, e.g. greedy and temperature 0.7 / top-p 0.9) each
  propose a profile from the user's summarised, leakage-free history.
* **Supervisors** read the proposals (and, from round 2 on, each other's previous answers) and
  each answer a profile of their own, for at most ``max_rounds`` rounds.
* **Consensus rule**: the supervisors agree when their ``top_n`` strongest values (weight > 0)
  are the same set and no value's weights differ by more than ``tolerance`` between them; the
  agreed profile is their mean.
* **Fallback** (deadlock after ``max_rounds``): chronological order, as in the paper: the first
  evaluator's proposal (the first decoding strategy) that is not empty.

Every answer is cleaned the same way: unknown value names are dropped, weights clipped into
[0, 1], and item ids outside the user's view (hallucinated) dropped; each is counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel, Field

from starrec.agents.env import AgentEnv, Counters
from starrec.agents.structured_answer import Constraint, ask
from starrec.agents.templates import render
from starrec.contract.values import SCHWARTZ_VALUES, VALUE_DESCRIPTIONS, ValueProfile, profile_from_weights
from starrec.llm.constraints import answer_schema

MAX_CITED_IDS = 3
"""Item ids one value may cite."""


class ValueEntry(BaseModel):
    value: str = Field(description="One of Schwartz's ten values.")
    weight: float = Field(default=0.0, description="How strongly it drives the user, 0 to 1.")
    reason: str = Field(default="", description="One line: why.")
    item_ids: list[str] = Field(default_factory=list, description="History item ids that show it.")


class ValueProposal(BaseModel):
    """What an evaluator or a supervisor answers."""

    thinking: str = Field(default="", description="One sentence of reasoning.")
    values: list[ValueEntry] = Field(default_factory=list, description="One entry per value.")


@dataclass(frozen=True)
class DecodingStrategy:
    """How one evaluator (or supervisor) samples."""

    name: str
    temperature: float = 0.0
    top_p: float = 1.0


def parse_decoding(text: str) -> DecodingStrategy:
    """``greedy`` or ``sample:T:P`` (temperature T, top-p P); a bad spec is a one-line error."""
    if text == "greedy":
        return DecodingStrategy("greedy")
    parts = text.split(":")
    try:
        if len(parts) != 3 or parts[0] != "sample":
            raise ValueError
        temperature, top_p = float(parts[1]), float(parts[2])
    except ValueError as error:
        raise ValueError(f"decoding {text!r}: write 'greedy' or 'sample:T:P', e.g. sample:0.7:0.9") from error
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"decoding {text!r}: temperature must be >= 0 and top-p in (0, 1]")
    return DecodingStrategy(text, temperature, top_p)


def value_menu() -> str:
    return "\n".join(f"- {name}: {VALUE_DESCRIPTIONS[name]}" for name in SCHWARTZ_VALUES)


def proposal_constraint(known_ids: Sequence[str]) -> Constraint:
    """Value names and cited ids as enums (the view's item ids), one entry per value at most."""
    return Constraint(
        answer_schema(
            ValueProposal,
            enums={"values.value": SCHWARTZ_VALUES, "values.item_ids": list(known_ids) or ["none"]},
            lengths={"values": (1, len(SCHWARTZ_VALUES)), "values.item_ids": (0, MAX_CITED_IDS)},
        )
    )


def clean_proposal(
    user_id: str, proposal: ValueProposal, known_ids: Sequence[str], counters: Counters
) -> ValueProfile | None:
    """A profile from one answer (None when it names no known value); every fix is counted."""
    known = set(known_ids)
    weights: dict[str, float] = {}
    reasons: dict[str, str] = {}
    cited: dict[str, list[str]] = {}
    for entry in proposal.values:
        name = entry.value.strip().lower().replace("-", "_").replace(" ", "_")
        if name not in SCHWARTZ_VALUES:
            counters.count("unknown_values")
            continue
        if name in weights:  # a repeat: JSON schema cannot forbid one, so constrained answers have them too
            counters.count("repeated_values")
            continue
        if not 0.0 <= entry.weight <= 1.0:
            counters.count("weights_clipped")
        weights[name] = min(1.0, max(0.0, entry.weight))
        reasons[name] = " ".join(entry.reason.split())[:200]
        ids = [item for item in dict.fromkeys(entry.item_ids) if item in known]
        counters.count("hallucinated_ids", len(set(entry.item_ids)) - len(ids))
        cited[name] = ids[:MAX_CITED_IDS]
    if not weights:
        return None
    return profile_from_weights(user_id, weights, reasons, cited)


def top_values(profile: ValueProfile, n: int) -> frozenset[str]:
    return frozenset(score.value for score in profile.top(n) if score.weight > 0)


def agree(profiles: Sequence[ValueProfile], top_n: int, tolerance: float) -> bool:
    """The consensus rule (module docstring): same top-n set, every weight within ``tolerance``."""
    if not profiles:
        return False
    if len({top_values(profile, top_n) for profile in profiles}) != 1:
        return False
    for name in SCHWARTZ_VALUES:
        weights = [profile.weights()[name] for profile in profiles]
        if max(weights) - min(weights) > tolerance + 1e-9:
            return False
    return True


def merged(user_id: str, profiles: Sequence[ValueProfile]) -> ValueProfile:
    """The agreed profile: mean weights; each value's first non-empty reason; cited ids in order."""
    weights, reasons, cited = {}, {}, {}
    for index, name in enumerate(SCHWARTZ_VALUES):
        scores = [profile.scores[index] for profile in profiles]
        weights[name] = sum(score.weight for score in scores) / len(scores)
        reasons[name] = next((score.reason for score in scores if score.reason), "")
        ids = [item for score in scores for item in score.item_ids]
        cited[name] = list(dict.fromkeys(ids))[:MAX_CITED_IDS]
    return profile_from_weights(user_id, weights, reasons, cited)


def fallback_profile(candidates: Sequence[ValueProfile | None]) -> ValueProfile | None:
    """Chronological order: the first evaluator's usable proposal."""
    return next((candidate for candidate in candidates if candidate is not None), None)


def render_proposal(label: str, profile: ValueProfile | None) -> str:
    if profile is None:
        return f"{label}: (no usable proposal)"
    lines = [
        f"  - {score.value} {score.weight:.2f}: {score.reason or '-'}"
        + (f" [{', '.join(score.item_ids)}]" if score.item_ids else "")
        for score in profile.scores
        if score.weight > 0
    ]
    return f"{label}:\n" + ("\n".join(lines) or "  - (every value at 0)")


def decoded(env: AgentEnv, strategy: DecodingStrategy) -> AgentEnv:
    """``env`` on the model bound to ``strategy``'s sampling parameters."""
    model: Any = env.model.bind(temperature=strategy.temperature, top_p=strategy.top_p)
    return replace(env, model=model, tools=(), max_tool_calls=0)


def _empty(_text: str) -> ValueProposal:
    return ValueProposal()


async def propose(
    env: AgentEnv,
    strategy: DecodingStrategy,
    user_id: str,
    history_text: str,
    known_ids: Sequence[str],
    counters: Counters,
) -> ValueProfile | None:
    """One evaluator's proposal."""
    system = render("values_evaluator", env.words, values=value_menu())
    output, _ = await ask(
        decoded(env, strategy), system, "Score the ten values for this user.", ValueProposal, _empty,
        counters, shared=history_text, constraint=lambda: proposal_constraint(known_ids),
    )  # fmt: skip
    return clean_proposal(user_id, output, known_ids, counters)


async def supervise(
    env: AgentEnv,
    strategy: DecodingStrategy,
    number: int,
    count: int,
    user_id: str,
    history_text: str,
    known_ids: Sequence[str],
    candidates: Sequence[ValueProfile | None],
    previous: Mapping[int, ValueProfile | None],
    counters: Counters,
) -> ValueProfile | None:
    """Supervisor ``number`` (1-based): one debate turn over the candidates and the peers' answers."""
    system = render("values_supervisor", env.words, values=value_menu(), number=str(number), count=str(count))
    parts = [render_proposal(f"Evaluator {index + 1}", c) for index, c in enumerate(candidates)]
    if previous:
        parts.append("Previous round:")
        parts += [
            render_proposal("Your answer" if peer == number else f"Supervisor {peer}", answer)
            for peer, answer in sorted(previous.items())
        ]
    output, _ = await ask(
        decoded(env, strategy), system, "\n\n".join(parts), ValueProposal, _empty, counters,
        shared=history_text, constraint=lambda: proposal_constraint(known_ids),
    )  # fmt: skip
    return clean_proposal(user_id, output, known_ids, counters)
