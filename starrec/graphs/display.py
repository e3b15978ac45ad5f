"""Printing runs for people: a recorded trajectory, a batch summary, node progress (teach, demo)."""

from __future__ import annotations

import json
import time
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.tree import Tree

from starrec.contract.roster import ROSTER, Roster
from starrec.contract.trajectory import Trajectory

MAX_TEXT = 600


def _short(text: str, limit: int = MAX_TEXT) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + " …"


def print_trajectory(console: Console, trajectory: Trajectory) -> None:
    """Steps in order with their output, thinking, tool calls (+ Cypher) and repairs."""
    hits = ", ".join(f"{k}={v}" for k, v in trajectory.hits.items())
    tree = Tree(
        f"[bold]task {trajectory.task_id}[/bold] (pass {trajectory.pass_}) user {trajectory.user_id} "
        f"ground truth {trajectory.ground_truth} | {hits} | {trajectory.seconds:.1f} s, "
        f"{trajectory.llm_calls} LLM calls"
        + (f", ${trajectory.cost_usd:.4f}" if trajectory.cost_usd else "")
    )
    if trajectory.error:
        tree.add(f"[red]error: {trajectory.error}[/red]")
    for step in trajectory.steps:
        label = f"[cyan]{step.node}[/cyan]" + (f" (correction round {step.round})" if step.round else "")
        label += f" {step.seconds:.1f} s"
        branch = tree.add(label)
        if step.error:
            branch.add(f"[red]{step.error}[/red]")
        if step.thinking:
            branch.add(f"thinking: {_short(step.thinking, 300)}")
        for call in step.tool_calls:
            tool = branch.add(
                f"[magenta]{call.name}[/magenta]({json.dumps(call.arguments)})"
                + (f" [red]{call.error}[/red]" if call.error else "")
            )
            tool.add(_short(call.response, 300))
            for query in call.queries:
                tool.add(
                    f"[dim]{query.name}: {' '.join(query.cypher.split())} params={query.params} "
                    f"rows={query.row_count}[/dim]"
                )
        output = {k: v for k, v in step.output.items() if k not in ("cf_queries", "cf_scores", "raw_ranking")}
        branch.add(f"output: {_short(json.dumps(output, ensure_ascii=False))}")
        if step.repairs:
            branch.add(f"[yellow]repairs: {step.repairs}[/yellow]")
    tree.add(f"[bold]final ranking[/bold]: {trajectory.ranking}")
    console.print(Panel(tree, title="MARS trajectory", expand=False))


def print_summary(console: Any, summary: Any, title: str) -> None:
    """HR table, repair/invalid rates and per-agent cost of a batch."""
    data = summary.as_dict()
    table = Table(title=title)
    for column in (
        "runs",
        "errors",
        "HR@1",
        "HR@3",
        "HR@5",
        "HR_avg (ok runs)",
        "repaired rankings",
        "LLM calls/run",
        "tokens/run",
        "s/run",
    ):
        table.add_column(column, justify="right")
    metric = [f"{data.get(key, float('nan')):.3f}" for key in ("hr@1", "hr@3", "hr@5", "hr_avg")]
    runs = max(data["runs"], 1)
    table.add_row(
        str(data["runs"]),
        str(data["errors"]),
        *metric,
        f"{data['repaired_runs']} ({data['repaired_runs'] / runs:.0%})",
        f"{data['llm_calls_per_run']:.1f}",
        f"{data['tokens_per_run']:.0f}",
        f"{data['seconds_per_run']:.2f}",
    )
    console.print(table)
    agents = Table(title="per agent (mean per run)")
    for column in ("node", "executions", "LLM calls", "tool calls", "tokens", "seconds"):
        agents.add_column(column, justify="right" if column != "node" else "left")
    for node, row in data["per_agent"].items():
        agents.add_row(
            node,
            f"{row['runs']:.2f}",
            f"{row['llm_calls']:.2f}",
            f"{row['tool_calls']:.2f}",
            f"{row['tokens']:.0f}",
            f"{row['seconds']:.2f}",
        )
    console.print(agents)
    if len(data.get("per_model", {})) > 1:
        console.print(model_table(data["per_model"]))
    if data["repairs"]:
        console.print(
            "repairs and retries: " + ", ".join(f"{k}={v}" for k, v in sorted(data["repairs"].items()))
        )
    console.print(cost_line(data))


def model_table(per_model: dict[str, dict[str, Any]]) -> Table:
    """Usage under each model that served nodes (runs with per-node models), totals over the batch."""
    table = Table(title="per model (totals)")
    for column in ("model", "nodes", "LLM calls", "tokens", "seconds", "cost $"):
        table.add_column(column, justify="left" if column in ("model", "nodes") else "right")
    for model, row in per_model.items():
        cost = "unknown" if row["cost_usd"] is None else f"{row['cost_usd']:.4f}"
        tokens = row["prompt_tokens"] + row["completion_tokens"]
        table.add_row(model, ", ".join(row["nodes"]), str(row["llm_calls"]), str(tokens),
                      f"{row['seconds']:.2f}", cost)  # fmt: skip
    return table


def cost_line(data: dict[str, Any]) -> str:
    """Money and LLM-cache counts of a batch, one line (unknown cost says why, never shows 0)."""
    if data["cost_usd"] is None:
        money = (f"cost unknown: {data['unpriced_runs']} run(s) used a hosted model without a price "
                 "(add it to STARREC_PRICES)")  # fmt: skip
    else:
        money = f"cost ${data['cost_usd']:.4f} (${data['cost_usd_per_run']:.6f}/run)"
    hits, misses = data["llm_cache_hits"], data["llm_cache_misses"]
    return money + (f"; LLM cache {hits} hit(s), {misses} miss(es)" if hits or misses else "")


class NodeProgress(BaseCallbackHandler):
    """Prints a line as each graph node finishes (a slow local model shows it is making progress)."""

    run_inline = True

    def __init__(self, console: Console, roster: Roster = ROSTER) -> None:
        self.console = console
        self.node_names = roster.node_names
        self._nodes: dict[UUID, tuple[str, str, float]] = {}

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        name = kwargs.get("name")
        if name in self.node_names and (metadata or {}).get("langgraph_node") == name:
            task = inputs.get("task_id", "") if isinstance(inputs, dict) else getattr(inputs, "task_id", "")
            self._nodes[run_id] = (str(task), name, time.perf_counter())

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        if run_id in self._nodes:
            task, name, started = self._nodes.pop(run_id)
            self.console.log(f"task {task}: {name} done in {time.perf_counter() - started:.1f} s")
