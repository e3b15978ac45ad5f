"""SFT examples for the planner alone (``starrec distill sft --target planner``; the paper's MARS-Planner).

The example of a run is its recorded planner step: the prompt is the messages of the planner's
first LLM call, exactly as the teacher was asked (the shared view of the user, the analyst menu,
the request), and the completion is the plan the teacher's runs went on with. At serving time
(``starrec eval --method mars_planner``) the fine-tuned planner is asked by the same MARS node
code, so it sees exactly the text it was trained on.

A planner step that repaired or replaced its plan (fallback, invalid or empty plan) teaches
nothing but the repair and is skipped; so are runs without a planner step (``no_planner``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from starrec.contract.roster import PLANNER
from starrec.contract.trajectory import StepRecord, Trajectory
from starrec.llm.json_repair import JSONExtractionError, extract_json_with_repairs

CHAT_ROLES = {"system": "system", "human": "user", "user": "user", "ai": "assistant",
              "assistant": "assistant"}  # fmt: skip
"""LangChain message types (as recorded) -> chat-template roles."""

PLAN_REPAIRS = ("fallback", "plan_empty", "plan_invalid_agent")
"""Planner repairs that make the recorded plan something other than the model's own answer."""


def planner_step(trajectory: Trajectory) -> StepRecord | None:
    return next((step for step in trajectory.steps if step.node == PLANNER and step.error is None), None)


def completion_text(step: StepRecord) -> str:
    """The planner's last response when it is a JSON plan of the executed agents, verbatim; else the
    plan the run executed, as the JSON the planner is asked for (native structured calls record a
    tool call instead)."""
    agents = list(step.output.get("agents") or [])
    response = step.llm_calls[-1].response if step.llm_calls else ""
    try:
        answer = extract_json_with_repairs(response, expect=dict).value
    except JSONExtractionError:
        answer = None
    if isinstance(answer, dict) and answer.get("agents") == agents:
        return response
    return json.dumps({"thinking": step.thinking, "agents": agents}, ensure_ascii=False)


def skip_reason(trajectory: Trajectory) -> str | None:
    """Why a run gives no planner example (None when it does)."""
    step = planner_step(trajectory)
    if step is None:
        return "no planner step"
    if not step.llm_calls or not step.output.get("agents"):
        return "no planner call"
    if any(step.repairs.get(key) for key in PLAN_REPAIRS):
        return "plan repaired"
    return None


def planner_rows(trajectories: Sequence[Trajectory]) -> list[dict[str, Any]]:
    """Conversational prompt/completion rows (TRL's format) of the runs' planner steps.

    Raises a ``ValueError`` with the skip counts when no run gives an example.
    """
    rows: list[dict[str, Any]] = []
    skipped: Counter[str] = Counter()
    for trajectory in trajectories:
        reason = skip_reason(trajectory)
        if reason is not None:
            skipped[reason] += 1
            continue
        step = planner_step(trajectory)
        assert step is not None  # skip_reason checked it
        prompt = [
            {"role": CHAT_ROLES[message["role"]], "content": message["content"]}
            for message in step.llm_calls[0].messages
        ]
        rows.append(
            {
                "prompt": prompt,
                "completion": [{"role": "assistant", "content": completion_text(step)}],
                "task_id": trajectory.task_id,
                "pass": trajectory.pass_,
                "scenario": trajectory.scenario,
                "ground_truth": trajectory.ground_truth or "",
            }
        )
    if not rows:
        counts = ", ".join(f"{reason}: {count}" for reason, count in sorted(skipped.items())) or "no runs"
        raise ValueError(
            f"no planner example in the kept runs ({counts}); record runs with the planner on "
            "(not --ablation no_planner)"
        )
    return rows
