"""Hand-built teacher trajectories shaped like the MARS recorder's (shared by the distill tests)."""

from __future__ import annotations

import random

from starrec.distill.trajectory import StepRecord, ToolCallRecord, Trajectory

CANDIDATES = [
    str(item)
    for item in (
        242,
        302,
        377,
        51,
        346,
        474,
        265,
        465,
        451,
        86,
        1014,
        222,
        40,
        29,
        785,
        387,
        274,
        1042,
        1184,
        392,
    )
]


def make_trajectory(
    task_id: str = "t1",
    pass_: int = 0,
    ground_truth: str = "302",
    top: str | None = None,
    scenario: str = "classic",
    correction: bool = True,
    settings: dict | None = None,
    seed: int = 0,
) -> Trajectory:
    """A full run: abstractor, planner, three agents with tools, failed reflection, one correction, ranker."""
    rng = random.Random(seed)
    candidates = CANDIDATES[:]
    rng.shuffle(candidates)
    ranking = candidates[:]
    first = top or ground_truth
    ranking.remove(first)
    ranking.insert(0, first)
    steps = [
        StepRecord(node="abstractor", output={"summary": "Watched 1990s dramas, then comedies."}),
        StepRecord(
            node="planner",
            thinking="Long history with a recent genre shift: profile, history, recent.",
            output={"agents": ["user_profile", "historical_interest", "recent_interest"]},
        ),
        StepRecord(
            node="user_profile",
            thinking="Ratings suggest a selective adult viewer.",
            output={"conclusions": ["adult viewer", "rates dramas highly"]},
        ),
        StepRecord(
            node="historical_interest",
            thinking="Anchor on the best rated drama.",
            tool_calls=[
                ToolCallRecord(
                    name="item_cf",
                    arguments={"item_id": "242"},
                    response="Category 'Festival dramas': liked with 242: 302, 346 (ids 302, 346).",
                )
            ],
            output={"conclusions": ["festival dramas"], "evidence_ids": ["302", "346"]},
        ),
        StepRecord(
            node="recent_interest",
            tool_calls=[
                ToolCallRecord(
                    name="user_cf",
                    arguments={"user_id": "u7"},
                    response="Similar users recently liked light comedies (ids 377, 51).",
                ),
                ToolCallRecord(name="item_cf", arguments={"item_id": "51"}, response="Comedies: 265, 465."),
            ],
            output={"conclusions": ["light comedies lately"]},
        ),
        StepRecord(
            node="reflector",
            output={
                "passed": False,
                "feedback": [{"agent": "recent_interest", "suggestion": "weigh ratings"}],
            }
            if correction
            else {"passed": True},
        ),
    ]
    if correction:
        steps.append(
            StepRecord(
                node="recent_interest",
                round=1,
                thinking="Ratings of the comedies are mediocre; dramas still dominate.",
                output={"conclusions": ["comedies sampled, dramas preferred"]},
            )
        )
    steps.append(
        StepRecord(node="ranker", thinking="Dramas first, then comedies.", output={"ranking": ranking})
    )
    return Trajectory(
        task_id=task_id,
        pass_=pass_,
        user_id="u7",
        scenario=scenario,
        domain="movie",
        candidates=candidates,
        ground_truth=ground_truth,
        prompt={
            "summary": "Watched 1990s dramas, then comedies.",
            "recent": [{"item_id": "51", "title": "Legends of the Fall (1994)", "stars": 3.0}],
            "candidates": [{"id": item, "title": f"Movie {item}"} for item in candidates],
        },
        ranking=ranking,
        hits={"hit@1": ranking[0] == ground_truth},
        nodes=[step.node for step in steps],
        steps=steps,
        settings=settings or {"use_tools": True, "use_planner": True, "use_reflector": True},
    )
