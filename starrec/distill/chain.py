"""The STAR chain of thought: one tagged, linear text per teacher run, and its parser.

Public API (stable; the STAR serving loop, :mod:`starrec.serving.loop`, builds on it; the prompt
the chain answers is :mod:`starrec.distill.student_prompt`). Every function takes the agent
``roster`` (default: the house roster), whose tags are the analysis phases:

- ``serialise_trajectory(trajectory, fmt=ChainFormat()) -> str``: the compact assistant text the
  student learns to write (bounded thinking and conclusions, top ``R`` ids; see :class:`ChainFormat`).
- ``parse_chain(text) -> ParsedChain``: phases, tool calls and the ranking of a completion; problems are
  collected in ``ParsedChain.errors`` (never raised), so rewards and serving can count them.
- ``parse_ranking(text) -> list[str]``: the ids of a ``<recommend>`` body in order.
- ``required_phases(ablation=None) -> tuple[str, ...]``: the phases a valid chain must contain, in order.
- ``count_chain_tokens(text, tokenizer) -> ChainTokens``: what the student generates vs what the tool
  executor inserts (``<tool_response>`` blocks); the budget (:data:`GENERATED_TOKEN_BUDGET`) counts
  only the former.
- ``forced_ending(text) -> str``: the text that closes a chain cut before its ranking and opens
  ``<recommend>`` (budget forcing in serving and GRPO rollouts).

Chain layout (each phase is brief thinking followed by compact JSON)::

    <plan>…{"agents":[...]}</plan>
    <user_profile><tool_call>{"name":"user_cf","arguments":{…}}</tool_call>
    <tool_response>…evidence…</tool_response>…{"conclusions":[…]}</user_profile>
    <historical_analysis>…</historical_analysis> (one tag per executed agent, planner order)
    <reflection>…{"passed":false,"feedback":[{"agent":…,"suggestion":…}]}</reflection>
    <correction><recent_analysis>…</recent_analysis></correction>   (only when a correction ran)
    <recommend>["id1","id2",…,"idR"]</recommend>   (the top R; the rest follow in prior order)

Older, verbose chains (full thinking, spaced JSON, ranker thinking and all ids in ``<recommend>``)
use the same tags and parse the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

from starrec.contract.ablations import check_ablation
from starrec.contract.roster import ABSTRACTOR, PLANNER, RANKER, REFLECTOR, ROSTER, Roster
from starrec.contract.tool_names import AGENT_TOOL_NAMES
from starrec.contract.trajectory import StepRecord, Trajectory
from starrec.llm.candidate_ids import extract_ids
from starrec.llm.json_repair import JSONExtractionError, extract_json
from starrec.llm.toolcall_syntax import (
    ParsedToolCall,
    format_tool_call,
    format_tool_response,
    parse_tool_calls,
)

PLAN, REFLECTION, CORRECTION, RECOMMEND = "plan", "reflection", "correction", "recommend"
TOOL_CALL, TOOL_RESPONSE = "tool_call", "tool_response"
FIXED_PHASES: frozenset[str] = frozenset({PLAN, REFLECTION, CORRECTION, RECOMMEND, TOOL_CALL, TOOL_RESPONSE})

PREPROCESSING_NODES: frozenset[str] = frozenset({ABSTRACTOR})
"""Nodes whose result is already part of the prompt (the long-term summary), so not of the chain."""


@dataclass(frozen=True)
class ChainGrammar:
    """The tags a chain may hold for one roster's agents, and where each tag may appear."""

    agent_by_tag: dict[str, str]
    tag_pattern: re.Pattern[str]
    allowed_parents: dict[str, tuple[str | None, ...]]


@cache
def chain_grammar(roster: Roster = ROSTER) -> ChainGrammar:
    agent_phases = tuple(roster.tags.values())
    clashes = sorted(FIXED_PHASES & set(agent_phases))
    if clashes:
        raise ValueError(f"agent roster: tags {clashes} are reserved for the STAR chain's own phases")
    tags = (PLAN, *agent_phases, REFLECTION, CORRECTION, RECOMMEND, TOOL_CALL, TOOL_RESPONSE)
    return ChainGrammar(
        agent_by_tag={tag: node for node, tag in roster.tags.items()},
        tag_pattern=re.compile(r"<(/?)(" + "|".join(re.escape(tag) for tag in tags) + r")>"),
        allowed_parents={
            **{tag: (None,) for tag in (PLAN, REFLECTION, CORRECTION, RECOMMEND)},
            **{tag: (None, CORRECTION) for tag in agent_phases},
            TOOL_CALL: (PLAN, *agent_phases, REFLECTION, RECOMMEND),
            TOOL_RESPONSE: (PLAN, *agent_phases, REFLECTION, RECOMMEND),
        },
    )


def required_phases(ablation: str | None = None) -> tuple[str, ...]:
    """Phases every valid chain contains, in this order (the format reward checks them)."""
    check_ablation(ablation)
    phases = [PLAN, REFLECTION, RECOMMEND]
    if ablation == "no_planner":
        phases.remove(PLAN)
    if ablation == "no_reflector":
        phases.remove(REFLECTION)
    return tuple(phases)


# ------------------------------------------------------------------------------------------ serialise

GENERATED_TOKEN_BUDGET = 512
"""Tokens a compact chain may take to *generate* (plan, phases, tool calls, reflection, ranking;
inserted ``<tool_response>`` text excluded), in the student's tokenizer (SmolLM2's here)."""

DEFAULT_RECOMMEND_TOP = 10
"""R: ids the student writes in ``<recommend>``; the rest of the ranking follows in prior order."""


def recommend_reserve(recommend_top: int) -> int:
    """Generated tokens budget forcing keeps back for the ranking: ``recommend_top`` ids (a 4-digit
    id with its quotes and comma is 6 SmolLM2 tokens), the list's brackets and ``</recommend>``."""
    return 8 + 6 * recommend_top


def check_reserve(reserve: int, budget: int, budget_name: str) -> None:
    """Budget forcing needs room both for thinking and for the ranking."""
    if not 0 < reserve < budget:
        raise ValueError(
            f"recommend_reserve ({reserve}) must be > 0 and below {budget_name} ({budget}); raise "
            f"{budget_name} or lower the reserve"
        )


@dataclass(frozen=True, slots=True)
class ChainFormat:
    """How much of a teacher run the compact chain keeps: every word kept is a token to generate.

    ``None`` keeps a part whole (the verbose chains of older versions).
    """

    thinking_words: int | None = 16
    """Each phase's thinking: its first sentence, cut to this many words."""
    list_items: int | None = 3
    """Lists of strings in a phase's JSON (conclusions, evidence ids) keep their first items."""
    item_words: int | None = 10
    """Each string in a phase's JSON keeps this many words."""
    recommend_top: int | None = DEFAULT_RECOMMEND_TOP
    """Ids in ``<recommend>`` (None = every candidate)."""

    def __post_init__(self) -> None:
        for name in ("thinking_words", "list_items", "item_words", "recommend_top"):
            value, minimum = getattr(self, name), 1 if name == "recommend_top" else 0
            if value is not None and value < minimum:
                raise ValueError(f"ChainFormat.{name} must be None or >= {minimum}, got {value}")


DROPPED_OUTPUT_KEYS: frozenset[str] = frozenset({"correction"})
"""Step-output keys the chain leaves out: a corrected agent's ``correction`` repeats the reflection."""


def tool_exchange(name: str, arguments: Mapping[str, Any], response: str) -> str:
    """A tool call followed by its response, as the chain (and the serving loop) writes them."""
    return format_tool_call(name, dict(arguments), compact=True) + tool_response_block(response)


def tool_response_block(response: str) -> str:
    """The text inserted after an executed ``</tool_call>`` (the serving loop appends exactly this)."""
    return "\n" + format_tool_response(response.strip()) + "\n"


TOOL_RESPONSE_SPAN = re.compile(r"\n?<tool_response>.*?</tool_response>\n?", re.DOTALL)
"""A :func:`tool_response_block` in a chain: text the tool executor inserts, never generated."""


def run_label(trajectory: Trajectory) -> str:
    """How errors name a recorded run."""
    return f"run of task {trajectory.task_id} (pass {trajectory.pass_})"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _phase(tag: str, *body: str) -> str:
    inner = "\n".join(part.strip() for part in body if part and part.strip())
    return f"<{tag}>\n{inner}\n</{tag}>"


_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


WORD_CHARS = 20
"""Characters a bounded text keeps of each word: a run of digits or dots with no space (small
teachers write ``1.1.1.1…``) is one word but dozens of tokens."""


def _words(text: str, limit: int | None) -> str:
    """The first ``limit`` words of ``text``, each cut to ``WORD_CHARS`` characters."""
    if limit is None:
        return " ".join(text.split())
    return " ".join(word[:WORD_CHARS] for word in text.split()[:limit])


def _first_occurrences(items: list[Any], said: frozenset[str]) -> list[Any]:
    """``items`` without the ones in ``said`` or already listed (order kept)."""
    seen, kept = set(said), []
    for item in items:
        if item not in seen:
            seen.add(item)
            kept.append(item)
    return kept


class _Compactor:
    """Bounds the free text and JSON of one run's steps to a :class:`ChainFormat`."""

    def __init__(self, fmt: ChainFormat, roster: Roster) -> None:
        self.fmt = fmt
        self.tags = chain_grammar(roster).tag_pattern

    def clean(self, text: str) -> str:
        """Teacher text without chain tags (a stray ``<plan>`` in thinking would break the grammar)."""
        return " ".join(self.tags.sub(" ", text).split())

    def thinking(self, text: str) -> str:
        flat = self.clean(text)
        if self.fmt.thinking_words is None:
            return flat
        return _words(_SENTENCE_END.split(flat, maxsplit=1)[0], self.fmt.thinking_words)

    def value(self, value: Any, said: frozenset[str] = frozenset()) -> Any:
        """Strings cut to ``item_words``, lists of strings to ``list_items``; empty values dropped.

        In a list of strings, an item already written (earlier in the list, or in ``said``: the
        phase's thinking) is dropped before the list is cut: small teachers repeat one sentence
        as every conclusion, and a repeat is tokens to generate that carry nothing.
        """
        if isinstance(value, str):
            return _words(self.clean(value), self.fmt.item_words)
        if isinstance(value, Mapping):
            kept = {
                key: self.value(item, said) for key, item in value.items() if key not in DROPPED_OUTPUT_KEYS
            }
            return {key: item for key, item in kept.items() if item not in ("", [], {}, None)}
        if isinstance(value, list | tuple):
            items = [self.value(item, said) for item in value]
            if not any(isinstance(item, Mapping | list) for item in items):
                items = _first_occurrences(items, said)
                if self.fmt.list_items is not None:
                    items = items[: self.fmt.list_items]
            return items
        return value

    def body(self, step: StepRecord, bound_output: bool = True) -> list[str]:
        """Tool exchanges, thinking, then the step's output as JSON (``bound_output=False``: as is)."""
        body = [
            tool_exchange(call.name, call.arguments, call.response or call.error or "")
            for call in step.tool_calls
        ]
        thinking = self.thinking(step.thinking)
        body.append(thinking)
        if bound_output:
            said = frozenset({thinking, _words(thinking, self.fmt.item_words)} - {""})
            output = self.value(step.output, said)
        else:
            output = step.output
        if output:
            body.append(_json(output))
        return body


def serialise_trajectory(
    trajectory: Trajectory, roster: Roster = ROSTER, fmt: ChainFormat | None = None
) -> str:
    """The teacher run as the single assistant text the student is trained on.

    Steps keep their executed order; agents re-run in a correction round are grouped in
    ``<correction>``; ``<recommend>`` holds the top ``fmt.recommend_top`` ids of the final
    (repaired) ranking. Thinking and step outputs are bounded by ``fmt`` (default
    :class:`ChainFormat`); the plan's agent list is kept whole.
    """
    if len(trajectory.ranking) != len(trajectory.candidates) or not trajectory.ranking:
        raise ValueError(
            f"{run_label(trajectory)}: ranking has {len(trajectory.ranking)} ids "
            f"for {len(trajectory.candidates)} candidates; only complete runs can be serialised"
        )
    fmt = fmt or ChainFormat()
    compact = _Compactor(fmt, roster)
    tags = roster.tags
    parts: list[str] = []
    correction: list[str] = []

    def flush_correction() -> None:
        if correction:
            parts.append(_phase(CORRECTION, *correction))
            correction.clear()

    for step in trajectory.steps:
        if step.node in PREPROCESSING_NODES:
            continue
        if step.node in tags:
            block = _phase(tags[step.node], *compact.body(step))
            if step.round > 0:
                correction.append(block)
            else:
                flush_correction()
                parts.append(block)
            continue
        flush_correction()
        if step.node == PLANNER:
            parts.append(_phase(PLAN, *compact.body(step, bound_output=False)))
        elif step.node == REFLECTOR:
            parts.append(_phase(REFLECTION, *compact.body(step)))
        elif step.node != RANKER:  # the ranker's answer is the ranking itself
            raise ValueError(
                f"{run_label(trajectory)}: step {step.node!r} has no place in "
                f"the STAR chain (known: {PLANNER}, {', '.join(roster.names)}, {REFLECTOR}, "
                f"{RANKER}, {', '.join(sorted(PREPROCESSING_NODES))})"
            )
    flush_correction()
    top = trajectory.ranking if fmt.recommend_top is None else trajectory.ranking[: fmt.recommend_top]
    parts.append(_phase(RECOMMEND, _json(top)))
    return "\n".join(parts)


@dataclass(frozen=True, slots=True)
class ChainTokens:
    """A chain's tokens: what the model generates, and what the tool executor inserts."""

    generated: int
    tool: int

    @property
    def total(self) -> int:
        return self.generated + self.tool


def count_chain_tokens(text: str, tokenizer: Any) -> ChainTokens:
    """Generated vs inserted (``<tool_response>`` block) tokens of a chain, in ``tokenizer``'s tokens.

    Each run of generated text is tokenised on its own, as the model generates it between two
    tool calls, so the count is the budget the serving loop and GRPO rollouts charge.
    """

    def size(piece: str) -> int:
        return len(tokenizer.encode(piece, add_special_tokens=False)) if piece else 0

    generated = tool = 0
    cursor = 0
    for match in TOOL_RESPONSE_SPAN.finditer(text):
        generated += size(text[cursor : match.start()])
        tool += size(match.group(0))
        cursor = match.end()
    return ChainTokens(generated + size(text[cursor:]), tool)


TERSER_FORMATS: tuple[ChainFormat, ...] = (
    ChainFormat(thinking_words=8, list_items=2, item_words=8),
    ChainFormat(thinking_words=6, list_items=1, item_words=8),
    ChainFormat(thinking_words=0, list_items=1, item_words=6),
)
"""What :func:`serialise_within_budget` falls back to, most detailed first, for runs too long for
the default format (many agents, tool calls and a correction round)."""


def serialise_within_budget(
    trajectory: Trajectory,
    tokenizer: Any,
    budget: int = GENERATED_TOKEN_BUDGET,
    fmt: ChainFormat | None = None,
    roster: Roster = ROSTER,
) -> tuple[str, ChainTokens]:
    """The most detailed chain of ``fmt`` (default :class:`ChainFormat`), then :data:`TERSER_FORMATS`
    (same ``recommend_top``), whose generated tokens fit ``budget``; the tersest when none fits (its
    count says so: callers report it). Tool calls are never dropped: the evidence was used."""
    fmt = fmt or ChainFormat()
    formats = [fmt, *(replace(terse, recommend_top=fmt.recommend_top) for terse in TERSER_FORMATS)]
    for candidate in formats:
        text = serialise_trajectory(trajectory, roster, candidate)
        tokens = count_chain_tokens(text, tokenizer)
        if tokens.generated <= budget:
            break
    return text, tokens


@dataclass(slots=True)
class ChainBudgetReport:
    """How a set of chains sits against the generated-token budget (SFT data, ``distill filter``)."""

    budget: int
    chains: int = 0
    over_budget: int = 0
    max_generated: int = 0
    generated_total: int = 0
    tool_total: int = 0

    def add(self, tokens: ChainTokens) -> None:
        self.chains += 1
        self.over_budget += tokens.generated > self.budget
        self.max_generated = max(self.max_generated, tokens.generated)
        self.generated_total += tokens.generated
        self.tool_total += tokens.tool

    def to_dict(self) -> dict[str, int | float]:
        per_chain = max(self.chains, 1)
        return {
            "budget": self.budget,
            "chains": self.chains,
            "over_budget": self.over_budget,
            "max_generated_tokens": self.max_generated,
            "mean_generated_tokens": round(self.generated_total / per_chain, 1),
            "mean_tool_tokens": round(self.tool_total / per_chain, 1),
        }

    def line(self) -> str:
        """One sentence for the console."""
        d = self.to_dict()
        return (
            f"{d['over_budget']}/{d['chains']} chains exceed the {self.budget}-token generated budget "
            f"(generated: mean {d['mean_generated_tokens']}, max {d['max_generated_tokens']}; "
            f"tool responses: mean {d['mean_tool_tokens']} tokens, not counted)"
        )


def chain_budget_report(
    texts: Iterable[str], tokenizer: Any, budget: int = GENERATED_TOKEN_BUDGET
) -> ChainBudgetReport:
    """Count every chain's generated and tool tokens against ``budget``."""
    report = ChainBudgetReport(budget=budget)
    for text in texts:
        report.add(count_chain_tokens(text, tokenizer))
    return report


# ------------------------------------------------------------------------------------ budget forcing

RECOMMEND_OPEN, RECOMMEND_CLOSE = f"<{RECOMMEND}>", f"</{RECOMMEND}>"


def _scan_tags(text: str, roster: Roster) -> tuple[list[str], bool]:
    """(tags still open at the end, outermost first; whether ``<recommend>`` opened at top level)."""
    stack: list[str] = []
    recommend_opened = False
    for match in chain_grammar(roster).tag_pattern.finditer(text):
        closing, tag = match.group(1) == "/", match.group(2)
        if not closing:
            recommend_opened = recommend_opened or (tag == RECOMMEND and not stack)
            stack.append(tag)
        elif tag in stack:  # close what was left open inside it too, as parse_chain does
            while stack.pop() != tag:
                pass
    return stack, recommend_opened


def open_tags(text: str, roster: Roster = ROSTER) -> list[str]:
    """The tags still open at the end of ``text``, outermost first."""
    return _scan_tags(text, roster)[0]


def reached_recommend(text: str, roster: Roster = ROSTER) -> bool:
    """The chain opened its top-level ``<recommend>`` (closed or not)."""
    return _scan_tags(text, roster)[1]


def forced_ending(text: str, roster: Roster = ROSTER) -> str:
    """What budget forcing appends to a chain cut before its ranking: the closing tag of every phase
    (and tool call) left open, innermost first, then ``<recommend>`` for the ranking alone."""
    closing = "".join(f"</{tag}>" for tag in reversed(open_tags(text, roster)))
    return closing + "\n" + RECOMMEND_OPEN + "\n"


# ---------------------------------------------------------------------------------------------- parse


@dataclass(slots=True)
class Phase:
    tag: str
    content: str
    """Text between the tags with tool calls and responses left in place."""
    in_correction: bool = False
    tool_calls: list[ParsedToolCall] = field(default_factory=list)
    start: int = 0
    """Character offset of the opening tag in the completion."""


@dataclass(slots=True)
class ParsedChain:
    grammar: ChainGrammar = field(default_factory=chain_grammar, repr=False, compare=False)
    """The roster's tags the chain was parsed with (maps analysis phases back to agents)."""
    phases: list[Phase] = field(default_factory=list)
    tool_calls: list[ParsedToolCall] = field(default_factory=list)
    ranking: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    """Structural problems: unknown nesting, unclosed or mismatched tags, text outside phases."""

    @property
    def order(self) -> list[str]:
        """Top-level phase tags in the order they appear (correction contents excluded)."""
        return [phase.tag for phase in self.phases if not phase.in_correction]

    def phase(self, tag: str) -> Phase | None:
        """The first phase with this tag."""
        return next((phase for phase in self.phases if phase.tag == tag), None)

    def has_phases_in_order(self, tags: Iterable[str]) -> bool:
        """True when every tag occurs, non-empty, and their first occurrences follow this order."""
        positions: list[int] = []
        order = self.order
        for tag in tags:
            if tag not in order:
                return False
            phase = self.phase(tag)
            if phase is None or (not _strip_tool_text(phase.content).strip() and not phase.tool_calls):
                return False
            positions.append(order.index(tag))
        return positions == sorted(positions)

    @property
    def agents(self) -> list[str]:
        """Agent node names of the analysis phases, in order (corrections included)."""
        by_tag = self.grammar.agent_by_tag
        return [by_tag[phase.tag] for phase in self.phases if phase.tag in by_tag]


_TOOL_TEXT = re.compile(r"<(tool_call|tool_response)>.*?(</\1>|\Z)", re.DOTALL)
"""Tool calls and responses in a phase, closed or cut off at the end."""


def _strip_tool_text(text: str) -> str:
    return _TOOL_TEXT.sub("", text)


def parse_tool_call_body(body: str) -> ParsedToolCall:
    """Validate one tool-call body (strict JSON, via :mod:`starrec.llm.toolcall_syntax`) and the tool name."""
    (call,) = parse_tool_calls(format_tool_call_block(body))
    if call.error is None and call.name not in AGENT_TOOL_NAMES:
        call.error = f"unknown tool {call.name!r}; expected one of {sorted(AGENT_TOOL_NAMES)}"
    return call


def format_tool_call_block(body: str) -> str:
    return f"<{TOOL_CALL}>{body}</{TOOL_CALL}>"


def parse_chain(text: str, candidates: Sequence[str] | None = None, roster: Roster = ROSTER) -> ParsedChain:
    """Split a completion into phases, tool calls and the ranking.

    Whitespace anywhere is fine; tags are strict: only known tags count, each must be allowed
    where it appears, closed by its own closing tag, and no text may sit outside a phase.
    Problems are listed in ``errors`` and parsing continues, so partial answers still yield what
    they contain. ``candidates`` (optional) lets a non-JSON ``<recommend>`` body still yield ids.
    """
    grammar = chain_grammar(roster)
    chain = ParsedChain(grammar)
    stack: list[tuple[str, int]] = []  # (open tag, where its content starts)
    cursor = 0
    last_call: ParsedToolCall | None = None
    for match in grammar.tag_pattern.finditer(text):
        closing, tag = match.group(1) == "/", match.group(2)
        if not stack and text[cursor : match.start()].strip():
            chain.errors.append(
                f"text outside any phase at char {cursor}: {text[cursor : match.start()][:40]!r}"
            )
        cursor = match.end()
        parent = stack[-1][0] if stack else None
        if not closing:
            if parent not in grammar.allowed_parents[tag]:
                where = f"inside <{parent}>" if parent else "at top level"
                chain.errors.append(f"<{tag}> is not allowed {where} (char {match.start()})")
            stack.append((tag, match.end()))
            continue
        if parent != tag:
            expected = f"</{parent}>" if parent else "no closing tag"
            chain.errors.append(f"unexpected </{tag}> at char {match.start()}; expected {expected}")
            if tag not in [entry[0] for entry in stack]:
                continue
            while stack and stack[-1][0] != tag:  # close what was left open, then this one
                stack.pop()
        _, start = stack.pop()
        content = text[start : match.start()]
        enclosing = stack[-1][0] if stack else None
        if tag == TOOL_CALL:
            last_call = parse_tool_call_body(content.strip())
            last_call.phase = enclosing or ""
            last_call.start, last_call.end = start - len(tag) - 2, match.end()
            chain.tool_calls.append(last_call)
        elif tag == TOOL_RESPONSE:
            if last_call is None or last_call.response is not None:
                chain.errors.append(f"<tool_response> at char {start} does not follow a <tool_call>")
            else:
                last_call.response = content.strip()
        else:
            phase = Phase(tag, content.strip(), enclosing == CORRECTION, start=start - len(tag) - 2)
            phase.tool_calls = [call for call in chain.tool_calls if phase.start < call.start < match.start()]
            chain.phases.append(phase)
            if tag == RECOMMEND and not chain.ranking:
                chain.ranking = parse_ranking(phase.content, candidates)
    if text[cursor:].strip() and not stack:
        chain.errors.append(f"text outside any phase at char {cursor}: {text[cursor:][:40]!r}")
    for tag, start in stack:
        chain.errors.append(f"<{tag}> opened at char {start} is never closed")
        if tag == RECOMMEND and not chain.ranking and candidates:
            chain.ranking = partial_ranking(text[start:], candidates)
    chain.phases.sort(key=lambda phase: phase.start)  # outer phases close after inner ones
    return chain


def partial_ranking(body: str, candidates: Sequence[str]) -> list[str]:
    """The candidate ids of a ``<recommend>`` cut off by the token budget, in order.

    Tool calls and responses inside the phase are not the student's list, and neither is the
    thinking before it: the ids are read from the last ``[`` on. A trailing token the budget may
    have cut (``"c1`` of ``"c12"``) is not trusted.
    """
    own = _TOOL_TEXT.sub(" ", body)
    if "[" in own:
        own = own[own.rindex("[") :]
    cut = re.sub(r"[^\s\"',\[\]]+\Z", "", own)
    return extract_ids(cut, candidates)


def parse_ranking(text: str, candidates: Sequence[str] | None = None) -> list[str]:
    """Ids of a ``<recommend>`` body, in order.

    The JSON list the chain ends with (tolerant extraction); failing that, and when ``candidates``
    are known, the candidate ids mentioned in order. Returns [] when nothing parses (callers repair
    and count).
    """
    try:
        values = extract_json(text, expect=list)
    except JSONExtractionError:
        values = None
    if values and all(isinstance(value, str | int) and not isinstance(value, bool) for value in values):
        return [str(value).strip() for value in values]
    return extract_ids(text, candidates) if candidates else []
