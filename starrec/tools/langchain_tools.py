"""The CF tools as LangChain tools (what MARS agents bind and call).

Each tool returns the evidence text as its content (what the model reads) and the full
:class:`~starrec.tools.base.CFResult` (neighbours, Cypher, parameters, row counts) as the tool
message artifact, so trajectories and inspectors keep the structured side.
"""

from __future__ import annotations

from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field

from starrec.contract.tool_names import CANDIDATE_CF, ITEM_CF, USER_CF, USER_VALUES
from starrec.tools.base import CFResult, EvidenceSource, ValuesResult, ValuesSource, candidate_cf_async
from starrec.tools.candidate_cf import CandidateCFResult

MAX_K = 50
MAX_CANDIDATES = 100


class ItemCFArgs(BaseModel):
    item_id: str = Field(
        description="Id of the anchor item, exactly as it appears in the history or candidates."
    )
    k: int = Field(default=10, ge=1, le=MAX_K, description="How many co-interacted items to consider.")


class UserCFArgs(BaseModel):
    user_id: str = Field(description="Id of the user whose similar users to consult.")
    k: int = Field(
        default=10, ge=1, le=MAX_K, description="How many items liked by similar users to consider."
    )


class CandidateCFArgs(BaseModel):
    user_id: str = Field(description="Id of the user the candidates are for.")
    candidate_ids: list[str] = Field(
        min_length=1, max_length=MAX_CANDIDATES, description="The candidate ids to score, as given."
    )
    k: int | None = Field(
        default=None, ge=1, le=MAX_CANDIDATES, description="Show only the k strongest candidates (all)."
    )


ITEM_CF_DESCRIPTION = (
    "Item-CF (Item -> User -> Item): items most often interacted with by the users of an anchor item, "
    "grouped into named categories with representative ids. Use it to ground what a history item says "
    "about the user's tastes."
)
USER_CF_DESCRIPTION = (
    "User-CF (User -> Item -> User): what users with the most overlapping histories also liked, grouped "
    "into named categories and related to the user's own history."
)

CANDIDATE_CF_DESCRIPTION = (
    "Candidate CF: scores every candidate against the user's recent history (how many recent items it "
    "was co-chosen with, how many of the nearest users chose it), strongest first. Use it to compare "
    "candidates before ranking."
)


def render_tool_output(result: CFResult) -> str:
    """What the agent reads: the evidence (the structured result travels as the artifact)."""
    return result.evidence


def make_cf_tools(source: EvidenceSource) -> list[BaseTool]:
    """``[item_cf, user_cf, candidate_cf]`` LangChain tools (content = evidence, artifact = the result)."""

    def item_cf(item_id: str, k: int = 10) -> tuple[str, CFResult]:
        result = source.item_cf(item_id, k)
        return render_tool_output(result), result

    def user_cf(user_id: str, k: int = 10) -> tuple[str, CFResult]:
        result = source.user_cf(user_id, k)
        return render_tool_output(result), result

    def candidate_cf(
        user_id: str, candidate_ids: list[str], k: int | None = None
    ) -> tuple[str, CandidateCFResult]:
        result = source.candidate_cf(user_id, candidate_ids, None, k)
        return result.evidence, result

    async def acandidate_cf(
        user_id: str, candidate_ids: list[str], k: int | None = None
    ) -> tuple[str, CandidateCFResult]:
        """Inline when the source scores from memory; otherwise in a thread, as sync tools run."""
        result = await candidate_cf_async(source, user_id, candidate_ids, None, k)
        return result.evidence, result

    return [
        StructuredTool.from_function(
            func=item_cf,
            name=ITEM_CF,
            description=ITEM_CF_DESCRIPTION,
            args_schema=ItemCFArgs,
            response_format="content_and_artifact",
        ),
        StructuredTool.from_function(
            func=user_cf,
            name=USER_CF,
            description=USER_CF_DESCRIPTION,
            args_schema=UserCFArgs,
            response_format="content_and_artifact",
        ),
        StructuredTool.from_function(
            func=candidate_cf,
            coroutine=acandidate_cf,
            name=CANDIDATE_CF,
            description=CANDIDATE_CF_DESCRIPTION,
            args_schema=CandidateCFArgs,
            response_format="content_and_artifact",
        ),
    ]


class UserValuesArgs(BaseModel):
    user_id: str = Field(description="Id of the user whose mined value profile to read.")


USER_VALUES_DESCRIPTION = (
    "User values: the user's mined Schwartz value profile (each value's weight, a one-line reason and "
    "the items that show it), strongest first; says so when none is stored."
)


def make_values_tool(source: ValuesSource) -> BaseTool:
    """The ``user_values`` lookup (content = the profile as text, artifact = the :class:`ValuesResult`)."""

    def user_values(user_id: str) -> tuple[str, ValuesResult]:
        result = source.value_profile(user_id)
        return result.evidence, result

    asynchronous = getattr(source, "avalue_profile", None)  # a source that may call a model (live mining)

    async def auser_values(user_id: str) -> tuple[str, ValuesResult]:
        result = await asynchronous(user_id) if asynchronous else source.value_profile(user_id)
        return result.evidence, result

    return StructuredTool.from_function(
        func=user_values,
        coroutine=auser_values if asynchronous else None,
        name=USER_VALUES,
        description=USER_VALUES_DESCRIPTION,
        args_schema=UserValuesArgs,
        response_format="content_and_artifact",
    )
