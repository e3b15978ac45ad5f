"""Turn CF neighbour lists into natural-language evidence (what the agents read, see docs/tools.md).

Evidence = named categories, each with a one-line explanation of what unites it and up to five
representative ids with titles. :class:`MetadataVerbaliser` is the deterministic default (it
groups neighbours by their genre/category/author/brand facets); :class:`LLMVerbaliser` asks any
LangChain chat model to do the clustering and repairs what it returns.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from starrec.contract.tool_names import ITEM_CF, USER_CF, AgentToolName

MAX_REPRESENTATIVES = 5
MAX_GROUPS = 4
NOUNS = {"movie": "movie", "book": "book", "product": "product", "business": "business", "item": "item"}


@dataclass(frozen=True, slots=True)
class NeighbourInfo:
    """One neighbour with what the verbaliser may say about it."""

    id: str
    title: str
    facets: tuple[str, ...]
    shared: int


@dataclass(slots=True)
class EvidenceRequest:
    """Everything needed to verbalise one anchor's neighbours."""

    tool: AgentToolName
    anchor: str
    anchor_title: str
    anchor_facets: tuple[str, ...]
    """Item-CF: the anchor item's facets. User-CF: facets of every item in the user's history."""
    neighbours: list[NeighbourInfo]
    history_size: int = 0
    """User-CF only: how many items the user interacted with."""
    noun: str = "item"

    def fingerprint(self) -> str:
        """Hash of the neighbour set (and what the anchor is): the LLM cache key."""
        payload = [self.tool, self.anchor, self.noun, [(n.id, n.shared) for n in self.neighbours]]
        return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode("utf-8")).hexdigest()[:32]


@dataclass(slots=True)
class EvidenceGroup:
    name: str
    explanation: str
    item_ids: list[str]
    size: int = 0


@dataclass(slots=True)
class Verbalised:
    text: str
    groups: list[EvidenceGroup] = field(default_factory=list)
    by: str = "deterministic"


def plural(noun: str, count: int) -> str:
    if count == 1:
        return noun
    return "businesses" if noun == "business" else f"{noun}s"


def facet_parts(facet: str) -> tuple[str, str]:
    kind, _, label = facet.partition("=")
    return (kind, label) if label else ("category", kind)


def not_in_graph_message(tool: str, anchor: str) -> str:
    what = "item" if tool == ITEM_CF else "user"
    return (
        f"{what.capitalize()} {anchor!r} is not in graph: it has no training interactions, so there is no "
        f"collaborative evidence for it. Rely on metadata and the user history instead."
    )


def no_neighbours_message(request: EvidenceRequest) -> str:
    if request.tool == ITEM_CF:
        return (
            f'Item-CF for {request.noun} {request.anchor} "{request.anchor_title}": no other '
            f"{plural(request.noun, 2)} share a user with it, so there is no co-interaction signal."
        )
    return (
        f"User-CF for user {request.anchor}: no other user shares an interacted {request.noun} "
        "with this user "
        f"(or similar users liked nothing new), so there is no collaborative signal."
    )


def _header(request: EvidenceRequest, group_count: int) -> str:
    count = len(request.neighbours)
    things = plural(request.noun, count)
    if request.tool == ITEM_CF:
        return (
            f'Item-CF for {request.noun} {request.anchor} "{request.anchor_title}": '
            f"the {count} {things} most often "
            f"interacted with by the same users, in {group_count} group{'s' if group_count != 1 else ''}."
        )
    return (
        f"User-CF for user {request.anchor} "
        f"({request.history_size} {plural(request.noun, request.history_size)} "
        f"in history): users with the most shared {plural(request.noun, 2)} "
        f"also liked these {count} new {things}, "
        f"in {group_count} group{'s' if group_count != 1 else ''}."
    )


def render_evidence(request: EvidenceRequest, groups: Sequence[EvidenceGroup]) -> str:
    """The evidence text: header line, then one line per group with representatives and titles."""
    titles = {n.id: n for n in request.neighbours}
    lines = [_header(request, len(groups))]
    for group in groups:
        examples = ", ".join(
            f'{item} "{titles[item].title}" ({titles[item].shared})'
            for item in group.item_ids
            if item in titles
        )
        size = group.size or len(group.item_ids)
        lines.append(
            f"- {group.name} ({size} {plural(request.noun, size)}): {group.explanation} Examples: {examples}."
        )
    return "\n".join(lines)


class MetadataVerbaliser:
    """Deterministic grouping by shared facets (greedy cover: the facet shared by most neighbours first).

    Its fixed wording has no apostrophes, so evidence round-trips through FalkorDB's Bolt layer.
    """

    name = "deterministic"

    def __init__(self, max_groups: int = MAX_GROUPS, representatives: int = MAX_REPRESENTATIVES) -> None:
        self.max_groups = max_groups
        self.representatives = representatives

    def group(self, request: EvidenceRequest) -> list[EvidenceGroup]:
        remaining = list(request.neighbours)
        groups: list[EvidenceGroup] = []
        context = Counter(request.anchor_facets)
        while remaining and len(groups) < self.max_groups:
            counts = Counter(facet for n in remaining for facet in set(n.facets))
            if not counts:
                break
            weight = Counter()
            for n in remaining:
                for facet in set(n.facets):
                    weight[facet] += n.shared
            facet = min(counts, key=lambda f: (-counts[f], -weight[f], f))
            if counts[facet] < 2:
                break
            members = [n for n in remaining if facet in n.facets]
            remaining = [n for n in remaining if facet not in n.facets]
            groups.append(self._facet_group(request, facet, members, context))
        if remaining:
            groups.append(self._other_group(request, remaining))
        return groups

    def _facet_group(
        self, request: EvidenceRequest, facet: str, members: list[NeighbourInfo], context: Counter[str]
    ) -> EvidenceGroup:
        kind, label = facet_parts(facet)
        things = plural(request.noun, 2)
        if request.tool == ITEM_CF:
            link = (
                f"it shares the {kind} {label} with the anchor"
                if facet in context
                else f"a {kind} the anchor itself does not have, so a cross-{kind} link"
            )
            explanation = f"Users of the anchor also chose {label} {things}; {link}."
        else:
            own = context.get(facet, 0)
            relation = (
                f"{own} of the {request.history_size} {plural(request.noun, request.history_size)} "
                f"in the user history are {label} too"
                if own
                else f"nothing in the user history is {label}, so this is a new direction"
            )
            explanation = f"Similar users liked {label} {things} ({kind}); {relation}."
        return EvidenceGroup(
            label, explanation, [n.id for n in members[: self.representatives]], len(members)
        )

    def _other_group(self, request: EvidenceRequest, members: list[NeighbourInfo]) -> EvidenceGroup:
        things = plural(request.noun, 2)
        explanation = (
            f"{things.capitalize()} with no shared genre/category/author/brand; "
            "linked only by co-interaction."
        )
        return EvidenceGroup(
            "Other", explanation, [n.id for n in members[: self.representatives]], len(members)
        )

    def verbalise(self, request: EvidenceRequest) -> Verbalised:
        if not request.neighbours:
            return Verbalised(no_neighbours_message(request), [], self.name)
        groups = self.group(request)
        return Verbalised(render_evidence(request, groups), groups, self.name)


# ---------------------------------------------------------------------------------------------
# LLM answers: one line per category, "CATEGORY: name | explanation | id, id, id".

LLM_LINE = re.compile(
    r"^\s*(?:[-*]|\d+[.)])?\s*(?:\**CATEGORY\**\s*:\s*)?(?P<body>[^|]+\|.+\|.+)$", re.IGNORECASE
)
"""``CATEGORY: name | explanation | ids``; small models often drop the label, so it is optional."""


@dataclass(slots=True)
class ParsedGroups:
    groups: list[EvidenceGroup]
    dropped_ids: int = 0
    """Ids the model cited that are not among the neighbours (hallucinated or mistyped)."""


def parse_llm_groups(text: str, request: EvidenceRequest, max_groups: int = MAX_GROUPS) -> ParsedGroups:
    """Parse and repair an LLM answer: unknown ids are dropped and counted, groups capped."""
    known = {n.id for n in request.neighbours}
    groups: list[EvidenceGroup] = []
    dropped = 0
    for line in text.splitlines():
        match = LLM_LINE.match(line)
        if not match:
            continue
        parts = [part.strip() for part in match.group("body").split("|")]
        if len(parts) < 3 or not parts[0]:
            continue
        cited = [token.strip().strip("\"'[]()") for token in parts[-1].split(",") if token.strip()]
        valid = list(dict.fromkeys(item for item in cited if item in known))
        dropped += len([item for item in cited if item not in known])
        if not valid:
            continue
        explanation = " | ".join(parts[1:-1]).rstrip(".") + "."
        groups.append(EvidenceGroup(parts[0], explanation, valid[:MAX_REPRESENTATIVES], len(valid)))
        if len(groups) == max_groups:
            break
    return ParsedGroups(groups, dropped)


def llm_prompt(request: EvidenceRequest) -> str:
    """The clustering instruction for one anchor (paper: named categories, one line each, <= 5 ids)."""
    things = plural(request.noun, 2)
    if request.tool == ITEM_CF:
        task = (
            f'Users who interacted with the {request.noun} {request.anchor} "{request.anchor_title}" also '
            f"interacted with these {things} (id | title | facets | number of shared users):"
        )
    else:
        top_history = ", ".join(
            f"{facet_parts(f)[1]} x{c}" for f, c in Counter(request.anchor_facets).most_common(6)
        )
        task = (
            f"User {request.anchor} has {request.history_size} {things} in their history (main facets: "
            f"{top_history or 'unknown'}). Users with similar histories also liked these {things} "
            f"(id | title | facets | number of similar users):"
        )
    listing = "\n".join(
        f"{n.id} | {n.title} | {', '.join(facet_parts(f)[1] for f in n.facets) or '-'} | {n.shared}"
        for n in request.neighbours
    )
    relation = " and how it relates to the user's history" if request.tool == USER_CF else ""
    # A concrete line in the right shape: small models copy formats far better than they follow them.
    first = request.neighbours[:2]
    shared_facets = set(first[0].facets).intersection(*(n.facets for n in first[1:])) if first else set()
    example_name = facet_parts(min(shared_facets))[1] if shared_facets else "Popular picks"
    example_reason = f"{things.capitalize()} the same people chose together"
    example_ids = ", ".join(n.id for n in first)
    return (
        f"{task}\n{listing}\n\nCluster these {things} into at most {MAX_GROUPS} named categories. For each "
        f"category write exactly one line:\n"
        f"CATEGORY: <short name> | <one sentence on what unites it{relation}> | "
        f"<up to {MAX_REPRESENTATIVES} ids from the list, comma-separated>\nUse only ids from the list. "
        f"Write nothing else. Example line:\nCATEGORY: {example_name} | {example_reason} | {example_ids}"
    )
