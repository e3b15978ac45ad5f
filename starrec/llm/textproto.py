"""The text protocols shared by every model that cannot do native tool calling or structured output.

This module is THE single implementation of:

* the tool-call syntax ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (Hermes/Qwen style,
  so TRL's tool handling and vLLM's ``hermes`` parser read it) and ``<tool_response>...</tool_response>``;
* tolerant JSON extraction from model text (code fences, prose, trailing commas, single quotes,
  Python literals, unquoted keys, missing commas, truncation), reporting every repair it made;
* pulling candidate ids out of free text in order.

The MARS agents (text protocol), the local and scripted chat models, the STAR serialiser, the
reward functions and the STAR serving loop all use these functions; do not re-implement them.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
TOOL_RESPONSE_OPEN = "<tool_response>"
TOOL_RESPONSE_CLOSE = "</tool_response>"

_TOOL_CALL_PATTERN = re.compile(r"<tool_call>(.*?)(</tool_call>|(?=<tool_call>)|\Z)", re.DOTALL)


# ---------------------------------------------------------------------------------------------
# Tool calls
# ---------------------------------------------------------------------------------------------


def format_tool_call(name: str, arguments: Mapping[str, Any] | None = None) -> str:
    """``<tool_call>{"name": name, "arguments": {...}}</tool_call>`` with compact, key-ordered JSON."""
    if not name:
        raise ValueError("format_tool_call needs a non-empty tool name.")
    body = json.dumps({"name": name, "arguments": dict(arguments or {})}, ensure_ascii=False)
    return f"{TOOL_CALL_OPEN}{body}{TOOL_CALL_CLOSE}"


def format_tool_response(content: str | Mapping[str, Any] | Sequence[Any]) -> str:
    """``<tool_response>...</tool_response>``; non-string content is written as JSON."""
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    return f"{TOOL_RESPONSE_OPEN}{text}{TOOL_RESPONSE_CLOSE}"


@dataclass(frozen=True)
class ParsedToolCall:
    """One ``<tool_call>`` found in model text. ``error`` is set (and ``name``/``arguments`` are best
    effort) when the body is not a valid call."""

    name: str
    arguments: dict[str, Any]
    raw: str = field(repr=False)
    error: str | None = None
    closed: bool = True
    start: int = 0
    end: int = 0
    repairs: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None


def _tool_call_from_body(
    body: str, repair: bool, tool_parameters: Mapping[str, Sequence[str]] | None = None
) -> tuple[str, dict[str, Any], str | None, tuple[str, ...]]:
    """(name, arguments, error, repairs) for the JSON body of one ``<tool_call>``."""
    stripped = body.strip()
    if not stripped:
        return "", {}, "empty <tool_call> body", ()
    repairs: tuple[str, ...] = ()
    try:
        payload = json.loads(stripped)
    except json.JSONDecodeError as exc:
        if not repair:
            return "", {}, f"<tool_call> body is not valid JSON: {exc}", ()
        try:
            extraction = extract_json_with_repairs(stripped, expect=dict)
        except JSONExtractionError as repair_error:
            return "", {}, f"<tool_call> body is not valid JSON even after repair: {repair_error}", ()
        payload, repairs = extraction.value, extraction.repairs
    if not isinstance(payload, dict):
        return "", {}, f"<tool_call> body must be a JSON object, got {type(payload).__name__}", repairs
    name = payload.get("name")
    if not isinstance(name, str) or not name:
        return "", {}, '<tool_call> body has no string "name"', repairs
    arguments = payload.get("arguments", payload.get("parameters"))
    if isinstance(arguments, str) and repair:
        try:
            arguments = json.loads(arguments)
            repairs = (*repairs, "arguments_as_string")
        except json.JSONDecodeError:
            pass
    if arguments is None and repair:
        arguments, repairs = {}, (*repairs, "missing_arguments")
    parameters = (tool_parameters or {}).get(name) or ()
    if repair and parameters and isinstance(arguments, str | int | float):
        # {"name": "item_cf", "arguments": 50}: small models pass the lone value; bind it to the first
        # parameter of the tool's signature.
        arguments, repairs = {parameters[0]: arguments}, (*repairs, "scalar_arguments")
    if not isinstance(arguments, dict):
        return name, {}, f'<tool_call> "{name}" needs an "arguments" object', repairs
    return name, arguments, None, repairs


def parse_tool_calls(
    text: str, *, repair: bool = False, tool_parameters: Mapping[str, Sequence[str]] | None = None
) -> list[ParsedToolCall]:
    """Every ``<tool_call>`` in ``text``, in order.

    A call whose closing tag is missing (generation stopped at the ``</tool_call>`` stop string, or
    the next ``<tool_call>`` starts) is still parsed, with ``closed=False``. Bodies must be strict JSON
    unless ``repair=True``, which runs :func:`extract_json_with_repairs` on them and records the repairs;
    ``tool_parameters`` (tool name -> parameter names, required first) then also lets a scalar
    ``"arguments"`` value bind to the tool's first parameter.
    """
    calls: list[ParsedToolCall] = []
    for match in _TOOL_CALL_PATTERN.finditer(text):
        name, arguments, error, repairs = _tool_call_from_body(match.group(1), repair, tool_parameters)
        calls.append(
            ParsedToolCall(
                name=name,
                arguments=arguments,
                raw=match.group(0),
                error=error,
                closed=match.group(2) == TOOL_CALL_CLOSE,
                start=match.start(),
                end=match.end(),
                repairs=repairs,
            )
        )
    return calls


def strip_tool_calls(text: str) -> str:
    """``text`` without its ``<tool_call>`` blocks (the prose part of an answer)."""
    return _TOOL_CALL_PATTERN.sub("", text).strip()


def describe_tools(tools: Iterable[Mapping[str, Any]]) -> str:
    """A system-prompt section that teaches a model the text tool-call protocol.

    ``tools`` are OpenAI-format tool dicts (``{"type": "function", "function": {...}}``) or bare
    function dicts (``{"name", "description", "parameters"}``).
    """
    functions = [tool.get("function", tool) for tool in tools]
    if not functions:
        raise ValueError("describe_tools needs at least one tool.")
    signatures = "\n".join(json.dumps(function, ensure_ascii=False) for function in functions)
    example = format_tool_call(functions[0]["name"], _example_arguments(functions[0]))
    return (
        "You can call tools to gather evidence. The tools are described by these JSON signatures:\n"
        f"<tools>\n{signatures}\n</tools>\n"
        "To call a tool, write a line like the example below (a JSON object with the tool name and its "
        "arguments, inside tool_call tags), then stop; the result comes back inside tool_response tags.\n"
        f"Example:\n{example}\n"
        "When you have enough evidence, answer without calling a tool."
    )


def _example_arguments(function: Mapping[str, Any]) -> dict[str, Any]:
    properties = function.get("parameters", {}).get("properties", {})
    placeholders = {"integer": 10, "number": 1.0, "boolean": True, "array": [], "object": {}}
    return {
        name: placeholders.get(spec.get("type", "string"), "...") if isinstance(spec, dict) else "..."
        for name, spec in properties.items()
    }


# ---------------------------------------------------------------------------------------------
# Tolerant JSON extraction
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Candidate ids in free text
# ---------------------------------------------------------------------------------------------

_ID_BOUNDARY = r"[A-Za-z0-9_\-]"
_ENUMERATOR_AFTER = re.compile(r"[.)][ \t]+")


def extract_ids(text: str, allowed: Iterable[str], *, skip_enumerators: bool = True) -> list[str]:
    """The ``allowed`` ids mentioned in ``text``, each once, in order of first mention.

    Ids match whole tokens only (``12`` is not found inside ``123``). With ``skip_enumerators``, a
    numeric list marker such as the ``1.`` in ``"1. 242"`` or ``"1) Star Wars"`` at the start of a line
    (or after ``,``/``;`` when an id follows it) is not taken for an id, so numeric item ids such as
    MovieLens's work.
    """
    vocabulary = sorted(
        {candidate.strip() for candidate in allowed if candidate and candidate.strip()}, key=len, reverse=True
    )
    if not vocabulary or not text:
        return []
    alternatives = "|".join(re.escape(candidate) for candidate in vocabulary)
    pattern = re.compile(rf"(?<!{_ID_BOUNDARY})(?:{alternatives})(?!{_ID_BOUNDARY})")
    matches = list(pattern.finditer(text))
    found: dict[str, None] = {}
    for index, match in enumerate(matches):
        if skip_enumerators and _is_enumerator(
            text, match, matches[index + 1] if index + 1 < len(matches) else None
        ):
            continue
        found.setdefault(match.group(0), None)
    return list(found)


def _is_enumerator(text: str, match: re.Match[str], following: re.Match[str] | None) -> bool:
    if not match.group(0).isdigit():
        return False
    after = _ENUMERATOR_AFTER.match(text, match.end())
    if after is None:
        return False
    line_start = text.rfind("\n", 0, match.start()) + 1
    prefix = text[line_start : match.start()].rstrip(" \t")
    if not prefix or prefix.endswith(">"):
        return True
    id_follows = following is not None and following.start() == after.end()
    return prefix[-1] in ",;:([{" and id_follows
