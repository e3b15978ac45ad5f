"""The STAR inference loop: one generation pass with collaborative tools executed inline.

The student writes its tagged chain (``starrec.distill.chain``); whenever it closes a
``<tool_call>`` the loop stops generation (``stop=["</tool_call>"]``), runs the call against the
:class:`~starrec.tools.base.EvidenceSource`, appends ``<tool_response>…</tool_response>`` exactly
as the training chains have it, and lets the model continue the same assistant turn. Tool calls
are bounded; the final ``<recommend>`` list goes through :func:`~starrec.eval.repair.repair_ranking`
like every other method's output, and every repair is counted.

Best-of-k draws k chains at temperature 0.7 and fuses them with :func:`aggregate_rankings`
(Borda count over the ids each sample itself ranked; ties by the first sample's order).

**Budget forcing**: only generated tokens count against ``max_completion_tokens`` (inserted tool
responses are prompt, not completion). The chain may spend all but ``recommend_reserve`` of them
thinking; when that runs out, or the model ends its turn, before ``<recommend>``, the loop closes
whatever phase or tool call is open, appends ``<recommend>`` and lets the model write only the
ranking with the reserve (a ``<recommend>`` the model opened itself just continues). Every chain
so ends in a ranking; forced endings are counted (``StarChain.forced``).

Given the request's collaborative prior (``candidate_cf``), an unparsed or partial ``<recommend>``
(the top ``R`` ids the student was trained to write, or a list the reserve cut) is completed in
**prior order**, not the order shown; ``fusion="agreement"`` (off by default, so
the pure-student numbers stay comparable with the paper's) also fuses the student's order with the
prior by :func:`starrec.eval.fusion.agreement_fusion`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from starrec.contract.trajectory import ToolCallRecord
from starrec.distill.chain import (
    DEFAULT_RECOMMEND_TOP,
    RECOMMEND,
    RECOMMEND_CLOSE,
    check_reserve,
    forced_ending,
    open_tags,
    parse_chain,
    parse_tool_call_body,
    reached_recommend,
    recommend_reserve,
    tool_response_block,
)
from starrec.distill.rollout import ToolExecutor
from starrec.eval.fusion import agreement_fusion
from starrec.eval.repair import RankingRepair, repair_ranking
from starrec.llm.toolcall_syntax import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, parse_tool_calls
from starrec.serving.backends import Generation, GenerationBackend, Message
from starrec.tools.base import EvidenceSource


@dataclass(slots=True)
class StarLoopConfig:
    """Knobs of one STAR inference pass; defaults suit SmolLM2-class students on CPU."""

    max_tool_calls: int = field(
        default=8,
        metadata={"help": "Tool calls executed per chain; later calls get a 'limit reached' response."},
    )
    max_tokens_per_call: int = field(
        default=768, metadata={"help": "Completion tokens per generation segment (between two tool calls)."}
    )
    max_completion_tokens: int = field(
        default=2048,
        metadata={
            "help": "Generated tokens for the whole chain, all segments together (inserted tool responses "
            "do not count)."
        },
    )
    recommend_top: int = field(
        default=DEFAULT_RECOMMEND_TOP,
        metadata={"help": "R: the prompt asks for at most R ids in <recommend> (match the student's SFT)."},
    )
    recommend_reserve: int | None = field(
        default=None,
        metadata={
            "help": "Generated tokens kept for the ranking; with fewer left before <recommend>, the open "
            "phase is closed and <recommend> forced (None: enough for recommend_top ids)."
        },
    )
    temperature: float = field(
        default=0.0, metadata={"help": "Sampling temperature when samples == 1 (0 = greedy)."}
    )
    samples: int = field(
        default=1, metadata={"help": "Best-of-k: chains drawn per task, fused by Borda count."}
    )
    sample_temperature: float = field(
        default=0.7, metadata={"help": "Temperature of each chain when samples > 1 (the paper's 0.7)."}
    )
    evidence_k: int = field(default=10, metadata={"help": "Neighbours each CF tool call retrieves."})
    seed: int = field(default=0, metadata={"help": "Sample i of a task uses seed + i."})
    fusion: Literal["none", "agreement"] = field(
        default="none",
        metadata={
            "help": "none = the student's own order (completed in prior order); agreement = fused with the "
            "candidate-CF prior as MARS's ranker does (starrec.eval.fusion)."
        },
    )
    fusion_max_weight: float = field(
        default=0.5, metadata={"help": "Largest share of the Borda score the student gets under agreement."}
    )

    def __post_init__(self) -> None:
        if self.fusion not in ("none", "agreement"):
            raise ValueError(f"fusion must be 'none' or 'agreement', got {self.fusion!r}")
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")
        if self.max_tool_calls < 0:
            raise ValueError(f"max_tool_calls must be >= 0, got {self.max_tool_calls}")
        if self.recommend_top < 1:
            raise ValueError(f"recommend_top must be >= 1, got {self.recommend_top}")
        check_reserve(self.reserve, self.max_completion_tokens, "max_completion_tokens")

    @property
    def reserve(self) -> int:
        """Generated tokens kept for the ranking (``recommend_reserve``, or enough for R ids)."""
        if self.recommend_reserve is not None:
            return self.recommend_reserve
        return recommend_reserve(self.recommend_top)


@dataclass(slots=True)
class StarChain:
    """One sampled chain: its text, what was parsed from it and what it cost."""

    completion: str = ""
    parsed: list[str] = field(default_factory=list)
    """Ids in the ``<recommend>`` list as the model wrote them (before repair)."""
    ranking: list[str] = field(default_factory=list)
    """The repaired ranking: a permutation of the candidates."""
    repair: RankingRepair = field(default_factory=RankingRepair)
    format_errors: list[str] = field(default_factory=list)
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    tool_limit_hits: int = 0
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    truncated: bool = False
    """A token budget or the segment cap cut the model off (its thinking, or the ranking itself)."""
    forced: bool = False
    """The loop closed the chain and opened ``<recommend>``: the model had not reached it."""

    @property
    def model_ranked(self) -> list[str]:
        """The valid ids the model itself placed, in its order (the repair appends the rest after them)."""
        return self.ranking[: len(self.ranking) - len(self.repair.missing)]


@dataclass(slots=True)
class StarResult:
    """A task answered by STAR: the fused ranking and every chain behind it."""

    ranking: list[str]
    chains: list[StarChain]
    seconds: float = 0.0
    prior: list[str] = field(default_factory=list)
    """The candidate-CF prior order ([] when no evidence source was available)."""
    fusion: dict[str, float | int] = field(default_factory=dict)
    """Agreement-fusion details when ``fusion="agreement"``."""


def open_tool_call(segment: str) -> str | None:
    """Body of a ``<tool_call>`` left open at the end of a segment (generation stopped on its close)."""
    calls = parse_tool_calls(segment)
    if not calls or calls[-1].closed:
        return None
    return calls[-1].raw[len(TOOL_CALL_OPEN) :].strip()


def execute_tool_call(body: str, executor: ToolExecutor) -> ToolCallRecord:
    """Run one tool-call body with the executor GRPO rollouts use (same validation, same error text)."""
    started = time.perf_counter()
    call = parse_tool_call_body(body)
    text, ok = executor.run(body)
    return ToolCallRecord(
        name=call.name or "?",
        arguments=call.arguments,
        response=text if ok else "",
        error=None if ok else text.removeprefix("error: "),
        seconds=time.perf_counter() - started,
    )


def run_chain(
    messages: list[Message],
    candidates: Sequence[str],
    backend: GenerationBackend,
    executor: ToolExecutor,
    config: StarLoopConfig,
    *,
    temperature: float,
    seed: int | None,
    fallback: Sequence[str] | None = None,
) -> StarChain:
    """Generate one STAR chain with inline tool execution, force its ranking if need be, parse, repair.

    ``fallback``: the order missing ids are appended in (the prior; default the shown order).
    """
    chain = StarChain()
    started = time.perf_counter()
    thinking_budget = config.max_completion_tokens - config.reserve
    # One segment per executed or refused tool call, plus the closing one and one grace segment.
    for _ in range(config.max_tool_calls + 2):
        room = thinking_budget - chain.completion_tokens
        if room <= 0:
            chain.truncated = True
            break
        generation = _generate(
            chain,
            backend,
            messages,
            [TOOL_CALL_CLOSE],
            min(config.max_tokens_per_call, room),
            temperature,
            seed,
        )
        body = open_tool_call(generation.text)
        if body is None or generation.finish_reason == "length":
            chain.truncated = generation.finish_reason == "length"
            break
        chain.completion += TOOL_CALL_CLOSE
        if len(chain.tool_calls) >= config.max_tool_calls:
            chain.tool_limit_hits += 1
            response = (
                f"Tool-call limit reached ({config.max_tool_calls} per answer); no more evidence. "
                "Finish the analysis and give <recommend> now."
            )
        else:
            record = execute_tool_call(body, executor)
            chain.tool_calls.append(record)
            response = record.response if record.error is None else f"error: {record.error}"
        chain.completion += tool_response_block(response)
    else:
        chain.truncated = True
    _finish_ranking(chain, backend, messages, config, temperature, seed)
    parsed = parse_chain(chain.completion, candidates)
    chain.parsed = parsed.ranking
    chain.format_errors = parsed.errors
    chain.ranking, chain.repair = repair_ranking(chain.parsed, candidates, fallback=fallback or None)
    chain.seconds = time.perf_counter() - started
    return chain


def _generate(
    chain: StarChain,
    backend: GenerationBackend,
    messages: list[Message],
    stop: list[str],
    max_tokens: int,
    temperature: float,
    seed: int | None,
) -> Generation:
    """One segment: continue the chain's assistant turn and count what it cost."""
    generation = backend.generate(
        messages, chain.completion, stop=stop, max_tokens=max_tokens, temperature=temperature, seed=seed
    )
    chain.llm_calls += 1
    chain.prompt_tokens += generation.prompt_tokens
    chain.completion_tokens += generation.completion_tokens
    chain.completion += generation.text
    return generation


def _finish_ranking(
    chain: StarChain,
    backend: GenerationBackend,
    messages: list[Message],
    config: StarLoopConfig,
    temperature: float,
    seed: int | None,
) -> None:
    """Budget forcing: make sure the chain ends in a closed ``<recommend>``.

    A closed ranking is left alone. A ``<recommend>`` the model opened is continued (anything left
    open inside it closed first); otherwise every open phase is closed and ``<recommend>`` is
    appended (``forced``). The ranking then gets the rest of the budget, at least the reserve; if
    that ends before ``</recommend>``, the list stays cut and the repair completes it in prior order.
    """
    tags = open_tags(chain.completion)
    if tags[:1] == [RECOMMEND]:
        chain.completion += "".join(f"</{tag}>" for tag in reversed(tags[1:]))
    elif reached_recommend(chain.completion):
        return
    else:
        chain.forced = True
        chain.completion += forced_ending(chain.completion)
    room = config.max_completion_tokens - chain.completion_tokens
    if room <= 0:
        chain.truncated = True
        return
    generation = _generate(chain, backend, messages, [RECOMMEND_CLOSE], room, temperature, seed)
    if generation.finish_reason == "length":
        chain.truncated = True
    else:
        chain.completion += RECOMMEND_CLOSE


def aggregate_rankings(chains: Sequence[StarChain], candidates: Sequence[str]) -> list[str]:
    """Fuse best-of-k chains into one ranking (Borda count).

    Each chain gives ``n - position`` points to every id it ranked itself (``model_ranked``;
    ids the repair appended get nothing, so an unparseable sample does not vote for the
    presented order). Highest total first; ties keep the first chain's repaired order.
    """
    if not chains:
        raise ValueError("aggregate_rankings needs at least one chain")
    size = len(candidates)
    points: dict[str, int] = dict.fromkeys(candidates, 0)
    for chain in chains:
        for position, item in enumerate(chain.model_ranked):
            points[item] += size - position
    tie_order = {item: index for index, item in enumerate(chains[0].ranking)}
    return sorted(candidates, key=lambda item: (-points[item], tie_order.get(item, size)))


class StarStats:
    """Thread-safe counters over every chain the loop ran (merged into eval reports)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.tasks = 0
        self.chains = 0
        self.llm_calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.tool_calls = 0
        self.tool_errors = 0
        self.tool_limit_hits = 0
        self.truncated = 0
        self.forced = 0
        self.unparsed = 0
        self.format_invalid = 0
        self.rankings_repaired = 0
        self.repairs: dict[str, int] = {"hallucinated": 0, "duplicates": 0, "missing": 0}
        self.task_seconds = 0.0
        self.chain_errors = 0
        self.chain_error_kinds: dict[str, int] = {}

    def add_chain_error(self, error: BaseException) -> None:
        """Count a chain that raised (timeout, server error): best-of-k fuses the chains that finished."""
        with self._lock:
            self.chain_errors += 1
            kind = type(error).__name__
            self.chain_error_kinds[kind] = self.chain_error_kinds.get(kind, 0) + 1

    def add(self, result: StarResult) -> None:
        with self._lock:
            self.tasks += 1
            self.task_seconds += result.seconds
            for chain in result.chains:
                self.chains += 1
                self.llm_calls += chain.llm_calls
                self.prompt_tokens += chain.prompt_tokens
                self.completion_tokens += chain.completion_tokens
                self.tool_calls += len(chain.tool_calls)
                self.tool_errors += sum(record.error is not None for record in chain.tool_calls)
                self.tool_limit_hits += chain.tool_limit_hits
                self.truncated += chain.truncated
                self.forced += chain.forced
                self.unparsed += not chain.parsed
                self.format_invalid += bool(chain.format_errors)
                self.rankings_repaired += chain.repair.needed
                for key, value in chain.repair.counts().items():
                    self.repairs[key] += value

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            per_task = max(self.tasks, 1)
            return {
                "tasks": self.tasks,
                "chains": self.chains,
                "chain_errors": self.chain_errors,
                "chain_error_kinds": dict(self.chain_error_kinds),
                "llm_calls": self.llm_calls,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "tool_calls": self.tool_calls,
                "tool_errors": self.tool_errors,
                "tool_limit_hits": self.tool_limit_hits,
                "truncated_chains": self.truncated,
                "forced_endings": self.forced,
                "unforced_recommend_share": (self.chains - self.forced) / self.chains if self.chains else 0.0,
                "unparsed_chains": self.unparsed,
                "format_invalid_chains": self.format_invalid,
                "rankings_repaired": self.rankings_repaired,
                "repairs": dict(self.repairs),
                "seconds_per_task": self.task_seconds / per_task,
                "llm_calls_per_task": self.llm_calls / per_task,
                "completion_tokens_per_task": self.completion_tokens / per_task,
            }


class StarLoop:
    """Answer tasks with a served student: k chains each, fused, stats counted."""

    def __init__(
        self, backend: GenerationBackend, evidence: EvidenceSource | None, config: StarLoopConfig
    ) -> None:
        """``evidence=None`` disables the tools (calls get an error response; the no-tools ablation)."""
        self.backend = backend
        self.executor = ToolExecutor(evidence, k=config.evidence_k)
        self.config = config
        self.stats = StarStats()

    def sample_settings(self) -> list[tuple[float, int]]:
        """(temperature, seed) of each chain drawn for one task."""
        if self.config.samples == 1:
            return [(self.config.temperature, self.config.seed)]
        temperature, seed = self.config.sample_temperature, self.config.seed
        return [(temperature, seed + index) for index in range(self.config.samples)]

    def run_sample(
        self,
        messages: list[Message],
        candidates: Sequence[str],
        temperature: float,
        seed: int,
        prior: Sequence[str] | None = None,
    ) -> StarChain:
        return run_chain(
            messages, candidates, self.backend, self.executor, self.config,
            temperature=temperature, seed=seed, fallback=prior,
        )  # fmt: skip

    def answer(
        self,
        messages: list[Message],
        candidates: Sequence[str],
        prior: Sequence[str] | None = None,
        prior_scores: dict[str, float] | None = None,
    ) -> StarResult:
        """All samples of one task, sequentially (use :meth:`finish` after running samples elsewhere)."""
        started = time.perf_counter()
        chains = [self.run_sample(messages, candidates, t, s, prior) for t, s in self.sample_settings()]
        return self.finish(chains, candidates, time.perf_counter() - started, prior, prior_scores)

    def finish(
        self,
        chains: list[StarChain],
        candidates: Sequence[str],
        seconds: float,
        prior: Sequence[str] | None = None,
        prior_scores: dict[str, float] | None = None,
    ) -> StarResult:
        ranking = aggregate_rankings(chains, candidates)
        details: dict[str, float | int] = {}
        if self.config.fusion == "agreement" and prior:
            ranked_by_a_chain = {item for chain in chains for item in chain.model_ranked}
            fused = agreement_fusion(
                [item for item in ranking if item in ranked_by_a_chain],
                prior,
                prior_scores=prior_scores,
                max_weight=self.config.fusion_max_weight,
            )
            ranking, details = fused.ranking, fused.as_dict()
        result = StarResult(
            ranking=ranking, chains=chains, seconds=seconds, prior=list(prior or []), fusion=details
        )
        self.stats.add(result)
        return result
