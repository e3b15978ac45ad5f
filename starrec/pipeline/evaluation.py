"""The ``eval`` stage: every row on the same shuffled test tasks (:func:`starrec.eval.harness.evaluate`).

Rows come in groups (classical, cf_prior, mars, star-<student>, best-of-k-<student>); each group is
written to ``eval/rows-<group>.json`` with the settings it was measured with as soon as it is done,
so an interrupted evaluation resumes at the first missing group, and a group is measured again only
when its settings changed or a stage it is built on ran (:meth:`Evaluation.stale`). All rows share
one schema (:func:`row`): HR@1/3/5/avg with 95% bootstrap intervals (the harness's), wall time, LLM
calls, prompt and generated tokens and cost per task, the share of STAR chains that reached
``<recommend>`` without a forced ending, and repair rates. Two groups reuse one run for several rows:

* **MARS** runs once with ``ranker_fusion=agreement`` (the *fused* row); the ranker records the
  repaired LLM order next to the fused one (``llm_ranking``), which is exactly the final ranking
  under ``ranker_fusion=llm``, so the *raw* row is scored from the same runs;
* **best-of-k**: one run of max(k) chains per task (chain i uses seed + i), each prefix of k
  chains fused by Borda count, so the rows equal separate runs with ``samples = k``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from starrec.data.schema import Dataset, Task
from starrec.eval.timing import load_average
from starrec.pipeline.endpoints import opened, student_endpoint
from starrec.pipeline.stages import PipelineRun, read_json, require, teacher_context, teacher_of, write_json

HR_KEYS = ("hr@1", "hr@3", "hr@5", "hr_avg")
Row = dict[str, Any]


@dataclass(frozen=True)
class Cost:
    """What one task cost on average (LLM methods); classical rows cost nothing."""

    llm_calls: float = 0.0
    prompt_tokens: float = 0.0
    completion_tokens: float = 0.0


def row(
    key: str,
    method: str,
    kind: str,
    scores: dict[str, Any],
    n_tasks: int,
    seconds: float | None,
    cost: Cost,
    prices: tuple[float, float],
    **extra: Any,
) -> Row:
    """One result row (the schema every row of ``results.json`` has)."""
    usd = (cost.prompt_tokens * prices[0] + cost.completion_tokens * prices[1]) / 1e6
    return {
        "key": key,
        "method": method,
        "kind": kind,
        "n_tasks": n_tasks,
        **{name: scores[name] for name in HR_KEYS},
        "ci95": {name: scores["ci95"][name] for name in HR_KEYS},
        "wall_s": round(seconds, 2) if seconds is not None else None,
        "wall_s_per_task": seconds / n_tasks if seconds is not None and n_tasks else None,
        "load_average": load_average() if seconds is not None else [],
        "llm_calls_per_task": cost.llm_calls,
        "prompt_tokens_per_task": cost.prompt_tokens,
        "generated_tokens_per_task": cost.completion_tokens,
        "cost_per_task_usd": usd,
        "unforced_recommend_share": None,
        "errors": 0,
        "repaired_task_share": 0.0,
        **extra,
    }


def scored(rankings: Sequence[Sequence[str]], tasks: Sequence[Task]) -> dict[str, Any]:
    """HR and the harness's bootstrap intervals for rankings computed outside the harness."""
    from starrec.eval.harness import TaskOutcome, intervals, summarize_outcomes

    outcomes = [TaskOutcome(task, list(ranking)) for task, ranking in zip(tasks, rankings, strict=True)]
    return {**summarize_outcomes(outcomes), "ci95": intervals(outcomes)}


def harness_row(
    key: str,
    method: str,
    kind: str,
    report: dict[str, Any],
    seconds: float,
    cost: Cost,
    prices: tuple[float, float],
    **extra: Any,
) -> Row:
    n = report["n_tasks"]
    invalid = report["invalid"]
    return row(
        key,
        method,
        kind,
        report,
        n,
        seconds,
        cost,
        prices,
        errors=invalid["errors"],
        error_examples=error_examples(report),
        repaired_task_share=invalid["repaired_tasks"] / n,
        **extra,
    )


def error_examples(report: dict[str, Any], limit: int = 3) -> list[str]:
    """Up to ``limit`` distinct (redacted) error messages of the tasks whose answer raised.

    Kept in the row so that a group that errored says why without re-running it.
    """
    seen: list[str] = []
    for entry in report.get("per_task", []):
        message = entry.get("error")
        if message and message not in seen:
            seen.append(message)
            if len(seen) == limit:
                break
    return seen


def timed(method: Any, tasks: list[Task], dataset: Dataset, seed: int) -> tuple[dict[str, Any], float]:
    from starrec.eval.harness import evaluate

    started = time.perf_counter()
    report = evaluate(method, tasks, dataset, seed=seed, progress=True)
    return report, time.perf_counter() - started


class Evaluation:
    """The eval stage of one pipeline run."""

    def __init__(self, run: PipelineRun, ran: frozenset[str]) -> None:
        from starrec.data.agentsociety import load_dataset
        from starrec.data.tasks import read_tasks

        self.run = run
        self.config = run.config
        self.layout = run.layout
        self.ran = ran
        """Stages that ran earlier in this invocation: the row groups built on them are recomputed."""
        require(self.layout.test_tasks / "manifest.json", "eval", "data")
        self.tasks = read_tasks(self.layout.test_tasks)
        self.dataset = load_dataset(self.layout.dataset)
        self.seed = self.config.seed
        self.prices = (
            self.config.eval.usd_per_million_prompt_tokens,
            self.config.eval.usd_per_million_completion_tokens,
        )

    # -- caching -------------------------------------------------------------------------------------

    def stale(self, group: str) -> bool:
        """Measure ``group`` (again): never finished, measured with other settings, or built on a stage
        that ran in this invocation."""
        path = self.layout.eval_dir / f"rows-{group}.json"
        if not path.exists() or group_inputs(group) & self.ran:
            return True
        return read_json(path).get("settings") != group_settings(self.config, self.layout, group)

    def cached(self, group: str, compute: Callable[[], list[Row]]) -> list[Row]:
        """The rows of ``group``: read back unless :meth:`stale`, else computed (and written at once,
        with their settings, so an interrupted evaluation keeps them)."""
        path = self.layout.eval_dir / f"rows-{group}.json"
        if not self.stale(group):
            return list(read_json(path)["rows"])
        rows = compute()
        settings = group_settings(self.config, self.layout, group)
        write_json(path, {"group": group, "settings": settings, "rows": rows})
        return rows

    # -- rows ----------------------------------------------------------------------------------------

    def run_all(self) -> dict[str, Any]:
        self.layout.eval_dir.mkdir(parents=True, exist_ok=True)
        rows: list[Row] = []
        options = self.config.eval
        if options.classical:
            rows += self.cached("classical", self.classical_rows)
        if options.cf_prior:
            rows += self.cached("cf_prior", self.prior_rows)
        if options.mars:
            rows += self.cached("mars", self.mars_rows)
        if options.mars_planner:
            rows += self.cached("mars_planner", self.mars_planner_rows)
        rows += self.star_rows()
        results = {
            "n_tasks": len(self.tasks),
            "seed": self.seed,
            "tasks_dir": str(self.layout.test_tasks),
            "dataset": str(self.layout.dataset),
            "rows": rows,
        }
        write_json(self.layout.results, results)
        return results

    def classical_rows(self) -> list[Row]:
        from starrec.eval.methods import MethodOptions, make_method

        rows = []
        for name in self.config.eval.classical:
            extra = self.config.eval.method_options.get(name, {})
            method = make_method(
                name, MethodOptions(seed=self.seed, data_dir=self.layout.dataset, extra=extra)
            )
            report, seconds = timed(method, self.tasks, self.dataset, self.seed)
            rows.append(harness_row(name, name, "classical", report, seconds, Cost(), self.prices))
        best = max(rows, key=lambda r: r["hr_avg"])
        rows.append({**best, "key": "best_classical", "method": f"best classical ({best['method']})"})
        return rows

    def prior_rows(self) -> list[Row]:
        from starrec.eval.methods import MethodOptions, make_method

        extra = self.config.eval.method_options.get("cf_prior", {})
        method = make_method("cf_prior", MethodOptions(seed=self.seed, extra=extra))
        report, seconds = timed(method, self.tasks, self.dataset, self.seed)
        return [
            harness_row("cf_prior", "prior order (cf_prior)", "prior", report, seconds, Cost(), self.prices)
        ]

    def mars_run(self, planner: bool) -> tuple[Any, dict[str, Any], float]:
        """(recommender, harness report, seconds) of MARS with the teacher's settings and
        ``ranker_fusion=agreement``; with ``planner``, the fine-tuned planner (the ``planner-sft``
        checkpoint in-process, or the injected planner) plans and the teacher runs every other node."""
        from starrec.contract.roster import PLANNER
        from starrec.graphs.recommender import MarsPlannerRecommender, MarsRecommender

        teacher = self.config.teacher
        chat_models = {}
        if planner and self.run.planner_model is not None:
            chat_models[PLANNER] = self.run.planner_model
        elif planner:
            require(self.layout.planner_sft / "config.json", "eval", "planner-sft")
        with opened(teacher_of(self.run), self.config, self.layout, self.run.console) as url:
            context = teacher_context(
                self.run, url, self.layout.dataset, self.layout.test_tasks, ranker_fusion="agreement"
            )
            if planner and not chat_models:
                context.models = {**context.models, PLANNER: f"local:{self.layout.planner_sft}"}
            recommender = (MarsPlannerRecommender if planner else MarsRecommender)(
                context,
                chat_model=self.run.teacher_model,
                chat_models=chat_models,
                concurrency=teacher.concurrency,
                timeout_s=teacher.timeout_s,
            )
            report, seconds = timed(recommender, self.tasks, self.dataset, self.seed)
        folder = "mars-planner-runs" if planner else "mars-runs"
        save_runs(recommender.trajectories, self.layout.eval_dir / folder)
        return recommender, report, seconds

    def mars_row(
        self, key: str, label: str, kind: str, mars: Any, report: dict[str, Any], seconds: float
    ) -> Row:
        """The harness row of a MARS evaluation, with what its runs cost and repaired, and the usage
        per model (``per_model``: which model served which nodes)."""
        runs = {run.task_id: run for run in mars.trajectories}
        answered = [runs[task.task_id] for task in self.tasks if task.task_id in runs]
        n = max(len(answered), 1)
        cost = Cost(
            llm_calls=sum(t.llm_calls for t in answered) / n,
            prompt_tokens=sum(t.prompt_tokens for t in answered) / n,
            completion_tokens=sum(t.completion_tokens for t in answered) / n,
        )
        stats = report["method_stats"]
        return harness_row(
            key,
            label,
            kind,
            report,
            seconds,
            cost,
            self.prices,
            repaired_run_share=stats["repaired_runs"] / stats["runs"] if stats["runs"] else 0.0,
            run_s_per_task=stats["seconds_per_run"],
            per_model=stats["per_model"],
        )

    def mars_rows(self) -> list[Row]:
        """MARS fused (agreement) through the harness; raw = the same runs' repaired LLM order."""
        mars, report, seconds = self.mars_run(planner=False)
        fused = self.mars_row("mars_fused", "MARS fused (agreement)", "teacher", mars, report, seconds)
        runs = {run.task_id: run for run in mars.trajectories}
        shown = {entry["task_id"]: entry["ranking"] for entry in report["per_task"]}
        raw = [llm_order(runs.get(task.task_id)) or shown[task.task_id] for task in self.tasks]
        same = ("errors", "repaired_run_share", "run_s_per_task")
        raw_row = row(
            "mars_raw",
            "MARS raw (LLM order)",
            "teacher",
            scored(raw, self.tasks),
            len(self.tasks),
            seconds,
            Cost(
                fused["llm_calls_per_task"],
                fused["prompt_tokens_per_task"],
                fused["generated_tokens_per_task"],
            ),
            self.prices,
            **{name: fused[name] for name in same},
            repaired_task_share=0.0,
            same_runs_as="mars_fused",
        )
        return [fused, raw_row]

    def mars_planner_rows(self) -> list[Row]:
        """MARS-Planner (fused): the fine-tuned planner with the teacher's other nodes, the MARS rows'
        tasks, backend and options; what planning alignment alone is worth."""
        mars, report, seconds = self.mars_run(planner=True)
        label = "MARS-Planner (fused)"
        return [self.mars_row("mars_planner", label, "hybrid", mars, report, seconds)]

    def star_rows(self) -> list[Row]:
        """Greedy rows per student, and best-of-k on ``eval.best_of_k_model``; one server per student."""
        from starrec.pipeline.config import STUDENT_ROLES

        options = self.config.eval
        rows: list[Row] = []
        for role in STUDENT_ROLES:
            greedy = role in options.star
            best_of = bool(options.ks) and options.best_of_k_model == role
            groups = ([f"star-{role}"] if greedy else []) + ([f"best-of-k-{role}"] if best_of else [])
            if not groups:
                continue
            endpoint = student_endpoint(self.config, self.layout, role)
            if not any(self.stale(group) for group in groups):
                rows += [r for group in groups for r in self.cached(group, list)]
                continue
            if ROLE_STAGE[role] and endpoint.how != "endpoint":
                require(Path(endpoint.model) / "config.json", "eval", ROLE_STAGE[role][0])
            with opened(endpoint, self.config, self.layout, self.run.console) as url:
                if greedy:
                    rows += self.cached(f"star-{role}", partial(self.greedy_row, role, endpoint.model, url))
                if best_of:
                    best_of_k = partial(self.best_of_k_rows, role, endpoint.model, url)
                    rows += self.cached(f"best-of-k-{role}", best_of_k)
        return rows

    def star_method(self, model: str, url: str | None, samples: int) -> Any:
        from starrec.eval.methods import MethodOptions, make_method

        student = self.config.student
        options = MethodOptions(
            seed=self.seed,
            model=model,
            base_url=url,
            samples=samples,
            concurrency=student.concurrency,
            extra=dict(student.options),
        )
        return make_method("star", options)

    def greedy_row(self, role: str, model: str, url: str | None) -> list[Row]:
        star = self.star_method(model, url, samples=1)
        report, seconds = timed(star, self.tasks, self.dataset, self.seed)
        stats = star.stats()
        return [
            harness_row(
                f"star_{role}",
                STAR_LABELS[role],
                "student",
                report,
                seconds,
                star_cost(stats),
                self.prices,
                **chain_rates(stats),
            )
        ]

    def best_of_k_rows(self, role: str, model: str, url: str | None) -> list[Row]:
        """One run of max(ks) chains per task; each prefix of k chains fused (Borda) and scored."""
        from starrec.serving.loop import aggregate_rankings

        ks = sorted(set(self.config.eval.ks))
        star = self.star_method(model, url, samples=max(ks))
        report, seconds = timed(star, self.tasks, self.dataset, self.seed)
        # A task whose answer raised has no chains: it is scored like the harness scores it (shuffled order).
        shown = {entry["task_id"]: entry["ranking"] for entry in report["per_task"]}
        results = star.results
        stats = star.stats()
        abstractor = stats["abstractor"]
        n = len(self.tasks)
        rows = []
        for k in ks:
            rankings, chains, any_hit = [], [], 0
            for task in self.tasks:
                result = results.get(task.task_id)
                if result is None:
                    rankings.append(shown[task.task_id])
                    continue
                rankings.append(aggregate_rankings(result.chains[:k], result.chains[0].ranking))
                chains += result.chains[:k]
                any_hit += any(chain.ranking[:1] == [task.ground_truth] for chain in result.chains[:k])
            cost = Cost(
                llm_calls=(sum(c.llm_calls for c in chains) + abstractor["llm_calls"]) / n,
                prompt_tokens=(sum(c.prompt_tokens for c in chains) + abstractor["prompt_tokens"]) / n,
                completion_tokens=(sum(c.completion_tokens for c in chains) + abstractor["completion_tokens"])
                / n,
            )
            rates = prefix_chain_rates(chains)
            if k == max(ks):
                rates["unforced_recommend_share"] = chain_rates(stats)["unforced_recommend_share"]
            # One run served every k: its wall time belongs to the largest k only.
            rows.append(
                row(
                    f"best_of_{k}",
                    f"{STAR_LABELS[role]} best-of-{k}",
                    "student",
                    scored(rankings, self.tasks),
                    n,
                    seconds if k == max(ks) else None,
                    cost,
                    self.prices,
                    k=k,
                    errors=report["invalid"]["errors"],
                    error_examples=error_examples(report),
                    chain_errors=stats.get("chain_errors", 0),
                    chain_error_kinds=stats.get("chain_error_kinds", {}),
                    any_of_k_hr1=any_hit / n,
                    chain_s_per_task=sum(c.seconds for c in chains) / n,
                    **rates,
                )
            )
        return rows


ROLE_STAGE: dict[str, tuple[str, ...]] = {"base": (), "sft": ("sft",), "grpo": ("grpo",)}
"""The stage that makes each student (the untrained one is made by none)."""


def planned_groups(config: Any) -> list[str]:
    """The row groups ``eval`` computes for ``config``, in the order of ``results.json``."""
    from starrec.pipeline.config import STUDENT_ROLES

    options = config.eval
    wanted = {
        "classical": bool(options.classical),
        "cf_prior": options.cf_prior,
        "mars": options.mars,
        "mars_planner": options.mars_planner,
    }
    groups = [name for name, on in wanted.items() if on]
    for role in STUDENT_ROLES:
        groups += [f"star-{role}"] if role in options.star else []
        groups += [f"best-of-k-{role}"] if options.ks and options.best_of_k_model == role else []
    return groups


def finished_rows(config: Any, layout: Any) -> tuple[list[Row], list[str]]:
    """(rows of the groups finished so far, in results order; the planned groups not finished yet):
    what an interrupted evaluation has already measured."""
    rows: list[Row] = []
    missing: list[str] = []
    for group in planned_groups(config):
        path = layout.eval_dir / f"rows-{group}.json"
        if path.exists():
            rows += read_json(path)["rows"]
        else:
            missing.append(group)
    return rows, missing


def group_inputs(group: str) -> set[str]:
    """The stages a row group is built on: every group on the tasks, a student's rows on its checkpoint
    (the MARS rows do not depend on ``teach``: the teacher is not trained; MARS-Planner's planner is
    the ``planner-sft`` checkpoint)."""
    if group == "mars_planner":
        return {"data", "planner-sft"}
    role = group.removeprefix("best-of-k-").removeprefix("star-")
    return {"data", *ROLE_STAGE.get(role, ())}


def group_settings(config: Any, layout: Any, group: str) -> dict[str, Any]:
    """Everything a row group's numbers depend on besides the stages' outputs (kept with its rows)."""
    from dataclasses import asdict

    from starrec.pipeline.endpoints import student_endpoint

    common = {"seed": config.seed, "data": asdict(config.data), "dataset": str(layout.dataset)}
    options = config.eval
    if group == "classical":
        picked = {name: options.method_options.get(name, {}) for name in options.classical}
        return {**common, "classical": list(options.classical), "method_options": picked}
    if group == "cf_prior":
        return {**common, "method_options": options.method_options.get("cf_prior", {})}
    if group == "mars":
        return {**common, "teacher": asdict(config.teacher)}
    if group == "mars_planner":
        metrics = layout.planner_sft / "sft_metrics.json"
        planner = {
            "model": str(layout.planner_sft),
            "trained": read_json(metrics) if metrics.exists() else None,
        }
        return {**common, "teacher": asdict(config.teacher), "planner": planner}
    role = group.removeprefix("best-of-k-").removeprefix("star-")
    student = {
        "options": dict(config.student.options),
        "endpoint": student_endpoint(config, layout, role).as_dict(),
    }
    settings = {**common, "student": student}
    return {**settings, "ks": sorted(set(options.ks))} if group.startswith("best-of-k-") else settings


STAR_LABELS = {
    "base": "STAR prompt (untrained student)",
    "sft": "STAR-SFT",
    "grpo": "STAR-SFT+GRPO",
}


def save_runs(trajectories: Sequence[Any], folder: Path) -> None:
    """The evaluation's MARS runs as a fresh run folder (``starrec trajectory`` reads it)."""
    from starrec.contract.runs_file import RunsFile

    runs = RunsFile(folder)
    runs.path.unlink(missing_ok=True)
    for trajectory in trajectories:
        runs.append(trajectory.to_line())


def llm_order(trajectory: Any) -> list[str] | None:
    """The ranker's repaired LLM order of a MARS run (None when the run never reached the ranker)."""
    if trajectory is None:
        return None
    ranker = next((step for step in reversed(trajectory.steps) if step.node == "ranker"), None)
    if ranker is None or not ranker.output.get("llm_ranking"):
        return None
    return list(ranker.output["llm_ranking"])


def star_cost(stats: dict[str, Any]) -> Cost:
    tasks = max(int(stats.get("tasks", 0)), 1)
    prompt = stats.get("prompt_tokens", 0) + stats["abstractor"]["prompt_tokens"]
    return Cost(
        llm_calls=stats["llm_calls_per_task_total"],
        prompt_tokens=prompt / tasks,
        completion_tokens=stats["completion_tokens_per_task_total"],
    )


def chain_rates(stats: dict[str, Any]) -> dict[str, Any]:
    """Per-chain shares from the STAR loop's counters; ``forced_endings`` is counted by newer loops only
    (the share is None, shown as n/a, when the loop does not count it)."""
    chains = stats.get("chains", 0)
    forced = stats.get("forced_endings")
    return {
        "chains": chains,
        "unforced_recommend_share": ratio(chains - forced, chains) if forced is not None else None,
        "unparsed_chain_share": ratio(stats.get("unparsed_chains", 0), chains),
        "format_invalid_chain_share": ratio(stats.get("format_invalid_chains", 0), chains),
        "repaired_chain_share": ratio(stats.get("rankings_repaired", 0), chains),
        "truncated_chain_share": ratio(stats.get("truncated_chains", 0), chains),
        "tool_calls_per_chain": ratio(stats.get("tool_calls", 0), chains),
    }


def prefix_chain_rates(chains: Sequence[Any]) -> dict[str, Any]:
    """:func:`chain_rates` for the first k chains of every task, counted from the chains themselves."""
    n = len(chains)
    return {
        "chains": n,
        "unforced_recommend_share": None,
        "unparsed_chain_share": ratio(sum(not c.parsed for c in chains), n),
        "format_invalid_chain_share": ratio(sum(bool(c.format_errors) for c in chains), n),
        "repaired_chain_share": ratio(sum(c.repair.needed for c in chains), n),
        "truncated_chain_share": ratio(sum(c.truncated for c in chains), n),
        "tool_calls_per_chain": ratio(sum(len(c.tool_calls) for c in chains), n),
    }


def ratio(count: float, total: float) -> float | None:
    """``count / total``, None when there is nothing to count (shown as n/a)."""
    return count / total if total else None


def eval_stage(run: PipelineRun, ran: frozenset[str] = frozenset()) -> dict[str, Any]:
    """All rows; ``eval/results.json`` is the stage's output (and the benchmark's input)."""
    return Evaluation(run, ran).run_all()
