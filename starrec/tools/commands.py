"""CLI commands of this area (registered by :mod:`starrec.cli`).

``starrec graph build|export``, ``starrec evidence build``, ``starrec cypher item-cf|user-cf|run``.
Heavy modules are imported inside each command.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from starrec.data.schema import Dataset
    from starrec.tools.store import GraphStore

graph_app = typer.Typer(help="Build and export the user-item interaction graph.", no_args_is_help=True)
evidence_app = typer.Typer(help="Offline verbalised CF evidence stored in the graph.", no_args_is_help=True)
cypher_app = typer.Typer(help="Inspect the CF tools' Cypher: queries, parameters, rows, evidence.",
                         no_args_is_help=True)  # fmt: skip


class StoreChoice(StrEnum):
    ladybug = "ladybug"
    neo4j = "neo4j"


class ExportFormat(StrEnum):
    neo4j_csv = "neo4j-csv"


DataOption = Annotated[
    Path, typer.Option("--data", help="Dataset folder (item.json, user.json, review.json).")
]
TasksOption = Annotated[
    Path | None,
    typer.Option(
        "--tasks", help="Task folder: each task user's ground truth and everything after it are left out."
    ),
]
StoreOption = Annotated[StoreChoice, typer.Option("--store", help="Graph backend.")]
PathOption = Annotated[
    Path | None,
    typer.Option("--path", help="Ladybug database file (default: cached per data folder and tasks)."),
]
UriOption = Annotated[str | None, typer.Option("--uri", help="Neo4j Bolt URI (default NEO4J_URI).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]


def fail(message: str) -> typer.Exit:
    """Print a clean one-line error (no traceback, secrets masked) and return the exit to raise."""
    from starrec.llm.redact import redact

    line = " | ".join(part.strip() for part in message.splitlines() if part.strip())
    typer.secho(f"error: {redact(line)}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


def load_training_view(data: Path, tasks: Path | None) -> tuple[Dataset, list]:
    """The dataset and the leakage-free view the graph is built from."""
    from starrec.data import load_dataset
    from starrec.data.tasks import read_tasks
    from starrec.tools.toolkit import training_view

    dataset = load_dataset(data)
    task_list = read_tasks(tasks) if tasks is not None else None
    return training_view(dataset, task_list), task_list or []


def open_store(store: StoreChoice, path: Path | None, uri: str | None, *, read_only: bool) -> GraphStore:
    from starrec.tools.store import GraphStoreError

    try:
        if store is StoreChoice.ladybug:
            from starrec.tools.ladybug_store import LadybugStore

            if path is None:
                raise fail("--path is required with --store ladybug")
            return LadybugStore(path, read_only=read_only)
        from starrec.config import get_settings
        from starrec.tools.neo4j_store import Neo4jStore

        settings = get_settings()
        if uri is not None:
            settings.neo4j_uri = uri
        return Neo4jStore.from_settings(settings)
    except GraphStoreError as error:
        raise fail(str(error)) from error


def print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, ensure_ascii=False, default=str) + "\n")


@graph_app.command("build")
def graph_build(
    data: DataOption,
    tasks: TasksOption = None,
    store: StoreOption = StoreChoice.ladybug,
    path: PathOption = None,
    uri: UriOption = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing graph.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Build the graph from DATA's interactions (held-out ground truth left out with --tasks)."""
    from starrec.tools.store import GraphStoreError, GraphTables
    from starrec.tools.toolkit import build_ladybug_graph, default_graph_path, graph_fingerprint

    view, task_list = load_training_view(data, tasks)
    fingerprint = graph_fingerprint(data, task_list or None)
    try:
        if store is StoreChoice.ladybug:
            path = path or default_graph_path(data, task_list or None)[0]
            graph, report = build_ladybug_graph(view, path, fingerprint=fingerprint, overwrite=overwrite)
        else:
            graph = open_store(store, None, uri, read_only=False)
            if graph.counts()["users"] and not overwrite:
                raise GraphStoreError(
                    f"{graph.location} already holds a graph; pass --overwrite to replace it"
                )
            graph.clear()
            report = graph.load(GraphTables.from_dataset(view), show_progress=not as_json)
            graph.set_fingerprint(fingerprint)
        counts = graph.counts()
        graph.close()
    except GraphStoreError as error:
        raise fail(str(error)) from error
    summary = {"store": store.value, "location": graph.location, "hidden_tasks": len(task_list), **counts,
               "load_seconds": round(report["seconds"], 3)}  # fmt: skip
    if as_json:
        print_json(summary)
    else:
        typer.echo(" ".join(f"{key}={value}" for key, value in summary.items()))


@graph_app.command("export")
def graph_export(
    data: DataOption,
    out: Annotated[Path, typer.Option("--out", help="Folder for the CSV files.")],
    tasks: TasksOption = None,
    format: Annotated[ExportFormat, typer.Option("--format", help="Export format.")] = ExportFormat.neo4j_csv,
) -> None:
    """Write users/items/interactions CSVs for `neo4j-admin database import full`."""
    from starrec.tools.export import write_neo4j_admin_csv
    from starrec.tools.store import GraphTables
    from starrec.tools.toolkit import graph_fingerprint

    view, task_list = load_training_view(data, tasks)
    fingerprint = graph_fingerprint(data, task_list or None)
    files = write_neo4j_admin_csv(GraphTables.from_dataset(view), out, fingerprint)
    for file in files:
        typer.echo(str(file))


def _id_list(text: str | None) -> tuple[str, ...] | None:
    """Comma-separated ids, or @FILE with one id per line."""
    if text is None:
        return None
    if text.startswith("@"):
        source = Path(text[1:])
        if not source.is_file():
            raise typer.BadParameter(f"id list file {source} does not exist")
        return tuple(line.strip() for line in source.read_text(encoding="utf-8").splitlines() if line.strip())
    return tuple(part.strip() for part in text.split(",") if part.strip())


@evidence_app.command("build")
def evidence_build(
    data: DataOption,
    tasks: TasksOption = None,
    store: StoreOption = StoreChoice.ladybug,
    path: PathOption = None,
    uri: UriOption = None,
    llm: Annotated[
        str | None,
        typer.Option(help="Verbalise with this LLM (starrec.llm spec: local, openai:MODEL, scripted:FILE)."),
    ] = None,
    items: Annotated[str | None, typer.Option(help="Only these item ids (a,b,c or @file).")] = None,
    users: Annotated[str | None, typer.Option(help="Only these user ids (a,b,c or @file).")] = None,
    kinds: Annotated[str, typer.Option(help="item, user or item,user.")] = "item,user",
    k: Annotated[int, typer.Option(help="Neighbours per anchor.")] = 20,
    engine: Annotated[str, typer.Option(help="scipy (bulk) or cypher (one query per anchor).")] = "scipy",
    resume: Annotated[bool, typer.Option(help="Keep evidence already stored.")] = True,
    concurrency: Annotated[int | None, typer.Option(help="LLM requests in flight.")] = None,
    max_tokens: Annotated[int, typer.Option(help="Most tokens the LLM writes per anchor.")] = 256,
    as_json: JsonOption = False,
) -> None:
    """Compute, verbalise and store Item-CF evidence per item and User-CF evidence per user."""
    from dataclasses import asdict

    from starrec.config import get_settings
    from starrec.tools.evidence import EvidenceBuildConfig, build_evidence
    from starrec.tools.store import GraphStoreError

    kind_list = tuple(part.strip() for part in kinds.split(",") if part.strip())
    if not kind_list or any(kind not in ("item", "user") for kind in kind_list):
        raise typer.BadParameter(f"--kinds must list item and/or user, got {kinds!r}")
    if engine not in ("scipy", "cypher"):
        raise typer.BadParameter(f"--engine must be scipy or cypher, got {engine!r}")
    view, task_list = load_training_view(data, tasks)
    config = EvidenceBuildConfig(
        k=k, kinds=kind_list, items=_id_list(items), users=_id_list(users), resume=resume,
        engine=engine, noun=view.domain,  # type: ignore[arg-type]
    )  # fmt: skip
    verbaliser = None
    if llm is not None:
        from starrec.llm import make_chat_model
        from starrec.tools.llm_verbaliser import LLMVerbaliser, model_label

        model = make_chat_model(llm, max_tokens=max_tokens)
        settings = get_settings()
        cache = settings.cache_dir / "evidence-llm" / f"{model_label(model).replace('/', '_')}.jsonl"
        verbaliser = LLMVerbaliser(model, cache, concurrency=concurrency or settings.llm_concurrency)
    try:
        if store is StoreChoice.ladybug:
            graph = _ladybug_for_evidence(data, view, task_list, path)
        else:
            graph = open_store(store, None, uri, read_only=False)
        report = build_evidence(graph, config, verbaliser, show_progress=not as_json)
        graph.close()
    except (GraphStoreError, KeyError) as error:
        raise fail(str(error)) from error
    if store is StoreChoice.ladybug:
        from starrec.tools.toolkit import read_manifest, write_manifest

        manifest = read_manifest(Path(report.store)) or {"fingerprint": ""}
        manifest["evidence"] = {"verbaliser": report.verbaliser, "k": k, "anchors": report.anchors}
        write_manifest(Path(report.store), manifest)
    summary = {**report.as_dict(), "config": asdict(config)}
    if as_json:
        print_json(summary)
        return
    for kind, count in report.anchors.items():
        typer.echo(
            f"{kind}: {count} anchors ({report.skipped[kind]} already had evidence) in "
            f"{report.seconds[kind]:.1f} s = {report.per_second[kind]:.0f}/s"
        )
    if report.llm is not None:
        typer.echo("llm: " + " ".join(f"{key}={value}" for key, value in report.llm.items()))
    typer.echo(f"stored in {report.store} by {report.verbaliser}")


def _ladybug_for_evidence(data: Path, view: Dataset, task_list: list, path: Path | None) -> GraphStore:
    """The database to write evidence into, building the graph first when it does not exist."""
    from starrec.tools.ladybug_store import LadybugStore
    from starrec.tools.store import GraphStoreError
    from starrec.tools.toolkit import (
        build_ladybug_graph,
        default_graph_path,
        graph_fingerprint,
        manifest_is_complete,
        read_manifest,
    )

    if path is None:
        path, fingerprint = default_graph_path(data, task_list or None)
    else:
        fingerprint = graph_fingerprint(data, task_list or None)
    if path.exists():
        if not manifest_is_complete(read_manifest(path)):
            raise GraphStoreError(
                f"Ladybug database {path} has no complete manifest (its build was interrupted); rebuild it "
                f"with `starrec graph build --data {data} --path {path} --overwrite` or delete it"
            )
        return LadybugStore(path)
    store, _ = build_ladybug_graph(view, path, fingerprint=fingerprint)
    return store


def _cf_payload(kind: str, graph: GraphStore, anchor: str, k: int, similar_users: int) -> dict[str, Any]:
    """``{"query", "params", "rows", "evidence"}``: the live Cypher answer and the stored evidence."""
    if kind == "item":
        rows, trace = graph.item_cf(anchor, k)
    else:
        rows, trace = graph.user_cf(anchor, k, similar_users)
    stored, _ = graph.get_evidence(kind, anchor)  # type: ignore[arg-type]
    return {
        "query": trace.cypher,
        "params": trace.params,
        "rows": [{"item": item, "shared": shared} for item, shared in rows],
        "evidence": stored.evidence if stored is not None else None,
        "found": stored is not None,
        "seconds": round(trace.seconds, 6),
    }


def _print_cf(payload: dict[str, Any], title: str) -> None:
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.table import Table

    console = Console()
    console.print(Syntax(payload["query"], "cypher", word_wrap=True))
    console.print(f"params: {json.dumps(payload['params'], ensure_ascii=False)}")
    table = Table(title=f"{title}: {len(payload['rows'])} rows in {payload['seconds'] * 1000:.1f} ms")
    table.add_column("item")
    table.add_column("shared", justify="right")
    for row in payload["rows"]:
        table.add_row(str(row["item"]), str(row["shared"]))
    console.print(table)
    if not payload["found"]:
        console.print("evidence: (anchor not in graph)")
    else:
        console.print(f"evidence:\n{payload['evidence'] or '(none stored: run `starrec evidence build`)'}")


def _cypher_cf(
    kind: str,
    anchor: str,
    store: StoreChoice,
    path: Path | None,
    uri: str | None,
    k: int,
    users: int,
    as_json: bool,
) -> None:
    from starrec.tools.store import GraphStoreError

    graph = open_store(store, path, uri, read_only=True)
    try:
        payload = _cf_payload(kind, graph, anchor, k, users)
    except GraphStoreError as error:
        raise fail(str(error)) from error
    finally:
        graph.close()
    if as_json:
        print_json({key: payload[key] for key in ("query", "params", "rows", "evidence")})
    else:
        _print_cf(payload, f"{'Item' if kind == 'item' else 'User'}-CF {anchor}")


KOption = Annotated[int, typer.Option("--k", help="Rows to return.")]


@cypher_app.command("item-cf")
def cypher_item_cf(
    item_id: Annotated[str, typer.Argument(help="Anchor item id.")],
    store: StoreOption = StoreChoice.ladybug,
    path: PathOption = None,
    uri: UriOption = None,
    k: KOption = 10,
    as_json: JsonOption = False,
) -> None:
    """Run the Item-CF query for ITEM_ID: query, parameters, rows (shared desc, then id), stored evidence."""
    _cypher_cf("item", item_id, store, path, uri, k, 0, as_json)


@cypher_app.command("user-cf")
def cypher_user_cf(
    user_id: Annotated[str, typer.Argument(help="Anchor user id.")],
    store: StoreOption = StoreChoice.ladybug,
    path: PathOption = None,
    uri: UriOption = None,
    k: KOption = 10,
    users: Annotated[int, typer.Option(help="Similar users kept by stage 1.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """Run the User-CF query for USER_ID: items liked by the most similar users, with their counts."""
    _cypher_cf("user", user_id, store, path, uri, k, users, as_json)


@cypher_app.command("candidate-cf")
def cypher_candidate_cf(
    user_id: Annotated[str, typer.Argument(help="The user the candidates are for.")],
    candidates: Annotated[str, typer.Option(help="Candidate ids, comma-separated, or @FILE (one per line).")],
    store: StoreOption = StoreChoice.ladybug,
    path: PathOption = None,
    uri: UriOption = None,
    engine: Annotated[
        str, typer.Option(help="cypher: run the queries on the graph; index: the in-memory index.")
    ] = "cypher",
    as_json: JsonOption = False,
) -> None:
    """Score every candidate for USER_ID (candidate_cf): the three queries, their parameters, the scores."""
    from starrec.tools.candidate_cf import CandidateCF
    from starrec.tools.store import GraphStoreError

    ids = _id_list(candidates)
    if not ids:
        raise fail("--candidates is empty; give ids as a,b,c or @FILE")
    if engine not in ("cypher", "index"):
        raise fail(f"--engine must be cypher or index, got {engine!r}")
    graph = open_store(store, path, uri, read_only=True)
    try:
        result = CandidateCF(graph, engine=engine).score(user_id, ids)  # type: ignore[arg-type]
    except (GraphStoreError, ValueError) as error:
        raise fail(str(error)) from error
    finally:
        graph.close()
    if as_json:
        print_json(result.model_dump(mode="json"))
        return
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.table import Table

    console = Console()
    for trace in result.queries:
        console.print(f"[bold]{trace.name}[/bold] ({trace.engine}, {trace.row_count} rows, "
                      f"{trace.seconds * 1000:.1f} ms)")  # fmt: skip
        console.print(Syntax(trace.cypher, "cypher", word_wrap=True))
        console.print(f"params: {json.dumps(trace.params, ensure_ascii=False)}")
    anchors = ", ".join(result.anchors)
    table = Table(title=f"candidate_cf for user {user_id}: prior order (anchors, newest first: {anchors})")
    for column in ("rank", "item", "title", "item_cf", "co-chosen", "user_cf", "users"):
        table.add_column(column, justify="left" if column in ("item", "title") else "right")
    for rank, entry in enumerate(result.scores, start=1):
        table.add_row(str(rank), entry.id, entry.title, f"{entry.item_cf:.4f}", str(len(entry.co_chosen)),
                      str(entry.user_cf), str(entry.popularity))  # fmt: skip
    console.print(table)


def parse_param(text: str) -> tuple[str, Any]:
    """``name=value`` binds a string; ``name:=value`` binds JSON (numbers, lists, maps, null)."""
    if ":=" in text and text.index(":=") < text.index("=") + 1:
        name, _, raw = text.partition(":=")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError as error:
            raise typer.BadParameter(f"--param {text!r}: {raw!r} is not JSON ({error})") from error
    else:
        name, sep, value = text.partition("=")
        if not sep:
            raise typer.BadParameter(f"--param expects name=value or name:=json, got {text!r}")
    if not name.strip().isidentifier():
        raise typer.BadParameter(f"--param name {name!r} is not a valid parameter name")
    return name.strip(), value


@cypher_app.command("run")
def cypher_run(
    query: Annotated[str, typer.Argument(help="A read-only Cypher query; use $name parameters.")],
    param: Annotated[
        list[str] | None, typer.Option("--param", help="name=string or name:=json (repeatable).")
    ] = None,
    store: StoreOption = StoreChoice.ladybug,
    path: PathOption = None,
    uri: UriOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run one ad-hoc read-only statement (only read clauses pass) and print its rows."""
    from starrec.tools.adhoc import AdHocQueryError
    from starrec.tools.store import GraphStoreError, ensure_read_only

    params = dict(parse_param(text) for text in (param or []))
    try:
        ensure_read_only(query)
    except (PermissionError, AdHocQueryError) as error:
        raise fail(str(error)) from error
    graph = open_store(store, path, uri, read_only=True)
    try:
        rows, trace = graph.run_ad_hoc(query, params)
    except (GraphStoreError, PermissionError, AdHocQueryError) as error:
        raise fail(str(error)) from error
    finally:
        graph.close()
    if as_json:
        print_json({"query": trace.cypher, "params": params, "rows": rows})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(rows)} rows in {trace.seconds * 1000:.1f} ms")
    columns = list(rows[0]) if rows else []
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(json.dumps(row[column], ensure_ascii=False, default=str) for column in columns))
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the top-level app."""
    app.add_typer(graph_app, name="graph")
    app.add_typer(evidence_app, name="evidence")
    app.add_typer(cypher_app, name="cypher")
