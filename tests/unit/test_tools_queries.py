"""Cypher files: one loader, every file loads, ad-hoc queries are read-only, CLI params parse."""

from __future__ import annotations

import pytest
import typer

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
    ],
)
def test_writes_are_rejected(query: str) -> None:
    with pytest.raises(PermissionError, match="read-only"):
        ensure_read_only(query)


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
