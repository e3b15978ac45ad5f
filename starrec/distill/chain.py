"""The STAR chain of thought: one tagged, linear text per teacher run, and its parser.

Public API (stable; the STAR serving loop, :mod:`starrec.serving.loop`, builds on it; the prompt
the chain answers is :mod:`starrec.distill.student_prompt`). Every function takes the agent
``roster`` (default: the house roster), whose tags are the analysis phases:

- ``serialise_trajectory(trajectory) -> str``: the assistant text the student learns to write.
- ``parse_chain(text) -> ParsedChain``: phases, tool calls and the ranking of a completion; problems are
  collected in ``ParsedChain.errors`` (never raised), so rewards and serving can count them.
- ``parse_ranking(text) -> list[str]``: the ids of a ``<recommend>`` body in order.
- ``required_phases(ablation=None) -> tuple[str, ...]``: the phases a valid chain must contain, in order.

Chain layout (each phase is free-text thinking followed by a JSON object or list)::

    <plan>…{"agents": [...]}</plan>
    <user_profile><tool_call>{"name": "user_cf", "arguments": {…}}</tool_call>
    <tool_response>…evidence…</tool_response>…{conclusions}</user_profile>
    <historical_analysis>…</historical_analysis> (one tag per executed agent, planner order)
    <reflection>…{"passed": false, "feedback": [{"agent": …, "suggestion": …}]}</reflection>
    <correction><recent_analysis>…</recent_analysis></correction>   (only when a correction ran)
    <recommend>…["id1", "id2", …, "id20"]</recommend>
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
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


def tool_exchange(name: str, arguments: Mapping[str, Any], response: str) -> str:
    """A tool call followed by its response, as the chain (and the serving loop) writes them."""
    return format_tool_call(name, dict(arguments)) + tool_response_block(response)


def tool_response_block(response: str) -> str:
    """The text inserted after an executed ``</tool_call>`` (the serving loop appends exactly this)."""
    return "\n" + format_tool_response(response.strip()) + "\n"


def run_label(trajectory: Trajectory) -> str:
    """How errors name a recorded run."""
    return f"run of task {trajectory.task_id} (pass {trajectory.pass_})"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _phase(tag: str, *body: str) -> str:
    inner = "\n".join(part.strip() for part in body if part and part.strip())
    return f"<{tag}>\n{inner}\n</{tag}>"


def _step_body(step: StepRecord) -> list[str]:
    body = [
        tool_exchange(call.name, call.arguments, call.response or call.error or "")
        for call in step.tool_calls
    ]
    body.append(step.thinking)
    if step.output:
        body.append(_json(step.output))
    return body


def serialise_trajectory(trajectory: Trajectory, roster: Roster = ROSTER) -> str:
    """The teacher run as the single assistant text the student is trained on.

    Steps keep their executed order; agents re-run in a correction round are grouped in
    ``<correction>``; ``<recommend>`` holds the final (repaired) ranking of all candidates.
    """
    if len(trajectory.ranking) != len(trajectory.candidates) or not trajectory.ranking:
        raise ValueError(
            f"{run_label(trajectory)}: ranking has {len(trajectory.ranking)} ids "
            f"for {len(trajectory.candidates)} candidates; only complete runs can be serialised"
        )
    tags = roster.tags
    parts: list[str] = []
    correction: list[str] = []
    ranker_thinking = ""

    def flush_correction() -> None:
        if correction:
            parts.append(_phase(CORRECTION, *correction))
            correction.clear()

    for step in trajectory.steps:
        if step.node in PREPROCESSING_NODES:
            continue
        if step.node in tags:
            block = _phase(tags[step.node], *_step_body(step))
            if step.round > 0:
                correction.append(block)
            else:
                flush_correction()
                parts.append(block)
            continue
        flush_correction()
        if step.node == PLANNER:
            parts.append(_phase(PLAN, *_step_body(step)))
        elif step.node == REFLECTOR:
            parts.append(_phase(REFLECTION, *_step_body(step)))
        elif step.node == RANKER:
            ranker_thinking = step.thinking
        else:
            raise ValueError(
                f"{run_label(trajectory)}: step {step.node!r} has no place in "
                f"the STAR chain (known: {PLANNER}, {', '.join(roster.names)}, {REFLECTOR}, "
                f"{RANKER}, {', '.join(sorted(PREPROCESSING_NODES))})"
            )
    flush_correction()
    parts.append(_phase(RECOMMEND, ranker_thinking, _json(trajectory.ranking)))
    return "\n".join(parts)


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


_TOOL_TEXT = re.compile(r"<tool_(call|response)>.*?</tool_\1>", re.DOTALL)


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


_TOOL_TEXT = re.compile(r"<(tool_call|tool_response)>.*?(</\1>|\Z)", re.DOTALL)


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
