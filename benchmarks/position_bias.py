"""Position bias of the published AgentSociety task folders, and proof that the shuffle removes it.

For each domain (amazon, goodreads, yelp) it evaluates, with the real harness:
identity on the file order (``shuffle=False``: what a method scores by echoing the list),
identity after the seeded shuffle and a random ranker (both over several seeds), and records
where the ground truth sits in the files. Writes ``benchmarks/results/position_bias.{json,md,png}``.

    python benchmarks/position_bias.py [--tasks-root ../shared/data/agentsociety-tasks] [--seeds 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from starrec.baselines.simple import IdentityRecommender, RandomRecommender
from starrec.data.tasks import DuplicateCandidatesWarning, read_tasks
from starrec.eval.harness import evaluate
from starrec.eval.recommender import Recommender

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TASKS_ROOT = REPO_ROOT.parent / "shared" / "data" / "agentsociety-tasks"
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
DOMAINS = ("amazon", "goodreads", "yelp")


def hr_avg_over_seeds(make: type[Recommender], tasks: list, seeds: int) -> dict[str, float]:
    values = []
    for seed in range(seeds):
        method = make(seed) if make is RandomRecommender else make()
        report = evaluate(method, tasks, None, seed=seed, progress=False, include_per_task=False)
        values.append(report["hr_avg"])
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "seeds": len(values)}


def measure_domain(folder: Path, seeds: int) -> dict[str, Any]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DuplicateCandidatesWarning)
        tasks = read_tasks(folder)
    positions = Counter(task.candidates.index(task.ground_truth) + 1 for task in tasks)
    unshuffled = evaluate(IdentityRecommender(), tasks, None, seed=0, progress=False, shuffle=False,
                          include_per_task=False)
    return {
        "n_tasks": len(tasks),
        "tasks_with_duplicate_candidates": len(caught),
        "ground_truth_position": {
            "mean": statistics.fmean(task.candidates.index(task.ground_truth) + 1 for task in tasks),
            "share_in_top_5": sum(positions[position] for position in range(1, 6)) / len(tasks),
            "histogram": {str(position): positions[position] for position in sorted(positions)},
        },
        "identity_unshuffled": {key: unshuffled[key] for key in ("hr@1", "hr@3", "hr@5", "hr_avg", "ndcg@5")},
        "identity_shuffled_hr_avg": hr_avg_over_seeds(IdentityRecommender, tasks, seeds),
        "random_hr_avg": hr_avg_over_seeds(RandomRecommender, tasks, seeds),
    }


def write_markdown(results: dict[str, Any], path: Path) -> None:
    lines = [
        "# Position bias of the published AgentSociety task folders",
        "",
        f"Command: `python benchmarks/position_bias.py --seeds {results['seeds']}`. "
        "HR_avg = mean of HR@1/3/5; 20 candidates, so a position-blind ranker expects 0.15.",
        "",
        "| domain | tasks | GT mean position | GT in top 5 | identity, file order | identity, shuffled "
        "| random |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for domain, row in results["domains"].items():
        shuffled, rand = row["identity_shuffled_hr_avg"], row["random_hr_avg"]
        lines.append(
            f"| {domain} | {row['n_tasks']} | {row['ground_truth_position']['mean']:.2f} | "
            f"{row['ground_truth_position']['share_in_top_5']:.1%} | "
            f"{row['identity_unshuffled']['hr_avg']:.4f} | "
            f"{shuffled['mean']:.4f} ± {shuffled['sd']:.4f} | {rand['mean']:.4f} ± {rand['sd']:.4f} |"
        )
    lines += ["", "Shuffled and random: mean ± sd over seeds 0..{}.".format(results["seeds"] - 1), ""]
    path.write_text("\n".join(lines))


def write_plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = list(results["domains"])
    series = {
        "identity, file order": [results["domains"][d]["identity_unshuffled"]["hr_avg"] for d in domains],
        "identity, shuffled": [results["domains"][d]["identity_shuffled_hr_avg"]["mean"] for d in domains],
        "random": [results["domains"][d]["random_hr_avg"]["mean"] for d in domains],
    }
    figure, axis = plt.subplots(figsize=(7, 4))
    width = 0.26
    for offset, (label, values) in enumerate(series.items()):
        axis.bar([i + (offset - 1) * width for i in range(len(domains))], values, width, label=label)
    axis.axhline(0.15, color="grey", linestyle="--", linewidth=1, label="expected random (0.15)")
    axis.set_xticks(range(len(domains)), domains)
    axis.set_ylabel("HR_avg")
    axis.set_title("Ground-truth position leak in the published task files")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks-root", type=Path, default=DEFAULT_TASKS_ROOT)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    results = {
        "seeds": args.seeds,
        "domains": {domain: measure_domain(args.tasks_root / domain, args.seeds) for domain in DOMAINS},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "position_bias.json").write_text(json.dumps(results, indent=2))
    write_markdown(results, args.out / "position_bias.md")
    write_plot(results, args.out / "position_bias.png")
    print((args.out / "position_bias.md").read_text())


if __name__ == "__main__":
    main()
