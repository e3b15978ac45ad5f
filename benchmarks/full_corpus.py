"""Full-corpus ranking on MovieLens-100k: classical retrievers over the whole catalogue, LLM re-rankers.

The paper evaluates only 1 + 19 candidate sets and leaves full-corpus ranking open. This runs
:func:`starrec.eval.full_corpus.evaluate_full` (the harness's leakage guard: every method is
fitted on ``dataset.hide_from(tasks)``):

1. each of ``--methods`` (pop, itemknn, bpr, lightgcn, sasrec) ranks the whole catalogue minus the
   user's training items on ``--n`` classic tasks; its order is the final list (HR@10, NDCG@10,
   MRR) and its top ``--retrieve-n`` gives Recall@N;
2. on the first ``--llm-users`` of those tasks, MARS and STAR re-rank the itemknn top N, shuffled
   with the seed so position carries nothing. The same users' itemknn order is scored beside them,
   and so is each LLM method's own collaborative prior over the same N items (what the method
   starts from before the LLM speaks): the paired differences are the LLM's contribution.

Default configs of every method (no tuning here: ``benchmarks/baselines.py`` tunes on the sampled
protocol). Rows are saved to ``benchmarks/work/full_corpus/rows.json`` as they finish, so a rerun
with the same arguments resumes. Writes ``benchmarks/results/full_corpus.{json,md,png}``::

    python benchmarks/full_corpus.py [--n 500] [--llm-users 50] [--methods pop,itemknn,bpr,lightgcn,sasrec]
        [--rerankers mars,star] [--retrieve-n 50] [--star-model smollm2] [--report-only]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from starrec.config import get_settings
from starrec.data import fetch_movielens_100k, load_dataset
from starrec.data.scenarios import build_tasks, data_files_fingerprint
from starrec.data.schema import Dataset, RankRequest, Task
from starrec.data.tasks import MANIFEST_FILE, write_tasks
from starrec.eval.full_corpus import evaluate_full
from starrec.eval.harness import CI_RESAMPLES, CI_SEED, INVALID_KEYS
from starrec.eval.methods import METHOD_FACTORIES, MethodOptions, make_method
from starrec.eval.metrics import bootstrap_interval, per_task_full_scores, rank_of
from starrec.eval.recommender import Recommender
from starrec.eval.repair import repair_ranking

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
WORK_DIR = REPO_ROOT / "benchmarks" / "work" / "full_corpus"
METHODS = ("pop", "itemknn", "bpr", "lightgcn", "sasrec")
RERANKERS = ("mars", "star")
LABELS = {"recbole": "recbole (RecBole 1.2.1 BPR: 40 epochs, dim 64, lr 1e-3)"}
"""Row labels that say more than the method name (``--methods recbole`` needs the recbole extra)."""
RETRIEVER = "itemknn"
K = 10
MARS_KNOBS = {"max_history": "10", "chunk_size": "10", "max_tool_calls": "1", "tool_choice": "required",
              "max_new_tokens": "160", "llm_threads": "1"}  # fmt: skip
"""starrec.graphs.demo.DEMO_KNOBS (SmolLM2 on a small CPU), with the pipeline teacher's 10-item history."""
STAR_KNOBS = {"max_history": "10", "max_completion_tokens": "512", "abstractor_max_tokens": "192"}
"""configs/pipeline-ml100k.yaml's student options."""
console = Console(stderr=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--n", type=int, default=500, help="Classic tasks (one per user) for the classical rows."
    )
    parser.add_argument(
        "--llm-users", type=int, default=50, help="Users (the first tasks) the LLM rows re-rank."
    )
    parser.add_argument(
        "--methods", default=",".join(METHODS), help="Comma-separated full-catalogue rankers."
    )
    parser.add_argument(
        "--rerankers",
        default=",".join(RERANKERS),
        help="LLM re-rankers of the itemknn top N (mars, star; '' = none).",
    )
    parser.add_argument("--retrieve-n", type=int, default=50, help="Items the retriever keeps (Recall@N).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--llm", default="local", help="MARS's LLM backend spec (local = SmolLM2-135M-Instruct)."
    )
    parser.add_argument(
        "--star-model",
        default="smollm2",
        help=(
            "STAR's student: a checkpoint of `starrec distill sft`, or 'smollm2' (the untrained base model, "
            "labelled so)."
        ),
    )
    parser.add_argument(
        "--base-url",
        help=(
            "An OpenAI-compatible endpoint (e.g. `starrec serve`, vLLM) for both re-rankers: MARS with "
            "--llm openai:NAME, STAR with --star-model NAME as served there."
        ),
    )
    parser.add_argument("--concurrency", type=int, default=1, help="LLM requests in flight.")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--work", type=Path, default=WORK_DIR)
    parser.add_argument(
        "--report-only", action="store_true", help="Format the rows already in the work folder."
    )
    return parser.parse_args(argv)


def classic_tasks(data_dir: Path, dataset: Dataset, n: int, seed: int) -> list[Task]:
    """The project's classic tasks, written to the cache (``starrec eval --protocol full`` reruns rows)."""
    built = build_tasks(dataset, "classic", n, seed, fingerprint=data_files_fingerprint(data_dir))
    folder = get_settings().cache_dir / "tasks" / "ml-100k" / f"classic-n{n}-seed{seed}"
    if not (folder / MANIFEST_FILE).is_file():
        write_tasks(built.tasks, folder, built.manifest)
    console.print(f"classic: {len(built.tasks)} tasks in {folder}")
    return built.tasks


def row_of(report: dict[str, Any], label: str, kind: str) -> dict[str, Any]:
    """What the table needs from one evaluate_full report (per-task ranks kept for paired comparisons)."""
    keep = ("method", "retriever", "reranker", "n_tasks", f"hr@{K}", f"ndcg@{K}", "mrr", "ci95", "retrieve_n",
            "catalogue_size", "mean_retrieval_candidates", "invalid", "retrieval_invalid", "elapsed_s",
            "retriever_stats", "method_stats")  # fmt: skip
    row = {key: report[key] for key in keep}
    row["load_average"] = report.get("load_average", [])
    row["label"], row["kind"] = label, kind
    row["recall"] = report[f"recall@{report['retrieve_n']}"]
    row["ranks"] = {task["task_id"]: task["rank"] for task in report["per_task"]}
    row["retrieval_ranks"] = {task["task_id"]: task["retrieval_rank"] for task in report["per_task"]}
    return row


def prior_row(
    reranker: Any, tasks: Sequence[Task], retrieval: dict[str, Any], label: str
) -> dict[str, Any] | None:
    """The LLM method's own collaborative prior over the same retrieved N, scored like a row."""
    priors = reranker.prior_orders()
    paired = [task for task in tasks if priors.get(task.task_id)]
    if not paired:
        return None
    rankings = [priors[task.task_id] for task in paired]
    truths = [task.ground_truth or "" for task in paired]
    scores = per_task_full_scores(rankings, truths, K)
    row: dict[str, Any] = {"label": label, "kind": "prior", "method": label, "retriever": RETRIEVER,
                           "n_tasks": len(paired), "retrieve_n": retrieval["retrieve_n"]}  # fmt: skip
    row["ci95"] = {}
    for name, values in scores.items():
        row[name] = sum(values) / len(values)
        low, high = bootstrap_interval(values, resamples=CI_RESAMPLES, seed=CI_SEED)
        row["ci95"][name] = [round(low, 4), round(high, 4)]
    row["recall"] = sum(
        1.0
        for task in paired
        if retrieval["retrieval_ranks"].get(task.task_id) is not None
        and retrieval["retrieval_ranks"][task.task_id] <= row["retrieve_n"]
    ) / len(paired)
    row["ci95"]["recall"] = retrieval["ci95"][f"recall@{row['retrieve_n']}"]
    row["ranks"] = {task.task_id: next((i for i, item in enumerate(priors[task.task_id], 1)
                                        if item == task.ground_truth), None) for task in paired}  # fmt: skip
    return row


def per_task_values(row: dict[str, Any], task_ids: Sequence[str]) -> dict[str, list[float]]:
    """HR@K, NDCG@K and reciprocal rank per task, from a row's stored ranks."""
    import math

    out: dict[str, list[float]] = {f"hr@{K}": [], f"ndcg@{K}": [], "mrr": []}
    for task_id in task_ids:
        rank = row["ranks"].get(task_id)
        inside = rank is not None and rank <= K
        out[f"hr@{K}"].append(1.0 if inside else 0.0)
        out[f"ndcg@{K}"].append(1.0 / math.log2(rank + 1) if inside and rank else 0.0)
        out["mrr"].append(1.0 / rank if rank else 0.0)
    return out


def paired_delta(row: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """``row`` minus ``base`` on the tasks both ranked: mean difference and paired bootstrap interval."""
    shared = [task_id for task_id in row["ranks"] if task_id in base["ranks"]]
    own, other = per_task_values(row, shared), per_task_values(base, shared)
    delta: dict[str, Any] = {"n_tasks": len(shared), "against": base["label"]}
    for name in own:
        differences = [a - b for a, b in zip(own[name], other[name], strict=True)]
        low, high = bootstrap_interval(differences, resamples=CI_RESAMPLES, seed=CI_SEED)
        delta[name] = sum(differences) / max(len(differences), 1)
        delta[f"{name}_ci95"] = [round(low, 4), round(high, 4)]
    delta["tasks_changed_rank"] = sum(row["ranks"][t] != base["ranks"][t] for t in shared)
    return delta


def llm_knobs(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """The method knobs of an LLM re-ranker (what its rows and answer files are keyed on)."""
    if name == "mars":
        knobs = dict(MARS_KNOBS)
        if args.base_url:  # vLLM structured outputs (on in `starrec serve`): valid answers by construction
            # starrec's own <tool_call> syntax: vLLM's native tool_choice=required needs a tool-call parser.
            knobs |= {"constrained_decoding": "vllm", "tool_protocol": "text", "structured_output": "json"}
        return knobs
    if name == "star":
        return dict(STAR_KNOBS)
    raise ValueError(f"unknown re-ranker {name!r}; choose from {', '.join(RERANKERS)}")


def llm_options(name: str, args: argparse.Namespace, data_dir: Path) -> tuple[MethodOptions, str]:
    """Options and an honest label for an LLM re-ranker."""
    knobs = llm_knobs(name, args)
    if name == "mars":
        options = MethodOptions(seed=args.seed, data_dir=data_dir, llm=args.llm, concurrency=args.concurrency,
                                base_url=args.base_url, extra=knobs)  # fmt: skip
        model = "SmolLM2-135M-Instruct, local CPU" if args.llm == "local" else args.llm
        if args.base_url:
            model += " on a vLLM endpoint, constrained decoding"
        return options, f"MARS ({model}) re-ranking {RETRIEVER} top {args.retrieve_n}"
    options = MethodOptions(seed=args.seed, data_dir=data_dir, model=args.star_model,
                            base_url=args.base_url, concurrency=args.concurrency, extra=knobs)  # fmt: skip
    student = (
        "untrained base SmolLM2-135M-Instruct as the student (no STAR checkpoint on this machine)"
        if args.star_model == "smollm2"
        else f"student {args.star_model}"
    )
    return options, f"STAR ({student}) re-ranking {RETRIEVER} top {args.retrieve_n}"


class CheckpointedReranker(Recommender):
    """Wraps an LLM re-ranker: every answer (and its CF prior) is appended to a JSON-lines file as it
    arrives, and a rerun answers those requests from the file, so a long CPU run can be stopped and
    resumed. A request is the same request only if user, task and the shown candidates all match."""

    def __init__(self, inner: Recommender, path: Path) -> None:
        self.inner = inner
        self.name = inner.name
        self.path = path
        self.answers: dict[str, dict[str, Any]] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    record = json.loads(line)
                    self.answers[record["key"]] = record
        self.reused = 0

    @staticmethod
    def key(request: RankRequest) -> str:
        return json.dumps([request.task_id, request.user_id, list(request.candidates)])

    def fit(self, train: Dataset) -> None:
        self.inner.fit(train)

    def rank(self, request: RankRequest) -> Sequence[str]:
        result = self.rank_batch([request])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def rank_batch(self, requests: Sequence[RankRequest]) -> list[Sequence[str] | BaseException]:
        todo = [request for request in requests if self.key(request) not in self.answers]
        self.reused += len(requests) - len(todo)
        if todo:
            fresh = self.inner.rank_batch(todo)
            priors = self.inner.prior_orders()
            with self.path.open("a", encoding="utf-8") as out:
                for request, answer in zip(todo, fresh, strict=True):
                    record = {"key": self.key(request), "task_id": request.task_id,
                              "prior": priors.get(request.task_id)}  # fmt: skip
                    if isinstance(answer, BaseException):
                        record["error"] = f"{type(answer).__name__}: {answer}"
                    else:
                        record["ranking"] = list(answer)
                    self.answers[record["key"]] = record
                    out.write(json.dumps(record) + "\n")
        results: list[Sequence[str] | BaseException] = []
        for request in requests:
            record = self.answers[self.key(request)]
            results.append(RuntimeError(record["error"]) if "error" in record else record["ranking"])
        return results

    def prior_orders(self) -> dict[str, list[str]]:
        return {record["task_id"]: record["prior"] for record in self.answers.values() if record["prior"]}

    def stats(self) -> dict[str, Any]:
        return {**self.inner.stats(), "answers_reused_from_checkpoint": self.reused}

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


class Rows:
    """Finished rows keyed by label, saved after each one (a rerun with the same arguments resumes).

    Each save merges with the file on disk, so the classical and the LLM rows can run as two
    processes (``--rerankers ''`` and ``--methods ''``) into the same work folder.
    """

    def __init__(self, path: Path, setup: dict[str, Any]) -> None:
        self.path = path
        self.setup = setup
        self.rows: dict[str, dict[str, Any]] = self.stored()

    def stored(self) -> dict[str, dict[str, Any]]:
        stored = json.loads(self.path.read_text()) if self.path.is_file() else {}
        return stored.get("rows", {}) if stored.get("setup") == self.setup else {}

    def save(self, key: str, row: dict[str, Any]) -> None:
        row["command"] = command_line()
        self.rows = {**self.stored(), **self.rows, key: row}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps({"setup": self.setup, "rows": self.rows}, indent=1, default=str))
        partial.replace(self.path)


def partial_rows(args: argparse.Namespace, rows: Rows, tasks: list[Task]) -> list[str]:
    """Rows for re-rankers stopped before all ``--llm-users``, scored from their answer checkpoints.

    The answers were given on the same leakage-free view and the same requests as the full run (the
    checkpoint key holds the shown candidates), so each finished user is scored exactly as
    ``evaluate_full`` would score it: repaired, an errored answer scored in the shown order and
    counted. Returns a note per partial row.
    """
    base = rows.rows.get(f"{RETRIEVER}@llm_users")
    subset = tasks[: args.llm_users]
    notes: list[str] = []
    if base is None or base["n_tasks"] != len(subset):
        return notes
    for name in [name for name in args.rerankers.split(",") if name]:
        path = answers_path(name, args)
        stored = rows.rows.get(name, {})
        finished = stored.get("n_tasks") == len(subset) and stored.get("llm_setup") == llm_setup(name, args)
        if finished or not path.is_file():
            continue
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        by_task = {record["task_id"]: record for record in records}
        done = [task for task in subset if task.task_id in by_task]
        if not done:
            continue
        rankings, priors, invalid = [], {}, dict.fromkeys(INVALID_KEYS, 0)
        for task in done:
            record = by_task[task.task_id]
            shown = json.loads(record["key"])[2]
            if "error" in record:
                invalid["errors"] += 1
                rankings.append(list(shown))
            else:
                ranking, repair = repair_ranking(record["ranking"], shown)
                counts = repair.counts()
                invalid["repaired_tasks"] += any(counts.values())
                for key, value in counts.items():
                    invalid[key] += value
                rankings.append(ranking)
            if record.get("prior"):
                priors[task.task_id] = record["prior"]
        _, label = llm_options(name, args, args.data_dir)
        label += f" (partial: {len(done)} of {len(subset)} users, scored from the answer checkpoint)"
        row = scored_row(rankings, done, base, label, "llm")
        row["invalid"] = invalid
        row["llm_setup"] = llm_setup(name, args)
        row["vs_retriever"] = paired_delta(row, base)
        prior_tasks = [task for task in done if task.task_id in priors]
        if prior_tasks:
            prior_label = f"{name.upper()}'s CF prior over the same top {args.retrieve_n} (no LLM)"
            prior = scored_row(
                [priors[t.task_id] for t in prior_tasks], prior_tasks, base, prior_label, "prior"
            )
            row["vs_prior"] = paired_delta(row, prior)
            rows.rows[f"{name}_prior"] = prior
        rows.rows[name] = row
        notes.append(f"- {label}: the run was stopped at {len(done)} of {len(subset)} users; LLM cost "
                     "counters are not in the checkpoint, so they are not shown for this row.")  # fmt: skip
    return notes


def scored_row(
    rankings: list[list[str]], tasks: Sequence[Task], base: dict[str, Any], label: str, kind: str
) -> dict[str, Any]:
    """A row from final rankings over the retrieved N (Recall@N from the retriever's ranks)."""
    truths = [task.ground_truth or "" for task in tasks]
    scores = per_task_full_scores(rankings, truths, K)
    row: dict[str, Any] = {"label": label, "kind": kind, "method": label, "retriever": RETRIEVER,
                           "n_tasks": len(tasks), "retrieve_n": base["retrieve_n"], "ci95": {}}  # fmt: skip
    cut = base["retrieve_n"]
    ranks = [base["retrieval_ranks"].get(task.task_id) for task in tasks]
    survived = [1.0 if rank is not None and rank <= cut else 0.0 for rank in ranks]
    for name, values in {**scores, "recall": survived}.items():
        row[name] = sum(values) / len(values)
        low, high = bootstrap_interval(values, resamples=CI_RESAMPLES, seed=CI_SEED)
        row["ci95"][name] = [round(low, 4), round(high, 4)]
    row["ranks"] = {task.task_id: rank_of(ranking, task.ground_truth or "")
                    for task, ranking in zip(tasks, rankings, strict=True)}  # fmt: skip
    return row


def command_line() -> str:
    return "python benchmarks/full_corpus.py " + " ".join(
        repr(arg) if not arg or " " in arg else arg for arg in sys.argv[1:]
    )


def llm_setup(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """What an LLM row was measured with: a stored row or answer file is reused only for the same."""
    model = args.llm if name == "mars" else args.star_model
    knobs = dict(sorted(llm_knobs(name, args).items()))
    return {"model": model, "endpoint": bool(args.base_url), "knobs": knobs}


def answers_path(name: str, args: argparse.Namespace) -> Path:
    setup = llm_setup(name, args)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", str(setup["model"])).strip("-") + (
        "-endpoint" if setup["endpoint"] else ""
    )
    knobs = hashlib.sha256(json.dumps(setup["knobs"]).encode()).hexdigest()[:8]
    return args.work / f"{name}-answers-seed{args.seed}-n{args.retrieve_n}-{slug}-{knobs}.jsonl"


def run_rows(
    args: argparse.Namespace, rows: Rows, data_dir: Path, dataset: Dataset, tasks: list[Task]
) -> None:
    methods = [name for name in args.methods.split(",") if name]
    for name in methods:
        if name in rows.rows:
            continue
        if name not in METHOD_FACTORIES:
            raise ValueError(
                f"unknown method {name!r} in --methods; registered: {', '.join(METHOD_FACTORIES)}"
            )
        console.rule(f"{name}: full catalogue, {len(tasks)} users")
        method = make_method(name, MethodOptions(seed=args.seed, data_dir=data_dir))
        report = evaluate_full(method, tasks, dataset, retrieve_n=args.retrieve_n, k=K, seed=args.seed)
        rows.save(name, row_of(report, LABELS.get(name, name), "classical"))
        console.print(summary_line(rows.rows[name]))
    rerankers = [name for name in args.rerankers.split(",") if name]
    if not rerankers:
        return
    subset = tasks[: args.llm_users]
    base_key = f"{RETRIEVER}@llm_users"
    if rows.rows.get(base_key, {}).get("n_tasks") != len(subset):
        retriever = make_method(RETRIEVER, MethodOptions(seed=args.seed, data_dir=data_dir))
        report = evaluate_full(retriever, subset, dataset, retrieve_n=args.retrieve_n, k=K, seed=args.seed)
        rows.save(base_key, row_of(report, f"{RETRIEVER} order (the same {len(subset)} users)", "retriever"))
    for name in rerankers:
        stored = rows.rows.get(name, {})
        if stored.get("n_tasks") == len(subset) and stored.get("llm_setup") == llm_setup(name, args):
            continue
        options, label = llm_options(name, args, data_dir)
        console.rule(label)
        checkpoint = answers_path(name, args)
        reranker = CheckpointedReranker(make_method(name, options), checkpoint)
        retriever = make_method(RETRIEVER, MethodOptions(seed=args.seed, data_dir=data_dir))
        report = evaluate_full(retriever, subset, dataset, reranker, retrieve_n=args.retrieve_n, k=K,
                               seed=args.seed, batch_size=max(args.concurrency, 1))  # fmt: skip
        row = row_of(report, label, "llm") | {"llm_setup": llm_setup(name, args)}
        prior_label = f"{name.upper()}'s CF prior over the same top {args.retrieve_n} (no LLM)"
        prior = prior_row(reranker, subset, rows.rows[base_key], prior_label)
        row["vs_retriever"] = paired_delta(row, rows.rows[base_key])
        if prior is not None:
            row["vs_prior"] = paired_delta(row, prior)
            rows.save(f"{name}_prior", prior)
        rows.save(name, row)
        console.print(summary_line(row))
        reranker.close()


def cell(row: dict[str, Any], key: str, ci_key: str | None = None) -> str:
    low, high = row["ci95"][ci_key or key]
    return f"{row[key]:.4f} [{low:.2f}, {high:.2f}]"


def recall_key(row: dict[str, Any]) -> str:
    return "recall" if "recall" in row["ci95"] else f"recall@{row['retrieve_n']}"


def summary_line(row: dict[str, Any]) -> str:
    return (
        f"{row['label']}: HR@{K} {cell(row, f'hr@{K}')}  NDCG@{K} {cell(row, f'ndcg@{K}')}  MRR "
        f"{cell(row, 'mrr')}  Recall@{row['retrieve_n']} {cell(row, 'recall', recall_key(row))}  "
        f"n={row['n_tasks']}"
    )


def ordered(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    order = {"classical": 0, "retriever": 1, "prior": 2, "llm": 3}
    return sorted(rows.values(), key=lambda row: order[row["kind"]])


def delta_text(delta: dict[str, Any]) -> str:
    parts = [f"{name} {delta[name]:+.4f} [{delta[f'{name}_ci95'][0]:+.3f}, {delta[f'{name}_ci95'][1]:+.3f}]"
             for name in (f"hr@{K}", f"ndcg@{K}", "mrr")]  # fmt: skip
    return f"{', '.join(parts)} (n={delta['n_tasks']}, {delta['tasks_changed_rank']} truths moved)"


def markdown(payload: dict[str, Any]) -> str:
    setup = payload["setup"]
    n_recall = setup["retrieve_n"]
    lines = [
        "# Full-corpus ranking on MovieLens-100k",
        "",
        "Commands (rows resume from `benchmarks/work/full_corpus/rows.json`; the classical and the LLM rows "
        f"ran as two processes): {', '.join(f'`{c}`' for c in payload['commands'])} ({payload['date']}, "
        f"{payload['machine']}).",
        "",
        f"Classic tasks (seed {setup['seed']}), one per user; each method ranks the whole catalogue "
        f"({payload['catalogue_size']} items) minus the user's training items (on average "
        f"{payload['mean_unseen']:.0f} per user), fitted on the leakage-free view "
        "(`dataset.hide_from(tasks)`). A ground truth the retriever dropped is a miss for every metric. "
        "Default configs, no tuning. Cells: value [95% bootstrap interval over users, seed 0]; n = users.",
        "",
        f"| method | n | HR@{K} | NDCG@{K} | MRR | Recall@{n_recall} | seconds (1-min load at the end) |",
        "|---|---:|---|---|---|---|---:|",
    ]
    for row in ordered(payload["rows"]):
        seconds = f"{row['elapsed_s']:.0f}" if "elapsed_s" in row else "-"
        if row.get("load_average"):
            seconds += f" (load {row['load_average'][0]:.1f})"
        lines.append(
            f"| {row['label']} | {row['n_tasks']} | {cell(row, f'hr@{K}')} | {cell(row, f'ndcg@{K}')} | "
            f"{cell(row, 'mrr')} | {cell(row, 'recall', recall_key(row))} | {seconds} |"
        )
    llm_rows = [row for row in payload["rows"].values() if row["kind"] == "llm"]
    if llm_rows:
        lines += [
            "",
            "## What the LLM adds",
            "",
            "Paired differences on the same users (re-ranked list minus the other list; interval: paired "
            "bootstrap of the per-user differences). Recall@N is the retriever's, so it is the same for "
            "every re-ranker of the itemknn top N: re-ranking can only move items inside it.",
            "",
        ]
        for row in llm_rows:
            lines.append(f"- **{row['label']}** vs the {RETRIEVER} order: {delta_text(row['vs_retriever'])}")
            if "vs_prior" in row:
                lines.append(f"  - vs its own CF prior (no LLM): {delta_text(row['vs_prior'])}")
            invalid = ", ".join(f"{k}={v}" for k, v in row["invalid"].items())
            lines.append(f"  - invalid rankings (repaired, counted): {invalid}")
            stats = row.get("method_stats") or {}
            shown = {key: stats[key] for key in ("llm_calls_per_run", "tokens_per_run", "seconds_per_run",
                                                 "llm_calls_per_task_total", "chain_errors", "backend")
                     if key in stats}  # fmt: skip
            if shown:
                lines.append(f"  - cost: {json.dumps(shown, default=str)}")
    lines += ["", *payload.get("notes", []), "", "![full-corpus metrics](full_corpus.png)", ""]
    return "\n".join(lines)


def plot(payload: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ordered(payload["rows"])
    metrics = [(f"hr@{K}", f"hr@{K}"), (f"ndcg@{K}", f"ndcg@{K}"), ("mrr", "mrr"),
               ("recall", None)]  # fmt: skip
    figure, axis = plt.subplots(figsize=(max(8, 1.6 * len(rows)), 4.8))
    width = 0.8 / len(metrics)
    for offset, (key, ci_key) in enumerate(metrics):
        values = [row[key] for row in rows]
        intervals = [row["ci95"][ci_key or recall_key(row)] for row in rows]
        errors = [[v - low for v, (low, _) in zip(values, intervals, strict=True)],
                  [high - v for v, (_, high) in zip(values, intervals, strict=True)]]  # fmt: skip
        positions = [index + (offset - (len(metrics) - 1) / 2) * width for index in range(len(rows))]
        label = key if key != "recall" else f"recall@{payload['setup']['retrieve_n']}"
        axis.bar(positions, values, width, yerr=errors, capsize=2, label=label)
    names = [f"{row['label'].split(' re-ranking')[0].split(' (')[0]}\nn={row['n_tasks']}" for row in rows]
    axis.set_xticks(range(len(rows)), names, fontsize=8)
    axis.set_ylabel("value (95% bootstrap CI)")
    axis.set_title("MovieLens-100k, full catalogue (classic tasks)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def print_table(payload: dict[str, Any]) -> None:
    table = Table(title="Full-corpus ranking, MovieLens-100k")
    for column in ("method", "n", f"HR@{K}", f"NDCG@{K}", "MRR", f"Recall@{payload['setup']['retrieve_n']}"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in ordered(payload["rows"]):
        table.add_row(
            row["label"],
            str(row["n_tasks"]),
            cell(row, f"hr@{K}"),
            cell(row, f"ndcg@{K}"),
            cell(row, "mrr"),
            cell(row, "recall", recall_key(row)),
        )
    Console().print(table)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    data_dir = fetch_movielens_100k(get_settings().cache_dir / "datasets" / "ml-100k")
    dataset = load_dataset(data_dir)
    tasks = classic_tasks(data_dir, dataset, args.n, args.seed)
    setup = {"n": args.n, "retrieve_n": args.retrieve_n, "seed": args.seed}
    rows = Rows(args.work / "rows.json", setup)
    if not args.report_only:
        run_rows(args, rows, data_dir, dataset, tasks)
    rows.rows = {**rows.stored(), **rows.rows}
    args.data_dir = data_dir
    notes = partial_rows(args, rows, tasks)
    requested = [name for name in args.methods.split(",") if name]
    missing = [name for name in METHODS if name not in rows.rows]
    if missing:
        notes.append(f"- Not measured in this run: {', '.join(missing)}.")
    payload = {
        "commands": sorted({row["command"] for row in rows.rows.values() if "command" in row}),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} CPU cores (shared), no GPU, {platform.python_version()}",
        "setup": setup,
        "methods_requested": requested,
        "catalogue_size": max((row.get("catalogue_size", 0) for row in rows.rows.values()), default=0),
        "mean_unseen": max((r.get("mean_retrieval_candidates", 0) for r in rows.rows.values()), default=0),
        "rows": rows.rows,
        "notes": notes,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    public = {**payload, "rows": {key: {k: v for k, v in row.items() if k not in ("ranks", "retrieval_ranks")}
                                  for key, row in rows.rows.items()}}  # fmt: skip
    (args.results / "full_corpus.json").write_text(json.dumps(public, indent=2, default=str))
    (args.results / "full_corpus.md").write_text(markdown(payload), encoding="utf-8")
    if rows.rows:
        plot(payload, args.results / "full_corpus.png")
        print_table(payload)
    return payload


if __name__ == "__main__":
    main()
