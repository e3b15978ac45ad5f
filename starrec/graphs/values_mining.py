"""``starrec values mine``: the value miner over every user of a graph, batched and resumable.

Each user's history is read from the graph store, which holds the leakage-free view (for a task
user, the ground truth and everything after it were left out when the graph was built), so the
miner never sees a test answer. Profiles go onto the ``User`` nodes batch by batch; every run is
recorded in ``OUT/runs.jsonl``; users that already have a profile are skipped on resume.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel

from starrec.contract.runs_file import RunsFile
from starrec.contract.trajectory import Trajectory
from starrec.data.user_view import HistoryEntry
from starrec.graphs.recording import TrajectoryRecorder
from starrec.graphs.values_graph import MINER_NODES, VALUES_STEP_EVENT, MinerContext, build_values_graph
from starrec.tools.store import GraphStore, batched


@dataclass
class MiningConfig:
    """Knobs of ``starrec values mine`` (the miner's own knobs are in ``context``)."""

    context: MinerContext = field(default_factory=MinerContext)
    users: tuple[str, ...] | None = field(default=None, metadata={"help": "Only these users (default: all)."})
    resume: bool = field(default=True, metadata={"help": "Skip users that already have a profile."})
    batch_size: int = field(default=32, metadata={"help": "Users mined, stored and recorded per batch."})
    concurrency: int = field(default=4, metadata={"help": "Users mined at once."})
    by: str = field(
        default="", metadata={"help": "Label stored with each profile (default: the model spec)."}
    )


def history_of(store: GraphStore, user_id: str) -> list[HistoryEntry]:
    """The user's graph history as agent entries (categories from the ``genre=``/``category=`` facets)."""
    entries: list[HistoryEntry] = []
    for row in store.user_history(user_id):
        facets = [
            str(f).split("=", 1)[1]
            for f in row.get("facets") or ()
            if str(f).startswith(("genre=", "category="))
        ]
        entry: HistoryEntry = {
            "item_id": str(row["item"]),
            "title": row.get("title") or str(row["item"]),
            "categories": facets[:4],
            "stars": row.get("rating"),
        }
        if row.get("ts") is not None:
            entry["date"] = datetime.fromtimestamp(float(row["ts"]), tz=UTC).strftime("%Y-%m-%d")
        entries.append(entry)
    return entries


@dataclass
class MiningReport:
    """What one `starrec values mine` batch did: users mined and skipped, consensus, fallbacks, rounds."""

    store: str
    users: int = 0
    skipped: int = 0
    errors: int = 0
    consensus_rate: float = 0.0
    fallback_rate: float = 0.0
    mean_rounds: float = 0.0
    rounds: dict[str, int] = field(default_factory=dict)
    hallucinated_ids: int = 0
    unknown_values: int = 0
    repeated_values: int = 0
    calls_per_user: float = 0.0
    tokens_per_user: float = 0.0
    usd_per_user: float | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _summarise(report: MiningReport, runs: list[Trajectory]) -> None:
    done = [run for run in runs if run.error is None]
    report.users, report.errors = len(done), len(runs) - len(done)
    if not done:
        return
    finals = [next((s.output for s in run.steps if s.node == "finalise"), {}) for run in done]
    metas = [final.get("profile", {}).get("meta", {}) for final in finals]
    report.consensus_rate = sum(bool(m.get("consensus")) for m in metas) / len(done)
    report.fallback_rate = sum(bool(m.get("fallback")) for m in metas) / len(done)
    rounds = [int(m.get("rounds", 0)) for m in metas]
    report.mean_rounds = sum(rounds) / len(done)
    report.rounds = {str(r): rounds.count(r) for r in sorted(set(rounds))}
    report.hallucinated_ids = sum(run.repairs.get("hallucinated_ids", 0) for run in done)
    report.unknown_values = sum(run.repairs.get("unknown_values", 0) for run in done)
    report.repeated_values = sum(run.repairs.get("repeated_values", 0) for run in done)
    report.calls_per_user = sum(run.llm_calls for run in done) / len(done)
    report.tokens_per_user = sum(run.prompt_tokens + run.completion_tokens for run in done) / len(done)
    costs = [run.cost_usd for run in done]
    report.usd_per_user = None if any(c is None for c in costs) else sum(costs) / len(done)  # type: ignore[misc]


def mining_report(store: str, runs: list[Trajectory]) -> MiningReport:
    """The counts of recorded mining runs (e.g. every run of ``OUT/runs.jsonl`` for some users)."""
    report = MiningReport(store)
    _summarise(report, runs)
    return report


async def _mine_one(
    graph: Any, store: GraphStore, user: str, domain: str, context: MinerContext
) -> Trajectory:
    recorder = TrajectoryRecorder(nodes=MINER_NODES, step_event=VALUES_STEP_EVENT)
    started, state, error = time.perf_counter(), None, None
    try:
        history = await asyncio.to_thread(history_of, store, user)
        state = await graph.ainvoke(
            {"user_id": user, "domain": domain, "history": history},
            context=context,
            config={"callbacks": [recorder]},
        )
    except Exception as failure:  # recorded and counted; the user is retried on resume
        error = f"{type(failure).__name__}: {failure}"
    return recorder.trajectory(
        state, task_id=f"values:{user}", settings=asdict(context), model=context.llm,
        seconds=time.perf_counter() - started, error=error,
    )  # fmt: skip


def mine_values(
    store: GraphStore,
    out: str | Path,
    config: MiningConfig | None = None,
    *,
    chat_model: BaseChatModel | None = None,
    domain: str = "item",
    show_progress: bool = True,
) -> MiningReport:
    """Mine, store and record a value profile for every configured user; returns the counts."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from starrec.contract.values import ValueProfile

    config = config or MiningConfig()
    users = list(config.users) if config.users is not None else store.ids("user")
    if config.users is not None:
        unknown = sorted(set(users) - set(store.ids("user")))
        if unknown:
            raise KeyError(f"user ids not in graph {store.location}: {unknown[:10]}")
    done = set(store.users_with_values()) if config.resume else set()
    todo = [user for user in users if user not in done]
    report = MiningReport(store.location, skipped=len(users) - len(todo))
    graph = build_values_graph(chat_model=chat_model)
    runs_file = RunsFile(Path(out) / "runs.jsonl")
    runs_file.repair_torn_tail()
    by = config.by or config.context.llm
    started = time.perf_counter()
    recorded: list[Trajectory] = []

    async def mine_chunk(users: list[str]) -> list[Trajectory]:
        limit = asyncio.Semaphore(max(1, config.concurrency))

        async def bounded(user: str) -> Trajectory:
            async with limit:
                return await _mine_one(graph, store, user, domain, config.context)

        return list(await asyncio.gather(*(bounded(user) for user in users)))

    progress = Progress(
        TextColumn("values"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not show_progress,
    )
    with progress:
        task = progress.add_task("values", total=len(todo))
        for chunk in batched(todo, config.batch_size):
            runs = asyncio.run(mine_chunk(list(chunk)))
            profiles = []
            for run in runs:
                final = next((s.output for s in run.steps if s.node == "finalise"), None)
                if run.error is None and final:
                    profiles.append(ValueProfile.from_dict(final["profile"]))
                runs_file.append(run.model_dump(by_alias=True))
            store.set_value_profiles(profiles, by)
            recorded += runs
            progress.advance(task, len(chunk))
    _summarise(report, recorded)
    report.seconds = time.perf_counter() - started
    return report
