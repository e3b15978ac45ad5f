"""Reference check: RecBole's BPR beside starrec's ``bpr`` on the same tasks.

Both methods go through ``starrec eval``'s harness on the same MovieLens-100k classic tasks (seed
0), the same shuffled candidates and the same leakage-free training view. RecBole trains with its
documented BPR settings for a fixed number of epochs (no validation split); starrec's ``bpr`` runs
with its defaults (early stopping on a hold-out of the view, then a refit). It answers "does our
BPR match the reference one?". Needs ``pip install 'starrec[recbole]'``. Writes
``benchmarks/results/recbole_reference.{json,md}``.

    python benchmarks/recbole_reference.py [--n 100] [--seed 0] [--recbole-option epochs=40 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from starrec.config import get_settings
from starrec.data import fetch_movielens_100k, load_dataset
from starrec.data.scenarios import build_tasks, data_files_fingerprint
from starrec.data.schema import Dataset, Task
from starrec.eval.commands import parse_options
from starrec.eval.harness import evaluate
from starrec.eval.methods import MethodOptions, make_method

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
METHODS = {"recbole": "RecBole BPR (--method recbole)", "bpr": "starrec bpr (defaults, early stopping)"}
console = Console(stderr=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100, help="Classic tasks.")
    parser.add_argument("--seed", type=int, default=0, help="Seed for tasks, shuffles and training.")
    parser.add_argument(
        "--recbole-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="A RecBoleConfig knob (repeatable), e.g. epochs=40 or model=LightGCN.",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="Where the json/md go.")
    return parser.parse_args(argv)


def measure(
    name: str, extra: dict[str, Any], tasks: list[Task], dataset: Dataset, seed: int
) -> dict[str, Any]:
    method = make_method(name, MethodOptions(seed=seed, extra=extra))
    report = evaluate(method, tasks, dataset, seed=seed, include_per_task=False)
    stats = report["method_stats"]
    return {
        "label": METHODS[name],
        "n_tasks": report["n_tasks"],
        **{key: report[key] for key in ("hr@1", "hr@3", "hr@5", "hr_avg", "ndcg@5")},
        "ci95": report["ci95"],
        "invalid": report["invalid"],
        "fit_seconds": stats.get("fit_seconds"),
        "fit_cpu_seconds": stats.get("fit_cpu_seconds"),
        "options": extra,
        "config": stats.get("config", {}),  # the fitted method's own config, as the harness reports it
        "versions": {key: value for key, value in stats.items() if key.endswith("_version")},
    }


def write_markdown(payload: dict[str, Any], path: Path) -> None:
    lines = [
        "# Reference check: RecBole's BPR beside starrec's `bpr`",
        "",
        f"Command: `{payload['command']}` ({payload['total_seconds']:.0f} s wall on "
        f"{payload['cpus']} CPUs, load average {payload['load_average_1min_at_end']} at the end). "
        f"The same {payload['n_tasks']} MovieLens-100k classic tasks (seed {payload['seed']}), the same "
        "shuffled candidates and the same leakage-free training view, through `starrec eval`'s harness.",
        "",
        "| method | n | HR@1 | HR@3 | HR@5 | HR_avg [95% CI] | fit s (wall / CPU) | config |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for report in payload["reports"].values():
        low, high = report["ci95"]["hr_avg"]
        shown = ", ".join(f"{key}={value}" for key, value in sorted(report["config"].items()))
        lines.append(
            f"| {report['label']} | {report['n_tasks']} | {report['hr@1']:.3f} | {report['hr@3']:.3f} | "
            f"{report['hr@5']:.3f} | {report['hr_avg']:.3f} [{low:.2f}, {high:.2f}] | "
            f"{report['fit_seconds']:.0f} / {report['fit_cpu_seconds']:.0f} | {shown} |"
        )
    recbole, ours = payload["reports"]["recbole"], payload["reports"]["bpr"]
    gap = ours["hr_avg"] - recbole["hr_avg"]
    lines += [
        "",
        f"starrec `bpr` minus RecBole BPR: HR_avg {gap:+.3f} on these tasks. RecBole trains for a fixed "
        "number of epochs with no validation split; starrec's `bpr` early-stops on a hold-out of the view "
        "and refits. Fit times come from a shared machine: compare them within this run only.",
        "",
    ]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    started = time.perf_counter()
    data_dir = fetch_movielens_100k(get_settings().cache_dir / "datasets" / "ml-100k")
    dataset = load_dataset(data_dir)
    built = build_tasks(dataset, "classic", args.n, args.seed, fingerprint=data_files_fingerprint(data_dir))
    recbole_extra = parse_options(args.recbole_option)
    reports = {}
    for name, extra in (("recbole", recbole_extra), ("bpr", {})):
        console.rule(METHODS[name])
        reports[name] = measure(name, extra, built.tasks, dataset, args.seed)
        console.print(f"{name}: HR_avg {reports[name]['hr_avg']:.3f}")
    command = "python benchmarks/recbole_reference.py" + "".join(
        part
        for part in (
            f" --n {args.n}" if args.n != 100 else "",
            f" --seed {args.seed}" if args.seed else "",
            *(f" --recbole-option {option}" for option in args.recbole_option),
        )
    )
    payload = {
        "benchmark": "recbole_reference",
        "command": command,
        "n_tasks": len(built.tasks),
        "seed": args.seed,
        "reports": reports,
        "cpus": os.cpu_count(),
        "total_seconds": round(time.perf_counter() - started, 1),
        "load_average_1min_at_end": round(os.getloadavg()[0], 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "recbole_reference.json").write_text(json.dumps(payload, indent=2))
    write_markdown(payload, args.out / "recbole_reference.md")
    console.print(f"wrote {args.out / 'recbole_reference.json'} and .md")
    return payload


if __name__ == "__main__":
    main(sys.argv[1:])
