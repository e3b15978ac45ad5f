"""Hand-built teacher trajectories shaped like the MARS recorder's (shared by the distill tests)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starrec.contract.trajectory import StepRecord, ToolCallRecord, Trajectory

if TYPE_CHECKING:
    from starrec.llm.scripted import ScriptedChatModel

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


def scripted_teacher(truths: dict[frozenset[str], str]) -> ScriptedChatModel:
    """Agents call tools, the reflector fails once (one correction round), the ranker alternates between
    putting the ground truth first (odd calls) and last, so outcome filtering has something to do."""
    from mars_fixtures import analysis, default_script

    from starrec.llm.scripted import ScriptedChatModel

    calls = {"ranker": 0}

    def ranker(messages: list[Any]) -> str:
        shown = re.findall(r"\[(m\d+)\]", str(messages[-1].content).split("andidates")[-1])
        candidates = list(dict.fromkeys(shown))
        truth = truths[frozenset(candidates)]
        calls["ranker"] += 1
        others = [item for item in candidates if item != truth]
        order = [truth, *others] if calls["ranker"] % 2 else [*others, truth]
        return json.dumps({"thinking": "rank by genre fit", "ranking": order})

    script = default_script([])
    script["historical_interest"] = [
        '<tool_call>{"name": "item_cf", "arguments": {"item_id": "m1"}}</tool_call>',
        analysis("drama fan"),
    ]
    failed = {
        "thinking": "check",
        "verdict": "fail",
        "issues": [{"agent": "recent_interest", "suggestion": "ratings"}],
    }
    script["reflector"] = [json.dumps(failed)]
    script["ranker"] = [ranker]
    return ScriptedChatModel(responses=script, cycle=True)


def record_scripted_runs(
    root: Path, users: tuple[str, ...], passes: int = 2, **context: Any
) -> dict[str, Path]:
    """Record ``passes`` runs per task with the real MARS graph and :func:`scripted_teacher` into ``root``
    (``context``: Context overrides such as ``use_planner=False``)."""
    from mars_fixtures import FakeEvidence, build_movie_dataset, make_task

    from starrec.data.agentsociety import write_dataset
    from starrec.data.tasks import write_tasks
    from starrec.graphs.context import Context
    from starrec.graphs.teach import teach

    dataset = build_movie_dataset()
    data = write_dataset(dataset, root / "data")
    tasks = [make_task(dataset, user, index) for index, user in enumerate(users)]
    write_tasks(tasks, root / "tasks")
    model = scripted_teacher({frozenset(task.candidates): task.ground_truth or "" for task in tasks})
    summary = teach(
        data,
        root / "tasks",
        root / "runs",
        # The raw LLM order, so the scripted ranker alone decides which runs hit (the fixture's
        # small graph ranks the truth first, and agreement fusion would keep it there).
        Context(chunk_size=3, **{"ranker_fusion": "llm", **context}),
        chat_model=model,
        evidence=FakeEvidence(dataset),
        passes=passes,
    )
    assert summary.runs == passes * len(users) and summary.errors == 0, summary
    return {"root": root, "data": data, "tasks": root / "tasks", "runs": root / "runs"}


ML100K_RUNS = Path(__file__).parent / "data" / "ml100k_teacher_runs.jsonl"
"""Real MARS runs on MovieLens-100k (SmolLM2-135M teacher), trimmed to what serialisation reads."""


def ml100k_runs() -> list[Trajectory]:
    """The recorded ML-100k teacher runs plus :func:`heavy_ml100k_trajectory` (the worst shape)."""
    from starrec.contract.runs_file import load_trajectories

    return [*load_trajectories(ML100K_RUNS), heavy_ml100k_trajectory()]


ML100K_CANDIDATES = ["50", "181", "258", "100", "294", "286", "288", "1", "300", "121",
                     "174", "127", "56", "7", "98", "237", "117", "172", "222", "204"]  # fmt: skip
ML100K_EVIDENCE = (
    "Item-CF for [{anchor}] (users who watched it also watched): "
    + "; ".join(
        f"[{item}] Movie title {item} (19{90 + n % 9}) with {40 - n} shared viewers"
        for n, item in enumerate(ML100K_CANDIDATES)
    )
    + ". Categories: 'Nineties dramas' (ids 50, 181, 258): acclaimed dramas most of these viewers rate 4+; "
    "'Action classics' (ids 174, 127, 56): older action films they return to."
)


def heavy_ml100k_trajectory() -> Trajectory:
    """A verbose, tool-heavy ML-100k-shaped run: the planner runs all four agents, each thinks at
    length and lists six long conclusions, four tool calls, a failed reflection flagging two agents
    and a correction round: the shape that most strains the generated-token budget."""

    def sentence(topic: str, words: int) -> str:
        return (
            f"The user {topic} "
            + " ".join(["and", "often", "watches", "similar", "films"] * words)[:400]
            + "."
        )

    def agent(node: str, anchor: str | None, round_: int = 0) -> StepRecord:
        calls = []
        if anchor is not None:
            calls.append(
                ToolCallRecord(
                    name="item_cf",
                    arguments={"item_id": anchor},
                    response=ML100K_EVIDENCE.format(anchor=anchor),
                )
            )
        return StepRecord(
            node=node,
            round=round_,
            thinking=" ".join(sentence(f"shows {node} signal {n}", 4) for n in range(4)),
            tool_calls=calls,
            output={
                "conclusions": [sentence(f"prefers genre {n} of the nineties", 3) for n in range(6)],
                "evidence_ids": ML100K_CANDIDATES[:5],
                **({"correction": "Weigh the ratings of the recent films."} if round_ else {}),
            },
        )

    ranking = ML100K_CANDIDATES[::-1]
    agents = ["user_profile", "historical_interest", "recent_interest", "interest_divergence"]
    steps = [
        StepRecord(node="abstractor", output={"summary": "Watched 1990s dramas, then action."}),
        StepRecord(node="planner", thinking=sentence("has a long history", 6), output={"agents": agents}),
        agent("user_profile", None),
        agent("historical_interest", "50"),
        agent("recent_interest", "181"),
        agent("interest_divergence", "258"),
        StepRecord(
            node="reflector",
            thinking=sentence("is described inconsistently", 5),
            output={
                "passed": False,
                "feedback": [
                    {"agent": "recent_interest", "suggestion": sentence("rated the recent films low", 3)},
                    {"agent": "interest_divergence", "suggestion": sentence("needs new genres", 3)},
                ],
            },
        ),
        agent("recent_interest", "100", round_=1),
        agent("interest_divergence", None, round_=1),
        StepRecord(node="ranker", thinking=sentence("ranks dramas first", 8), output={"ranking": ranking}),
    ]
    return Trajectory(
        task_id="ml-heavy",
        user_id="196",
        scenario="classic",
        domain="movie",
        candidates=ML100K_CANDIDATES,
        ground_truth=ranking[0],
        prompt={"summary": "Watched 1990s dramas, then action.", "candidates": ML100K_CANDIDATES},
        ranking=ranking,
        steps=steps,
        settings={"use_tools": True, "use_planner": True, "use_reflector": True},
    )
