"""Tolerant JSON extraction from model text, reporting every repair it made.

Code fences, prose around the value, trailing commas, single quotes, Python literals, unquoted
keys, missing commas and truncation are repaired; the names of the fixes come back with the value
so callers can count them. Every JSON answer of a model in starrec goes through here.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any


class JSONExtractionError(ValueError):
    """No JSON value could be recovered from a model answer."""

    def __init__(self, message: str, text: str) -> None:
        snippet = text if len(text) <= 300 else text[:300] + "…"
        super().__init__(f"{message}. Model text was: {snippet!r}")
        self.text = text


@dataclass(frozen=True)
class JSONExtraction:
    """A JSON value recovered from text, with the repairs that were needed (empty = clean JSON)."""

    value: Any
    repairs: tuple[str, ...]
    source: str = field(repr=False)


_FENCE_PATTERN = re.compile(
    r"```[ \t]*(?:json|JSON|javascript|js|python)?[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL
)
_BARE_WORDS = {
    "true": "true",
    "false": "false",
    "null": "null",
    "True": "true",
    "False": "false",
    "None": "null",
}
_CLOSERS = {"{": "}", "[": "]"}
_CONTROL_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _balanced_span(text: str, start: int) -> tuple[str, bool]:
    """The bracketed span opening at ``start`` (string-aware) and whether it was closed."""
    stack: list[str] = []
    quote: str | None = None
    escaped = False
    for index in range(start, len(text)):
        char = text[index]
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
            continue
        if char in "\"'":
            quote = char
        elif char in _CLOSERS:
            stack.append(_CLOSERS[char])
        elif char in "}]":
            if not stack or stack[-1] != char:
                return text[start:index], False
            stack.pop()
            if not stack:
                return text[start : index + 1], True
    return text[start:], False


def _candidate_sources(text: str) -> list[tuple[str, tuple[str, ...]]]:
    """Substrings that may hold the JSON value, most specific first, each with its implied repairs."""
    candidates: list[tuple[str, tuple[str, ...]]] = []
    stripped = text.strip()
    for fence in _FENCE_PATTERN.finditer(text):
        body = fence.group(1).strip()
        if body:
            candidates.append((body, ("code_fence",)))
    candidates.append((stripped, ()))
    opening_positions = [index for index, char in enumerate(text) if char in "{["][:20]
    for position in opening_positions:
        span, closed = _balanced_span(text, position)
        repairs = () if span.strip() == stripped else ("surrounding_text",)
        candidates.append((span, repairs if closed else (*repairs, "truncated")))
    return candidates


def _matches(value: Any, expect: type | None) -> bool:
    return expect is None or isinstance(value, expect)


def extract_json_with_repairs(text: str, *, expect: type | None = None) -> JSONExtraction:
    """Recover the first JSON value (of type ``expect`` when given) from a model answer.

    Strict parses of every candidate are tried before any repair, so clean JSON is never "repaired".
    Raises :class:`JSONExtractionError` when nothing parses.
    """
    if not text or not text.strip():
        raise JSONExtractionError("Empty model answer, expected JSON", text or "")
    candidates = _candidate_sources(text)
    for source, repairs in candidates:
        if "truncated" in repairs:
            continue
        try:
            value = json.loads(source)
        except json.JSONDecodeError:
            continue
        if _matches(value, expect):
            return JSONExtraction(value, repairs, source)
    last_error = "no JSON object or array found" if not re.search(r"[\[{]", text) else "unparseable"
    for source, repairs in candidates:
        try:
            repaired, fixes = _repair_json_text(source)
            value = json.loads(repaired)
        except (ValueError, json.JSONDecodeError) as exc:
            if source.lstrip()[:1] in ("{", "["):
                last_error = str(exc)
            continue
        if _matches(value, expect):
            all_repairs = tuple(dict.fromkeys((*repairs, *fixes)))
            return JSONExtraction(value, all_repairs or ("reformatted",), source)
    literal = _python_literal(text)
    if literal is not None and _matches(literal, expect):
        return JSONExtraction(literal, ("python_literal",), text)
    wanted = f"a JSON {'object' if expect is dict else 'array' if expect is list else 'value'}"
    raise JSONExtractionError(f"Could not recover {wanted} ({last_error})", text)


def extract_json(text: str, *, expect: type | None = None) -> Any:
    """The first JSON value in a model answer, repaired if needed (see :func:`extract_json_with_repairs`)."""
    return extract_json_with_repairs(text, expect=expect).value


def _python_literal(text: str) -> Any:
    """A Python dict/list literal (``ast.literal_eval`` only evaluates literals, never code)."""
    start = min((index for index in (text.find("{"), text.find("[")) if index >= 0), default=-1)
    if start < 0:
        return None
    span, closed = _balanced_span(text, start)
    if not closed:
        return None
    try:
        value = ast.literal_eval(span)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, dict | list) else None


_NUMBER_PATTERN = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_WORD_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")


class _JSONRepairer:
    """Re-emits JSON-like text as strict JSON, recording each kind of fix.

    Handles single-quoted strings, Python literals, unquoted keys, trailing and missing commas,
    ``//`` comments, and truncation (unterminated strings, open brackets, dangling keys).
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.position = 0
        self.out: list[str] = []
        self.fixes: list[str] = []
        self.stack: list[str] = []
        # What the last emitted token was: "open", "comma", "colon", "key", "value".
        self.last = "start"

    def fix(self, name: str) -> None:
        if name not in self.fixes:
            self.fixes.append(name)

    def run(self) -> tuple[str, list[str]]:
        while self.position < len(self.text):
            char = self.text[self.position]
            if char.isspace():
                self.position += 1
            elif self.text.startswith("//", self.position):
                self._skip_comment()
            elif char in "{[":
                self._before_value()
                self._emit(char, "open")
                self.stack.append(_CLOSERS[char])
                self.position += 1
            elif char in "}]":
                self._close(char)
            elif char == ",":
                if self.last in ("comma", "open", "start"):
                    self.fix("extra_commas")
                else:
                    self._emit(",", "comma")
                self.position += 1
            elif char == ":":
                if self.last != "key":
                    raise ValueError(f"unexpected ':' at offset {self.position}")
                self._emit(":", "colon")
                self.position += 1
            elif char in "\"'":
                self._string(char)
            else:
                self._scalar()
            if not self.stack and self.last == "value":
                break
        self._finish()
        return "".join(self.out), self.fixes

    def _emit(self, token: str, kind: str) -> None:
        self.out.append(token)
        self.last = kind

    def _in_object_key_position(self) -> bool:
        return bool(self.stack) and self.stack[-1] == "}" and self.last in ("open", "comma")

    def _before_value(self) -> None:
        if self.last in ("value", "key") and self.stack:
            if self.last == "key":
                raise ValueError(f"missing ':' after a key at offset {self.position}")
            self.fix("missing_commas")
            self._emit(",", "comma")

    def _skip_comment(self) -> None:
        end = self.text.find("\n", self.position)
        self.position = len(self.text) if end < 0 else end
        self.fix("comments")

    def _close(self, char: str) -> None:
        if not self.stack or self.stack[-1] != char:
            raise ValueError(f"unbalanced {char!r} at offset {self.position}")
        if self.last == "comma":
            self.out.pop()
            self.fix("trailing_commas")
        elif self.last in ("key", "colon"):
            self._drop_dangling_key()
        self.stack.pop()
        self._emit(char, "value")
        self.position += 1

    def _drop_dangling_key(self) -> None:
        while self.out and self.out[-1] not in ("{", ","):
            self.out.pop()
        if self.out and self.out[-1] == ",":
            self.out.pop()
        self.fix("dangling_key")

    def _string(self, quote: str) -> None:
        end = self.position + 1
        chars: list[str] = []
        closed = False
        while end < len(self.text):
            char = self.text[end]
            if char == "\\" and end + 1 < len(self.text):
                following = self.text[end + 1]
                chars.append("'" if following == "'" else char + following)
                end += 2
                continue
            if char == quote:
                closed = True
                break
            if char == '"':
                chars.append('\\"')  # only reachable inside single-quoted strings
            elif char in _CONTROL_ESCAPES:
                chars.append(_CONTROL_ESCAPES[char])
            else:
                chars.append(char)
            end += 1
        if quote == "'":
            self.fix("single_quotes")
        if not closed:
            self.fix("truncated")
        token = '"' + "".join(chars) + '"'
        self.position = end + 1
        self._place_string(token)

    def _comma_if_object_continues(self) -> None:
        """``{"a": 1 "b": 2}``: a key right after a value means a comma was forgotten."""
        if self.stack and self.stack[-1] == "}" and self.last == "value":
            self.fix("missing_commas")
            self._emit(",", "comma")

    def _place_string(self, token: str) -> None:
        self._comma_if_object_continues()
        if self._in_object_key_position():
            self._emit(token, "key")
        else:
            self._before_value()
            if self.stack and self.stack[-1] == "}" and self.last != "colon":
                raise ValueError(f"object value without a key at offset {self.position}")
            self._emit(token, "value")

    def _scalar(self) -> None:
        number = _NUMBER_PATTERN.match(self.text, self.position)
        word = _WORD_PATTERN.match(self.text, self.position)
        if word and word.group(0) not in _BARE_WORDS:
            self._comma_if_object_continues()
        if word and self._in_object_key_position():
            self.position = word.end()
            self.fix("unquoted_keys")
            self._emit(json.dumps(word.group(0)), "key")
            return
        if number:
            self._before_value()
            self.position = number.end()
            strict = _strict_number(number.group(0))
            if strict != number.group(0):
                self.fix("numbers")
            self._emit(strict, "value")
            return
        if word and word.group(0) in _BARE_WORDS:
            literal = word.group(0)
            if literal != _BARE_WORDS[literal]:
                self.fix("python_literals")
            self._before_value()
            self.position = word.end()
            self._emit(_BARE_WORDS[literal], "value")
            return
        raise ValueError(f"unexpected text {self.text[self.position : self.position + 20]!r}")

    def _finish(self) -> None:
        if not self.stack:
            return
        self.fix("truncated")
        if self.last == "comma":
            self.out.pop()
        elif self.last in ("key", "colon"):
            self._drop_dangling_key()
        while self.stack:
            self.out.append(self.stack.pop())


def _strict_number(text: str) -> str:
    """``1.``/``.5``/``01`` are not JSON numbers; rewrite them."""
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return repr(float(text))
    return text


def _repair_json_text(text: str) -> tuple[str, list[str]]:
    """Strict JSON text for a JSON-like ``text`` plus the names of the fixes applied."""
    repaired, fixes = _JSONRepairer(text).run()
    if not repaired:
        raise ValueError("nothing JSON-like")
    return repaired, fixes
