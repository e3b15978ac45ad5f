"""Redaction of credentials before anything is written (``runs.jsonl``, reports, error lines).

A ``--base-url`` may carry its key (``http://user:secret@host/v1``, ``...?api_key=...``) and a
server error may echo the key it was sent; both used to land verbatim in trajectories. Every
writer passes its text or object through :func:`redact` / :func:`redact_value`, which replace
URL userinfo, secret-named URL query values and mapping values, ``api_key=...`` assignments,
known key shapes and the keys set in the environment with :data:`MASK`. The shapes demand a
digit or a long random tail, so ordinary words ("sk-learn", "Bearer of bad news") survive.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

MASK = "***"
SECRET_ENV_VARS = ("OPENAI_API_KEY", "STARREC_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
"""Environment variables whose values are masked wherever they appear."""
MIN_SECRET_LENGTH = 8
"""Shorter environment values ("EMPTY", "x") are placeholders; masking them would mangle text."""

_SECRET_NAME = re.compile(
    r"(?:^|[_-])(?:api[_-]?key|key|token|access[_-]?token|secret|password|passwd|pwd|auth|authorization"
    r"|credentials?|signature|sig)$",
    re.IGNORECASE,
)
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
_KEY_SHAPES = (
    re.compile(r"\bsk-(?=[A-Za-z0-9_*-]*[0-9*])[A-Za-z0-9_*-]{8,}"),  # OpenAI, DeepSeek, Anthropic, echoes
    re.compile(r"\bhf_[A-Za-z0-9]{20,}"),  # Hugging Face
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),  # GitHub
)
_BEARER = re.compile(r"\b(Bearer\s+)(?=[A-Za-z0-9._~+/=*-]*[0-9*])[A-Za-z0-9._~+/=*-]{8,}", re.IGNORECASE)
_ASSIGNMENT = re.compile(
    r"(?P<name>\b[\w-]*?(?:api[_-]?key|token|secret|password|passwd))\b"
    r"(?P<sep>['\"]?\s*[:=]\s*['\"]?)(?P<value>[^\s'\",;&}]{4,})",
    re.IGNORECASE,
)


def is_secret_name(name: str) -> bool:
    """True for names such as ``api_key``, ``token``, ``client_secret``, ``password`` (not ``author``)."""
    return bool(_SECRET_NAME.search(name))


def redact_url(url: str) -> str:
    """The URL with its userinfo and secret-named query values masked; other URLs unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:  # unparseable (e.g. a stray bracket): keep only the scheme
        return url.split("://", 1)[0] + "://" + MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    # Field by field and verbatim, so the other parameters keep their exact spelling.
    fields = [field.partition("=") for field in parts.query.split("&")] if parts.query else []
    query = "&".join(
        f"{name}{sep}{MASK if sep and is_secret_name(unquote_plus(name)) else value}"
        for name, sep, value in fields
    )
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _environment_secrets() -> list[str]:
    values = {os.environ.get(name, "") for name in SECRET_ENV_VARS}
    return sorted((value for value in values if len(value) >= MIN_SECRET_LENGTH), key=len, reverse=True)


def _mask_assignment(match: re.Match[str]) -> str:
    if match.group("value").startswith(MASK):
        return match.group()
    return f"{match.group('name')}{match.group('sep')}{MASK}"


def _redact_url_match(match: re.Match[str]) -> str:
    url = match.group()
    body = url.rstrip(".,:;!?)]}")  # prose punctuation after a URL is not part of it
    return redact_url(body) + url[len(body):]


def redact(text: str) -> str:
    """``text`` with URL credentials, key shapes, ``key=value`` secrets and environment keys masked."""
    if not text:
        return text
    for secret in _environment_secrets():
        text = text.replace(secret, MASK)
    text = _URL.sub(_redact_url_match, text)
    for shape in _KEY_SHAPES:
        text = shape.sub(MASK, text)
    text = _BEARER.sub(lambda match: match.group(1) + MASK, text)
    return _ASSIGNMENT.sub(_mask_assignment, text)


def redact_value(value: Any) -> Any:
    """A JSON-like object with every string redacted and non-empty secret-named string values masked."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {
            key: MASK if isinstance(key, str) and is_secret_name(key) and isinstance(item, str) and item
            else redact_value(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_value(item) for item in value]
    return value
