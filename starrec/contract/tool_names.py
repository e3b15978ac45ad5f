"""The names of the collaborative-filtering tools, as agents, trajectories and the student write them."""

from __future__ import annotations

from typing import Literal, get_args

AgentToolName = Literal["item_cf", "user_cf", "user_values"]
"""The tools an agent (or the STAR student) may call inside an analysis."""

ITEM_CF: AgentToolName = "item_cf"
USER_CF: AgentToolName = "user_cf"
USER_VALUES: AgentToolName = "user_values"
"""The stored value profile of a user (ZOOM); the user_values agent looks it up."""
CANDIDATE_CF = "candidate_cf"
"""The ranker's one-call prior over all candidates (not offered to the analysis agents)."""

AGENT_TOOL_NAMES: frozenset[str] = frozenset(get_args(AgentToolName))
