"""The agent roster: every execution agent MARS runs and STAR learns to imitate, in one list.

An entry names the graph node, the tag of its phase in the STAR chain of thought, the line the
planner and the student's instructions describe it with, its prompt template, and its *focus*:
the digest of the data the agent is shown on top of the shared view of the user. Adding an agent
is one :class:`AgentSpec` in :data:`ROSTER` plus its prompt file in ``starrec/agents/prompts/``
(``docs/architecture.md`` shows the diff); an app can also pass its own :class:`Roster`.

The graph's fixed nodes (abstractor, planner, reflector, ranker) are named here too, because
trajectories record them as ``StepRecord.node``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

from starrec.contract.tool_names import USER_VALUES
from starrec.data.user_view import UserView, format_entries

ABSTRACTOR, PLANNER, REFLECTOR, RANKER = "abstractor", "planner", "reflector", "ranker"
FIXED_NODES: tuple[str, ...] = (ABSTRACTOR, PLANNER, REFLECTOR, RANKER)

Focus = Callable[[UserView], str]
"""An agent's digest of the data (rating habits, category counts, ...); '' = nothing extra."""

RECENT_LATEST = 3
"""How many of the latest items the recent-interest agent singles out."""


def no_focus(view: UserView) -> str:
    """The shared view of the user is all the agent sees."""
    return ""


def rating_habits(view: UserView) -> str:
    """Rating habits: how generous and how selective the user is (decision style, spending)."""
    stars = [float(e["stars"]) for e in view.recent if e.get("stars") is not None]
    if not stars:
        return "No ratings are available."
    high = sum(s >= 4 for s in stars) / len(stars)
    return (
        f"Rating habits over the recent items: mean {mean(stars):.1f} stars, "
        f"{high:.0%} rated 4 or more, lowest {min(stars):g}."
    )


def category_counts(view: UserView) -> str:
    """Category counts over the items the agent can see (recurring = stable, singletons = noise)."""
    counts = Counter(label for entry in view.recent for label in entry.get("categories", []))
    if not counts:
        return ""
    common = ", ".join(f"{name} x{n}" for name, n in counts.most_common(6))
    return f"Category counts in the recent items: {common}. Compare them with the long-term summary."


def latest_items(view: UserView) -> str:
    """The very latest items, singled out: they say most about what comes next."""
    latest = view.recent[-RECENT_LATEST:]
    return f"The {len(latest)} latest, newest last:\n{format_entries(latest)}" if latest else ""


def new_categories(view: UserView) -> str:
    """Categories the candidates offer that the user's recent items lack: candidate new directions."""
    seen = {label for entry in view.recent for label in entry.get("categories", [])}
    offered = Counter(label for entry in view.candidates for label in entry.get("categories", []))
    new = [name for name, _ in offered.most_common() if name not in seen][:6]
    return f"Categories among the candidates that are new for this user: {', '.join(new)}." if new else ""


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """One execution agent."""

    name: str
    """Graph node name; also how the planner, the reflector and trajectories name the agent."""
    tag: str
    """Its phase tag in the STAR chain of thought (``historical_analysis``)."""
    role: str
    """One line in the planner's list of analysts (may use the domain words: ``$items``, ``$user``)."""
    phase_hint: str
    """What its phase holds, in the student's instructions (``stable long-term interests``)."""
    focus: Focus = no_focus
    """The agent's digest of the data, appended to the shared view of the user."""
    prompt: str | Path = ""
    """Its system prompt: a template name in ``starrec/agents/prompts/`` ('' = ``name``) or a file."""
    lookup: str = ""
    """A tool the node calls with the user's id before the agent answers ('' = none); the answer is
    appended to the agent's focus and recorded as a tool call. An agent with a lookup runs only when
    tools are on and the evidence source has data for it (see ``docs/values.md``)."""
    switch: str = ""
    """The boolean ``Context`` field that switches this agent off (an ablation), '' = always on."""

    @property
    def template(self) -> str | Path:
        return self.prompt or self.name


@dataclass(frozen=True)
class Roster:
    """The execution agents of one MARS graph, in the fixed order used when the planner is off."""

    agents: tuple[AgentSpec, ...]

    def __post_init__(self) -> None:
        names = [agent.name for agent in self.agents]
        tags = [agent.tag for agent in self.agents]
        for kind, values in (("name", names), ("tag", tags)):
            repeated = sorted({value for value in values if values.count(value) > 1})
            if repeated:
                raise ValueError(f"agent roster: {kind} {', '.join(repeated)} used by more than one agent")
        clashes = sorted(set(names) & set(FIXED_NODES))
        if clashes or not all(names) or not all(tags):
            raise ValueError(
                f"agent roster: every agent needs a non-empty name and tag, and no name may be a fixed "
                f"node ({', '.join(FIXED_NODES)}); got names {names}"
            )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(agent.name for agent in self.agents)

    @property
    def tags(self) -> dict[str, str]:
        """Agent name -> its tag in the serialised chain of thought."""
        return {agent.name: agent.tag for agent in self.agents}

    @property
    def node_names(self) -> frozenset[str]:
        """Every graph node a trajectory can record."""
        return frozenset({*FIXED_NODES, *self.names})

    def check_nodes(self, names: Iterable[str], what: str) -> None:
        """A one-line error for a name that is no node of this graph (e.g. a key of ``--llm-for``)."""
        unknown = sorted(set(names) - self.node_names)
        if unknown:
            valid = ", ".join([*FIXED_NODES, *self.names])
            raise ValueError(f"{what}: unknown node {', '.join(map(repr, unknown))}; valid nodes: {valid}")

    def agent(self, name: str) -> AgentSpec:
        for agent in self.agents:
            if agent.name == name:
                return agent
        raise KeyError(f"no agent {name!r} in the roster; known: {', '.join(self.names)}")

    def only(self, names: Iterable[str]) -> Roster:
        """This roster cut to ``names`` (the agents enabled in one run), in roster order."""
        keep = set(names)
        return Roster(tuple(agent for agent in self.agents if agent.name in keep))

    def standalone(self) -> Roster:
        """The agents that need no stored data (no ``lookup``): what runs on any dataset, and what the
        student's instructions list unless a caller passes a roster with lookup agents."""
        return Roster(tuple(agent for agent in self.agents if not agent.lookup))

    def extended(self, *agents: AgentSpec) -> Roster:
        """This roster with more agents appended (an app's own analysts)."""
        return Roster((*self.agents, *agents))


ROSTER = Roster(
    (
        AgentSpec(
            name="user_profile",
            tag="user_profile",
            role="persona dimensions the data supports (age, gender, occupation, spending, decision style).",
            phase_hint="persona traits the data supports",
            focus=rating_habits,
        ),
        AgentSpec(
            name="historical_interest",
            tag="historical_analysis",
            role="stable long-term interests, noise filtered out.",
            phase_hint="stable long-term interests",
            focus=category_counts,
        ),
        AgentSpec(
            name="recent_interest",
            tag="recent_analysis",
            role="short-term shifts and new needs from the latest $items.",
            phase_hint="short-term shifts",
            focus=latest_items,
        ),
        AgentSpec(
            name="interest_divergence",
            tag="divergence_analysis",
            role="plausible new directions that extend known interests, for diversity.",
            phase_hint="plausible new directions",
            focus=new_categories,
        ),
        AgentSpec(
            name="user_values",
            tag="values_analysis",
            role="the values (Schwartz: benevolence, stimulation, security, ...) behind the $user's choices, "
            "from the mined value profile.",
            phase_hint="the user's values",
            lookup=USER_VALUES,
            switch="use_values",
        ),
    )
)
"""The house roster: MARS's four execution agents and ZOOM's user-values agent (which runs only where
value profiles are stored, see ``docs/values.md``)."""

AGENT_NODES: tuple[str, ...] = ROSTER.names
"""The house agents' node names, in the fixed order used when the planner is off."""
AGENT_TAGS: dict[str, str] = ROSTER.tags
"""House agent node name -> its tag in the serialised chain of thought."""
NODE_NAMES: frozenset[str] = ROSTER.node_names
"""Every node of the house graph."""
