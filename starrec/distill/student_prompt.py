"""The STAR student's prompt: what it is told (its instructions) and shown (the task), in one place.

The MARS recorder stores what each teacher run was asked as ``Trajectory.prompt``
(:func:`task_prompt`); SFT and RL data render recorded runs with :func:`trajectory_messages`,
and serving renders a new request with :func:`request_messages`, so the student sees at serving
time exactly the text it was trained on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from starrec.contract.ablations import check_ablation
from starrec.contract.roster import ROSTER, Roster
from starrec.contract.tool_names import ITEM_CF, USER_CF
from starrec.contract.trajectory import Trajectory
from starrec.data.schema import Dataset, RankRequest
from starrec.data.user_view import candidate_entries, format_entry
from starrec.distill.chain import DEFAULT_RECOMMEND_TOP
from starrec.llm.toolcall_syntax import format_tool_call

STUDENT_ROSTER = ROSTER.standalone()
"""The agents the student's instructions list by default: those that run without stored value profiles,
as in the teacher runs it learns from (a caller with profiles passes ``ROSTER``)."""


def task_prompt(
    summary: str, recent: Sequence[Mapping[str, Any]], candidates: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """What a run was asked, in the form the STAR student is shown (``Trajectory.prompt``)."""
    return {
        "long-term summary": summary,
        "recent behaviours (oldest first)": [format_entry(entry) for entry in recent],
        "candidates": [format_entry(entry) for entry in candidates],
    }


def star_system_prompt(
    ablation: str | None = None,
    roster: Roster = STUDENT_ROSTER,
    recommend_top: int | None = DEFAULT_RECOMMEND_TOP,
) -> str:
    """The student's instructions: the phases of the teacher, written as one compact pass.

    Describes the chain :func:`starrec.distill.chain.serialise_trajectory` writes: one short
    sentence of thinking and compact JSON per phase, and a ``<recommend>`` of at most
    ``recommend_top`` ids (None: all of them).
    """
    check_ablation(ablation)
    lines = [
        "You are STAR, a recommender that reasons in one pass the way a team of specialist agents would.",
        "Write your answer as tagged phases, in this order. Each phase is one short sentence of thinking "
        "followed by compact JSON; keep it brief, the ranking must fit.",
    ]
    if ablation != "no_planner":
        lines.append(
            '<plan>: decide which analyses this user needs and in what order; end with {"agents":[...]} '
            f"using names from {list(roster.names)}."
        )
    phases = ", ".join(f"<{agent.tag}> ({agent.phase_hint})" for agent in roster.agents)
    lines.append(
        f"Then one phase per planned analysis: {phases}. Each ends with "
        '{"conclusions":[...]} (a few short ones).'
    )
    if ablation != "no_tools":
        lines.append(
            "Inside an analysis you may consult collaborative evidence: "
            f"{format_tool_call(ITEM_CF, {'item_id': 'ID'}, compact=True)} lists items liked by people who "
            f"liked ID, {format_tool_call(USER_CF, {'user_id': 'ID'}, compact=True)} what similar users "
            "liked. Stop after </tool_call>; the evidence arrives in <tool_response>."
        )
    if ablation != "no_reflector":
        lines.append(
            '<reflection>: check the analyses for consistency, realism and completeness; end with {"passed":'
            'true} or {"passed":false,"feedback":[{"agent":...,"suggestion":...}]}. If it failed, '
            "redo only the flagged analyses inside <correction>…</correction>."
        )
    if recommend_top is None:
        ranked = "a JSON list of ALL candidate ids, best first, each exactly once"
    else:
        ranked = (
            f"a JSON list of at most {recommend_top} candidate ids, best first, each at most once "
            "(unlisted candidates rank after them)"
        )
    lines.append(f"<recommend>: only {ranked}, then </recommend>.")
    return "\n".join(lines)


def _render_value(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, Mapping):
        return "\n".join(f"- {key}: {_render_inline(item)}" for key, item in value.items())
    if isinstance(value, Sequence):
        return "\n".join(f"- {_render_inline(item)}" for item in value)
    return json.dumps(value, ensure_ascii=False)


def _render_inline(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, Mapping):
        return "; ".join(f"{key}: {_render_inline(item)}" for key, item in value.items())
    return json.dumps(value, ensure_ascii=False)


def build_student_messages(
    prompt: Mapping[str, Any],
    candidates: Sequence[str],
    *,
    domain: str = "item",
    user_id: str = "",
    ablation: str | None = None,
    roster: Roster = STUDENT_ROSTER,
    recommend_top: int | None = DEFAULT_RECOMMEND_TOP,
) -> list[dict[str, str]]:
    """``[system, user]`` messages for one task.

    ``prompt`` is what the teacher was shown (``Trajectory.prompt``: summary, recent items, candidate
    titles, ...); every entry is rendered in order under its key, so serving must build the same dict
    the teacher recorded. ``candidates`` are listed last, in the (already shuffled) order given.
    """
    if not candidates:
        raise ValueError("build_student_messages: the candidate list is empty")
    sections = [f"Task: rank {len(candidates)} candidate {domain}s for user {user_id or '(unknown)'}."]
    for key, value in prompt.items():
        rendered = _render_value(value)
        if rendered:
            sections.append(f"## {key}\n{rendered}")
    sections.append("## candidate ids\n" + json.dumps(list(candidates), ensure_ascii=False))
    return [
        {"role": "system", "content": star_system_prompt(ablation, roster, recommend_top)},
        {"role": "user", "content": "\n\n".join(sections)},
    ]


def trajectory_messages(
    trajectory: Trajectory,
    ablation: str | None = None,
    roster: Roster = STUDENT_ROSTER,
    recommend_top: int | None = DEFAULT_RECOMMEND_TOP,
) -> list[dict[str, str]]:
    """The student prompt for the task a recorded run solved."""
    return build_student_messages(
        trajectory.prompt,
        trajectory.candidates,
        domain=trajectory.domain,
        user_id=trajectory.user_id,
        ablation=ablation,
        roster=roster,
        recommend_top=recommend_top,
    )


def request_messages(
    request: RankRequest,
    dataset: Dataset,
    summary: str,
    recent: Sequence[Mapping[str, Any]],
    *,
    ablation: str | None = None,
    roster: Roster = STUDENT_ROSTER,
    recommend_top: int | None = DEFAULT_RECOMMEND_TOP,
) -> list[dict[str, str]]:
    """The student prompt for a new request, given its abstracted history (summary + last chunk)."""
    prompt = task_prompt(summary, recent, candidate_entries(request.candidates, dataset))
    return build_student_messages(
        prompt,
        request.candidates,
        domain=dataset.domain,
        user_id=request.user_id,
        ablation=ablation,
        roster=roster,
        recommend_top=recommend_top,
    )
