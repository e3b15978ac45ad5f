"""Candidate ids in free text: which of the allowed ids a model mentioned, in order.

Used where a model's ranking is not valid JSON (the ranker's fallback, a ``<recommend>`` cut off
by the token budget); whole tokens only, and list markers such as ``1.`` are not taken for ids.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

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
