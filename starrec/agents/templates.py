"""The agents' prompt templates: ``starrec/agents/prompts/<name>.md`` (or a file an app names)."""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from string import Template


@cache
def load_prompt(template: str | Path) -> str:
    """A prompt template: ``starrec/agents/prompts/<name>.md`` for a name, or the file a path names."""
    packaged = resources.files("starrec.agents") / "prompts" / f"{template}.md"
    path = template if isinstance(template, Path) else packaged
    if not path.is_file():
        raise FileNotFoundError(f"prompt template {str(template)!r} not found at {path}")
    return path.read_text(encoding="utf-8").strip()


def render(template: str | Path, words: dict[str, str], **values: str) -> str:
    """Fill a prompt template (``$name`` placeholders, so JSON braces need no escaping)."""
    return Template(load_prompt(template)).substitute({**words, **values})
