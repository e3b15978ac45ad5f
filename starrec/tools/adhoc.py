"""The guard in front of ``starrec cypher run``: one read-only statement, checked by an allow-list.

A deny-list of write clauses misses whatever it forgot (``CHECKPOINT`` made a read-only Ladybug
file refuse all writes until restart), so the query is tokenised instead and every keyword is
checked against :data:`READ_KEYWORDS`. The lexer relies on one fact of Cypher's grammar: two
operands never stand side by side, so a word right after an operand (a name, a literal, a
parameter, a closing bracket) is a keyword, and only the listed ones pass. Words where an operand
belongs are names (variables, functions, map keys), unless they are one of :data:`CLAUSE_KEYWORDS`
that are not on the list. ``CALL`` is refused outright: no procedure is needed to inspect the graph.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

READ_KEYWORDS = frozenset(
    {
        # clauses
        "MATCH", "OPTIONAL", "WHERE", "WITH", "UNWIND", "RETURN", "ORDER", "BY", "SKIP", "LIMIT",
        # what the clauses need
        "AS", "DISTINCT", "AND", "OR", "XOR", "NOT", "IN", "IS", "NULL", "TRUE", "FALSE",
        "ASC", "ASCENDING", "DESC", "DESCENDING", "CASE", "WHEN", "THEN", "ELSE", "END",
        "STARTS", "ENDS", "CONTAINS",
    }
)  # fmt: skip
"""Every keyword an ad-hoc query may use; functions (``count``, ``collect``, ``size``…) are names."""

CLAUSE_KEYWORDS = frozenset(
    {
        "CREATE", "MERGE", "SET", "DELETE", "DETACH", "REMOVE", "DROP", "ALTER", "RENAME", "COPY",
        "LOAD", "INSTALL", "UNINSTALL", "ATTACH", "USE", "IMPORT", "EXPORT", "FOREACH", "CALL",
        "YIELD", "CHECKPOINT", "BEGIN", "COMMIT", "ROLLBACK", "TRANSACTION", "UNION", "EXPLAIN",
        "PROFILE", "SHOW", "GRANT", "REVOKE", "DENY", "START", "STOP", "TERMINATE", "UPDATE",
        "MACRO", "SEQUENCE", "TABLE", "INDEX", "CONSTRAINT", "DATABASE", "EXTENSION", "FINISH",
    }
)  # fmt: skip
"""Clause keywords refused even where a name could stand (a second line of defence)."""

# Keywords after which an operand is complete, so the next word must be a keyword again.
_ENDS_OPERAND = frozenset({"NULL", "TRUE", "FALSE", "END", "ASC", "ASCENDING", "DESC", "DESCENDING"})
# `RETURN *` / `WITH DISTINCT *` project everything; elsewhere `*` multiplies or repeats a pattern.
_STAR_PROJECTS_AFTER = frozenset({"RETURN", "WITH", "DISTINCT"})

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>//[^\n]*|/\*.*?\*/)
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<quoted>`(?:[^`]|``)*`)
  | (?P<param>\$(?:\w+|`(?:[^`]|``)*`))
  | (?P<number>0[xX][0-9a-fA-F]+|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<word>[^\W\d]\w*)
  | (?P<open>/\*|['"`])
  | (?P<punct>.)
    """,
    re.VERBOSE | re.DOTALL,
)


class AdHocQueryError(ValueError):
    """An ad-hoc query that is empty, unterminated or holds more than one statement."""


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    text: str
    line: int
    start: int


def _tokens(query: str) -> list[_Token]:
    tokens: list[_Token] = []
    line = 1
    for match in _TOKEN.finditer(query):
        kind, text = match.lastgroup or "punct", match.group()
        if kind == "open":
            what = "comment" if text == "/*" else "identifier" if text == "`" else "string literal"
            raise AdHocQueryError(f"line {line}: unterminated {what} starting with {text}; close it")
        if kind not in {"space", "comment"}:
            tokens.append(_Token(kind, text, line, match.start()))
        line += text.count("\n")
    return tokens


def _refuse(token: _Token) -> PermissionError:
    return PermissionError(
        f"line {token.line}: refusing {token.text.upper()!r}: `starrec cypher run` is read-only and "
        f"allows only MATCH, OPTIONAL MATCH, WHERE, WITH, UNWIND, RETURN, ORDER BY, SKIP and LIMIT"
    )


def ensure_read_only(query: str) -> str:
    """Check one ad-hoc query; returns it without a trailing ``;``.

    Raises :class:`PermissionError` naming the first keyword not on the allow-list, and
    :class:`AdHocQueryError` for an empty query or several statements.
    """
    tokens = _tokens(query)
    if tokens and tokens[-1].text == ";":
        query = query[: tokens.pop().start]
    separators = [token for token in tokens if token.text == ";"]
    if separators:
        raise AdHocQueryError(
            f"line {separators[0].line}: {len(separators) + 1} statements separated by ';'; "
            "`starrec cypher run` takes one statement per call"
        )
    if not tokens:
        raise AdHocQueryError("empty query; pass one statement such as 'MATCH (n) RETURN n LIMIT 5'")
    after_operand = True  # the first word starts a clause
    previous: _Token | None = None
    for index, token in enumerate(tokens):
        following = tokens[index + 1].text if index + 1 < len(tokens) else ""
        if token.kind == "word":
            upper = token.text.upper()
            if previous is not None and previous.text in {".", ":"}:
                after_operand = True  # property, label or relationship type
            elif after_operand or upper in READ_KEYWORDS:
                if upper not in READ_KEYWORDS:
                    raise _refuse(token)
                after_operand = upper in _ENDS_OPERAND
            elif upper in CLAUSE_KEYWORDS and following != ":":
                raise _refuse(token)
            else:
                after_operand = True  # a variable, a function or a map key
        elif token.text == "*":
            after_operand = previous is not None and previous.text.upper() in _STAR_PROJECTS_AFTER
        else:
            after_operand = token.kind != "punct" or token.text in {")", "]", "}"}
        previous = token
    return query.strip()
