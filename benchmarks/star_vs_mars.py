"""Teacher (MARS) vs distilled student (STAR) on the same MovieLens-100k tasks and the same vLLM build.

The benchmark *is* ``starrec pipeline run configs/pipeline-ml100k.yaml`` (starrec/pipeline,
docs/pipeline.md): test tasks on the full data and training tasks on a copy without any test
answer; MARS (SmolLM2-135M-Instruct served by vLLM) over the training tasks; outcome filter; SFT,
RL data (the paper's bucket rule) and GRPO of SmolLM2-135M; every row on the same shuffled test
tasks. This script builds the config (the YAML, then its own flags, then ``--set``), runs the
pipeline (each stage resumes in the work folder), and formats ``eval/results.json`` as
``benchmarks/results/star_vs_mars.{json,md,png}``::

    python benchmarks/star_vs_mars.py [--config configs/pipeline-ml100k.yaml] [--n-test 8] [--n-train 16]
        [--concurrency 4] [--set grpo.max_steps=20 ...] [--from STAGE | --only STAGE] [--report-only]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from starrec.pipeline import STAGES, PipelineConfig, WorkLayout, load_config, run_pipeline
from starrec.pipeline.evaluation import finished_rows

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "pipeline-ml100k.yaml"
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
HR_KEYS = ("hr@1", "hr@3", "hr@5", "hr_avg")
console = Console()

FLAG_FIELDS: dict[str, tuple[str, ...]] = {
    "n_test": ("data.n_test",),
    "n_train": ("data.n_train",),
    "concurrency": ("teacher.concurrency", "student.concurrency"),
    "teacher_passes": ("teacher.passes",),
    "sft_max_steps": ("sft.max_steps",),
    "grpo_steps": ("grpo.max_steps",),
    "rl_tasks": ("rl_data.limit",),
}
"""This script's shorthand flags -> the config fields they set (the YAML documents each field)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="Pipeline config (YAML).")
    parser.add_argument("--work", type=Path, default=None, help="Work folder (default: the config's).")
    for flag, fields in FLAG_FIELDS.items():
        parser.add_argument(
            f"--{flag.replace('_', '-')}", type=int, default=None, help=f"Sets {', '.join(fields)}."
        )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Any config field, e.g. --set rl_data.samples=4 (repeatable; wins over the flags).",
    )
    parser.add_argument(
        "--from", dest="from_stage", choices=STAGES, help="Redo this stage and every later one."
    )
    parser.add_argument("--only", choices=STAGES, help="Redo this stage alone.")
    parser.add_argument(
        "--results", type=Path, default=RESULTS_DIR, help="Where star_vs_mars.{json,md,png} go."
    )
    parser.add_argument(
        "--report-only", action="store_true", help="Only format the rows the work folder already holds."
    )
    parser.add_argument(
        "--carry-over",
        action="store_true",
        help="Keep the rows of the existing RESULTS/star_vs_mars.json that this work folder does not hold, "
        "when that run used the same data section and seed (the same test tasks); the report names them.",
    )
    return parser.parse_args(argv)


TASK_FIELDS = ("dataset", "scenario", "n_test")
"""The ``data`` fields the test tasks are built from (``n_train`` only sizes the training tasks)."""


def test_tasks_sha256(layout: WorkLayout) -> str | None:
    """A fingerprint of the test tasks (ids, users, candidates, ground truths), None before ``data``."""
    from starrec.data.tasks import read_tasks, tasks_fingerprint

    if not (layout.test_tasks / "manifest.json").is_file():
        return None
    return tasks_fingerprint(read_tasks(layout.test_tasks))


def row_group(key: str, best_of_k_model: str) -> str:
    """The eval row group (``planned_groups``) a row key comes from."""
    if key.startswith("star_"):
        return f"star-{key.removeprefix('star_')}"
    if key.startswith("best_of_"):
        return f"best-of-k-{best_of_k_model}"
    return {"mars_fused": "mars", "mars_raw": "mars"}.get(
        key, key if key in ("cf_prior", "mars_planner") else "classical"
    )


def carry_over(
    config: PipelineConfig, layout: WorkLayout, rows: list[dict[str, Any]], folder: Path
) -> dict[str, Any]:
    """Append the previous results file's rows that ``rows`` lacks (in place); returns what was carried.

    Refused (SystemExit) unless the previous run had the same test tasks: the same fingerprint where
    both runs recorded one, else the same task settings (``TASK_FIELDS`` and ``seed``).
    """
    path = folder / "star_vs_mars.json"
    if not path.is_file():
        raise SystemExit(f"--carry-over: {path} does not exist; run without --carry-over first")
    previous = json.loads(path.read_text(encoding="utf-8"))
    fingerprint, before = test_tasks_sha256(layout), previous["meta"].get("test_tasks_sha256")
    if fingerprint is not None and before is not None:
        if fingerprint != before:
            raise SystemExit(f"--carry-over: {path} was measured on other test tasks (fingerprints differ)")
        matched = "the same test-task fingerprint"
    else:
        now = {**{k: getattr(config.data, k) for k in TASK_FIELDS}, "seed": config.seed}
        then = {**{k: previous["config"]["data"][k] for k in TASK_FIELDS}, "seed": previous["config"]["seed"]}
        if now != then:
            raise SystemExit(f"--carry-over: {path} was measured on {then}, this run on {now}; other tasks")
        matched = "the same task settings (" + ", ".join(f"{k}={v}" for k, v in now.items()) + ")"
    sft = previous["meta"]["stages"].get("sft", {}).get("result") or {}
    sft = {key: sft.get(key) for key in ("steps", "examples", "first_loss", "last_loss")} if sft else {}
    have = {row["key"] for row in rows}
    carried = [dict(row) for row in previous["rows"] if row["key"] not in have]
    for row in carried:
        row.setdefault("carried_from", previous["meta"]["date"])
        trained = row["key"] in ("star_sft", "star_grpo") or row["key"].startswith("best_of_")
        if sft and trained and "carried_sft" not in row:
            row["carried_sft"] = sft
    rows.extend(carried)
    best_of = previous["config"]["eval"].get("best_of_k_model", config.eval.best_of_k_model)
    return {
        "rows": {row["key"]: row["carried_from"] for row in carried},
        "groups": sorted({row_group(row["key"], best_of) for row in carried}),
        "matched_on": matched,
    }


def build_config(args: argparse.Namespace) -> PipelineConfig:
    """The YAML, then this script's flags, then ``--set``; a relative work folder is the repository's."""
    overrides = [
        f"{field}={value}"
        for flag, fields in FLAG_FIELDS.items()
        if (value := getattr(args, flag)) is not None
        for field in fields
    ]
    config = load_config(args.config, [*overrides, *args.set], work=args.work)
    if not config.work.is_absolute():
        config = dataclasses.replace(config, work=REPO_ROOT / config.work)
    return config


# ------------------------------------------------------------------------------------------- reporting


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def share(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def cell(row: dict[str, Any], key: str) -> str:
    low, high = row["ci95"][key]
    return f"{row[key]:.3f} [{low:.2f}, {high:.2f}]"


def load_note(row: dict[str, Any]) -> str:
    """`` (load 1.2)``: the 1-minute load average the row's wall time was measured under."""
    load = row.get("load_average")
    return f" (load {load[0]:.1f})" if load else ""


def repaired(row: dict[str, Any]) -> str:
    """What had to be repaired, at the level the method fails at: STAR chains, MARS runs, else tasks."""
    if row["kind"] == "student":
        return f"{share(row.get('repaired_chain_share'))} of chains"
    if row["kind"] in ("teacher", "hybrid"):
        return f"{share(row.get('repaired_run_share'))} of runs"
    return f"{share(row.get('repaired_task_share'))} of tasks"


def setup_lines(config: PipelineConfig, stages: dict[str, Any]) -> list[str]:
    """What the rows were measured with, from the config and the recorded stage results."""

    def result(name: str) -> dict[str, Any]:
        return stages.get(name, {}).get("result") or {}

    kept = result("filter").get("total", {})
    sft, rl, grpo = result("sft"), result("rl-data"), result("grpo")
    planner = result("planner-sft")
    planner_line = (
        [
            f"Planner SFT (MARS-Planner): {planner.get('steps', '?')} steps on "
            f"{planner.get('examples', '?')} "
            f"planner steps (loss {fmt(planner.get('first_loss'))} → {fmt(planner.get('last_loss'))})."
        ]
        if config.eval.mars_planner
        else []
    )
    trained = [
        f"SFT: {sft.get('steps', '?')} steps on {sft.get('examples', '?')} examples "
        f"(loss {fmt(sft.get('first_loss'))} → {fmt(sft.get('last_loss'))}). RL data: "
        f"{rl.get('instances', '?')} tasks × {config.rl_data.get('samples', 8)} samples, buckets "
        f"{rl.get('buckets', '?')}, mixed {rl.get('mixed', '?')}. GRPO: {grpo.get('steps', '?')} steps."
    ]
    if not any(name in stages for name in ("sft", "rl-data", "grpo")):
        trained = ["SFT, RL data and GRPO did not run in this work folder."]
    return [
        f"Test tasks: **{config.data.n_test}** classic (seed {config.seed}); the teacher ran "
        f"{config.data.n_train} training tasks × {config.teacher.passes} pass(es) "
        f"({', '.join(f'{k}={v}' for k, v in config.teacher.options.items())}); "
        f"{kept.get('kept_runs', '?')} of {kept.get('runs', '?')} runs survived the "
        f"top-{config.filter.top_k} outcome filter.",
        *trained,
        f"Teacher and students start from SmolLM2-135M-Instruct; served by the same vLLM build with the same "
        f"flags ({' '.join(config.serve.get('extra_args', [])) or 'defaults'}); requests in flight: "
        f"{config.teacher.concurrency} (MARS), {config.student.concurrency} (STAR).",
        *planner_line,
    ]


def markdown(config: PipelineConfig, rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# STAR vs MARS on MovieLens-100k (classic)",
        "",
        f"Command: `python benchmarks/star_vs_mars.py {meta['argv']}` ({meta['date']}, {meta['machine']}); "
        f"the pipeline config is `{meta['config']}` (written to `{meta['record']}`).",
        "",
        *setup_lines(config, meta["stages"]),
        "",
    ]
    if meta["missing"]:
        lines += [f"**Not finished yet (no rows): {', '.join(meta['missing'])}.**", ""]
    carried = meta.get("carried_over") or {}
    if carried.get("rows"):
        by_row = {row["key"]: row for row in rows}

        def described(key: str, date: str) -> str:
            sft = by_row[key].get("carried_sft")
            trained = (
                f"; its SFT: {sft.get('steps')} steps on {sft.get('examples')} examples, loss "
                f"{fmt(sft.get('first_loss'))} → {fmt(sft.get('last_loss'))}"
                if sft
                else ""
            )
            return f"{key} ({date}{trained})"

        lines += [
            "† Rows carried over from earlier runs of this config (`--carry-over`; matched on "
            f"{carried.get('matched_on', 'the same task settings')}): "
            + ", ".join(described(key, date) for key, date in carried["rows"].items())
            + ".",
            "",
        ]
    lines += [
        "| method | HR@1 | HR@3 | HR@5 | HR_avg | wall s/task | LLM calls/task | generated tokens/task "
        "| cost/task | `<recommend>` unforced | repaired |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']}{' †' if row.get('carried_from') else ''} | "
            f"{' | '.join(cell(row, key) for key in HR_KEYS)} | "
            f"{fmt(row.get('wall_s_per_task'), 1)}{load_note(row)} | {fmt(row['llm_calls_per_task'], 1)} | "
            f"{fmt(row['generated_tokens_per_task'], 0)} | ${row['cost_per_task_usd']:.4f} | "
            f"{share(row.get('unforced_recommend_share'))} | {repaired(row)} |"
        )
    lines += [
        "",
        "* Cells: value [95% bootstrap interval over the test tasks] (`starrec eval`'s intervals).",
        "* MARS raw is scored from the same runs as MARS fused: the ranker records the repaired LLM order "
        "next to the agreement-fused order, and `ranker_fusion=llm` returns exactly that order.",
        "* MARS-Planner (fused): the planner fine-tuned on the teacher's planner steps (`planner-sft`, "
        "in-process) plans; the teacher runs every other node, with the MARS rows' tasks, options and "
        "`ranker_fusion=agreement`. It sits between MARS and STAR: planning alignment alone.",
        "* Best-of-k rows come from one run of max(k) chains per task at temperature 0.7 (chain i uses seed "
        "+ i); the first k chains are fused by Borda count, so each row equals a run with `samples = k`. "
        "Wall time is shown for the largest k only; calls and tokens count exactly the first k chains "
        "(plus the abstractor).",
        "* `<recommend>` unforced: the share of STAR chains that reached `<recommend>` without the loop "
        "forcing the ending (n/a where the loop does not count forced endings, and for non-STAR rows).",
        "* Cost is tokens × the configured prices (0 for local models). Wall s/task = harness wall time / "
        "tasks at the stated concurrency, on a shared machine: compare rows, not absolute values; "
        "(load x) is the 1-minute load average when the row was measured (rows made before it was "
        "recorded have none).",
        "",
        "| stage | status | seconds |",
        "|---|---|---|",
        *(
            f"| {name} | {entry.get('status', '?')} | {fmt(entry.get('seconds'), 0)} |"
            for name, entry in meta["stages"].items()
        ),
        "",
    ]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """HR_avg with its interval per row (left) and against seconds per task (right, log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"classical": "grey", "prior": "tab:green", "teacher": "tab:red", "hybrid": "tab:orange",
               "student": "tab:blue"}  # fmt: skip
    shown = [row for row in rows if row["key"] != "best_classical"]
    figure, (bars, scatter) = plt.subplots(1, 2, figsize=(13, 5.5))
    positions = range(len(shown))
    errors = [
        [row["hr_avg"] - row["ci95"]["hr_avg"][0] for row in shown],
        [row["ci95"]["hr_avg"][1] - row["hr_avg"] for row in shown],
    ]
    bars.barh(
        list(positions),
        [row["hr_avg"] for row in shown],
        xerr=errors,
        capsize=2,
        color=[colours.get(row["kind"], "k") for row in shown],
    )
    bars.set_yticks(list(positions), [row["method"] for row in shown], fontsize=7)
    bars.invert_yaxis()
    bars.set_xlabel("HR_avg (95% bootstrap interval)")
    for row in shown:
        seconds = row.get("wall_s_per_task")
        if seconds is None:
            continue
        scatter.errorbar(
            max(seconds, 1e-3),
            row["hr_avg"],
            capsize=2,
            fmt="o",
            yerr=[[row["hr_avg"] - row["ci95"]["hr_avg"][0]], [row["ci95"]["hr_avg"][1] - row["hr_avg"]]],
            color=colours.get(row["kind"], "k"),
        )
        scatter.annotate(
            row["method"],
            (max(seconds, 1e-3), row["hr_avg"]),
            fontsize=6,
            xytext=(3, 3),
            textcoords="offset points",
        )
    scatter.set_xscale("log")
    scatter.set_xlabel("wall seconds per task (log)")
    scatter.set_ylabel("HR_avg")
    figure.suptitle("classical (grey), CF prior (green), MARS teacher (red), STAR student (blue)")
    figure.tight_layout()
    figure.savefig(path, dpi=130)
    plt.close(figure)


def write_results(
    config: PipelineConfig, rows: list[dict[str, Any]], meta: dict[str, Any], folder: Path
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"config": config.to_dict(), "meta": meta, "rows": rows}
    (folder / "star_vs_mars.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    markdown_path = folder / "star_vs_mars.md"
    markdown_path.write_text(markdown(config, rows, meta), encoding="utf-8")
    if rows:
        plot(rows, folder / "star_vs_mars.png")
    return markdown_path


def main(argv: list[str] | None = None) -> Path:
    """Run (unless ``--report-only``) and write the results; returns the Markdown report's path."""
    args = parse_args(argv)
    config = build_config(args)
    layout = WorkLayout.of(config)
    if not args.report_only:
        run_pipeline(config, from_stage=args.from_stage, only=args.only, console=console)
    rows, missing = finished_rows(config, layout)
    carried = carry_over(config, layout, rows, args.results) if args.carry_over else {}
    record = json.loads(layout.record.read_text(encoding="utf-8")) if layout.record.exists() else {}
    shown_args = [arg for arg in (argv if argv is not None else sys.argv[1:]) if arg != "--report-only"]
    meta = {
        "argv": " ".join(shown_args),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} CPU cores, {'a GPU' if shutil.which('nvidia-smi') else 'no GPU'}",
        "config": str(
            args.config.relative_to(REPO_ROOT) if args.config.is_relative_to(REPO_ROOT) else args.config
        ),
        "record": str(layout.record),
        "missing": [group for group in missing if group not in carried.get("groups", [])],
        "carried_over": carried,
        "test_tasks_sha256": test_tasks_sha256(layout),
        "stages": {
            name: {k: v for k, v in entry.items() if k != "result" or name != "eval"}
            for name, entry in record.get("stages", {}).items()
        },
    }
    report = write_results(config, rows, meta, args.results)
    console.print(report.read_text(encoding="utf-8"))
    return report


if __name__ == "__main__":
    # SIGTERM must unwind through the ``finally`` blocks that stop the vLLM servers (own process groups).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    main()
