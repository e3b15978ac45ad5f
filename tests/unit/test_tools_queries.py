"""Cypher files: one loader, every file loads, ad-hoc queries are read-only, CLI params parse."""

from __future__ import annotations

import pytest
import typer

from starrec.tools.adhoc import AdHocQueryError
from starrec.tools.commands import parse_param
from starrec.tools.queries import UnknownQueryError, load_query, load_statements, query_names
from starrec.tools.store import ensure_read_only


def test_every_packaged_file_loads_without_comments() -> None:
    names = query_names()
    assert {"item_cf", "user_cf", "item_evidence_get", "item_evidence_set", "ladybug_schema"} <= set(names)
    for name in names:
        for statement in load_statements(name):
            assert statement and not statement.lstrip().startswith("//")


def test_cf_queries_are_parameterised() -> None:
    item_cf = load_query("item_cf")
    assert "$id" in item_cf and "$k" in item_cf
    assert "ORDER BY shared DESC, item" in item_cf
    assert "$users" in load_query("user_cf")


def test_multi_statement_files_split_and_single_loader_refuses_them() -> None:
    assert len(load_statements("ladybug_schema")) == 3
    with pytest.raises(ValueError, match="3 statements"):
        load_query("ladybug_schema")


def test_unknown_query_names_the_folder() -> None:
    with pytest.raises(UnknownQueryError, match=r"no Cypher file nope\.cypher"):
        load_query("nope")


@pytest.mark.parametrize(
    "query",
    [
        "MATCH (i:Item) SET i.title = 'x'",
        "create (n:Item {id: 'a'})",
        "MATCH (n) DETACH DELETE n",
        "MERGE (u:User {id: $id})",
        "COPY Item FROM 'x.csv'",
        "CALL db.clearQueryCaches()",
        "DROP TABLE Item",
        "CHECKPOINT",
        "checkpoint;",
        "MATCH (n) RETURN n LIMIT 1 CHECKPOINT",
        "LOAD FROM 'ratings.csv' RETURN *",
        "EXPLAIN MATCH (n) RETURN n",
        "BEGIN TRANSACTION",
        "MATCH (n) WITH n CALL { MATCH (m) RETURN m } RETURN n",
        "MATCH (n) RETURN n UNION MATCH (m) RETURN m",
        "MATCH (n) WITH n ORDER BY n.id DESC FOREACH (x IN [1] | SET n.a = x)",
        "RETURN * INSTALL json",
        "MATCH (n) RETURN n\n// a comment\nATTACH 'other.lbdb' AS o",
    ],
)
def test_writes_are_rejected(query: str) -> None:
    with pytest.raises(PermissionError, match="read-only"):
        ensure_read_only(query)


def test_refusal_names_the_clause_and_line() -> None:
    with pytest.raises(PermissionError, match=r"^line 2: refusing 'CHECKPOINT'"):
        ensure_read_only("MATCH (n) RETURN n\ncheckpoint")


@pytest.mark.parametrize(
    "query",
    [
        "MATCH (i:Item {id: $id}) RETURN i.title AS title, i.facets AS facets",
        "OPTIONAL MATCH (u:User)-[r:INTERACTED]->(i:Item) WHERE r.rating IS NOT NULL AND NOT i.id IN $ids "
        "WITH i, count(*) AS n, collect(DISTINCT u.id)[0..3] AS some "
        "ORDER BY n DESC, i.id ASC SKIP 1 LIMIT 5 "
        "RETURN i.id AS id, n, CASE WHEN n > 1 THEN 'many' ELSE 'one' END AS kind",
        "UNWIND [1, 2.5, -3e2] AS x RETURN x * 2 AS y ORDER BY y",
        "MATCH (i:Item) WHERE i.title STARTS WITH 'S' OR i.title ENDS WITH 'x' XOR i.title CONTAINS $t "
        "RETURN i {.id, .title}, size(i.facets) AS facets, i.set AS `set`",
        "MATCH p = (a:User)-[:INTERACTED*1..2]-(b:User) RETURN length(p) AS hops, {set: 1, limit: 2} AS m",
        "MATCH (n) RETURN * ORDER BY n.id LIMIT 3",
        "MATCH (n:Item) RETURN n.id = 'a' = TRUE AS t, NULL AS nothing, [x IN [1, 2] WHERE x > 1 | x] AS xs",
    ],
)
def test_read_queries_pass(query: str) -> None:
    assert ensure_read_only(query) == query


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("MATCH (n) RETURN n; MATCH (m) DETACH DELETE m", r"line 1: 2 statements.*one statement per call"),
        ("MATCH (n) RETURN n;\nMATCH (m) RETURN m;", r"line 1: 2 statements"),
        ("", "empty query"),
        ("  ; ", "empty query"),
        ("MATCH (n) WHERE n.id = 'open RETURN n", "line 1: unterminated string literal"),
        ("MATCH (n) /* never closed RETURN n", "unterminated comment"),
    ],
)
def test_one_statement_per_call(query: str, message: str) -> None:
    with pytest.raises(AdHocQueryError, match=message):
        ensure_read_only(query)


def test_one_trailing_semicolon_is_dropped_and_semicolons_in_data_are_not_separators() -> None:
    assert ensure_read_only("MATCH (n) RETURN n ;  // done; really\n") == "MATCH (n) RETURN n"
    query = "MATCH (i:Item) WHERE i.title = 'a;b' RETURN i.id // x;y"
    assert ensure_read_only(query) == query


def test_write_keywords_inside_strings_and_comments_are_data() -> None:
    ensure_read_only("MATCH (i:Item {id: 'CREATE (x)'}) RETURN i.title AS t // SET nothing")
    ensure_read_only('MATCH (i:Item) WHERE i.title = "DELETE me" RETURN i.id')


def test_param_parsing_strings_and_json() -> None:
    assert parse_param("id=1") == ("id", "1")
    assert parse_param("k:=10") == ("k", 10)
    assert parse_param('ids:=["a", "b"]') == ("ids", ["a", "b"])
    assert parse_param("title=a=b") == ("title", "a=b")
    with pytest.raises(typer.BadParameter):
        parse_param("novalue")
    with pytest.raises(typer.BadParameter):
        parse_param("k:=[oops")
