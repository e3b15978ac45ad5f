"""The one loader for the Cypher files in ``starrec/tools/cypher`` (also ``neo4j/queries``).

Queries are data, not code: every id or user text reaches a backend as a parameter, never by
string building. Leading ``//`` lines document a file and are stripped before sending, so the
text in a :class:`~starrec.tools.base.QueryTrace` is exactly what the backend ran.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

CYPHER_PACKAGE = "starrec.tools"
CYPHER_FOLDER = "cypher"


class UnknownQueryError(KeyError):
    """A query name with no ``.cypher`` file behind it."""


def query_names() -> list[str]:
    """Names of every packaged query file (without the ``.cypher`` suffix)."""
    folder = resources.files(CYPHER_PACKAGE) / CYPHER_FOLDER
    return sorted(
        entry.name.removesuffix(".cypher") for entry in folder.iterdir() if entry.name.endswith(".cypher")
    )


@cache
def _raw_text(name: str) -> str:
    path = resources.files(CYPHER_PACKAGE) / CYPHER_FOLDER / f"{name}.cypher"
    if not path.is_file():
        raise UnknownQueryError(
            f"no Cypher file {name}.cypher in starrec/tools/cypher; known: {query_names()}"
        )
    return path.read_text(encoding="utf-8")


def _strip_comments(text: str) -> str:
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("//")]
    return "\n".join(lines).strip()


def load_query(name: str) -> str:
    """The text of one single-statement query file, comments removed."""
    statements = load_statements(name)
    if len(statements) != 1:
        raise ValueError(f"{name}.cypher holds {len(statements)} statements; use load_statements()")
    return statements[0]


def load_statements(name: str) -> list[str]:
    """The statements of a multi-statement file (DDL, bulk loads), split on ``;`` at line ends."""
    body = _strip_comments(_raw_text(name))
    parts = [part.strip() for part in body.split(";\n")]
    return [part.removesuffix(";").strip() for part in parts if part.strip()]
