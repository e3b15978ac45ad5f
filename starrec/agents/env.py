"""What an agent runs with (:class:`AgentEnv`) and what it reports doing (:class:`Counters`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.tools import BaseTool

from starrec.data.user_view import domain_words


@dataclass
class Counters:
    """What one agent call did, for the trajectory and the stats."""

    repairs: dict[str, int] = field(default_factory=dict)
    tool_calls: int = 0
    tool_errors: int = 0
    llm_calls: int = 0
    warnings: list[str] = field(default_factory=list)

    def count(self, name: str, amount: int = 1) -> None:
        if amount:
            self.repairs[name] = self.repairs.get(name, 0) + amount


@dataclass
class AgentEnv:
    """What an agent runs with: the model, the tools it may call and how to talk to both."""

    model: BaseChatModel
    tools: Sequence[BaseTool] = ()
    domain: str = "item"
    max_tool_calls: int = 2
    tool_protocol: Literal["native", "text"] = "text"
    tool_choice: Literal["auto", "required"] = "auto"
    structured: Literal["native", "json"] = "json"
    forced_call_model: Any = None
    """Text protocol, ``tool_choice="required"``: a model constrained to write one tool call's JSON
    (its first turn is then a valid call by construction); None = ask ``model`` and parse."""

    @property
    def words(self) -> dict[str, str]:
        return domain_words(self.domain)
