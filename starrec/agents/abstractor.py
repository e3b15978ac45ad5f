"""Long-sequence abstractor: chunk the history, fuse a running summary, keep the last chunk raw.

Summarise chunk 1, then repeatedly fuse the summary with the next chunk, stopping
before the last chunk; MARS sees the final summary plus the last chunk verbatim (the hybrid input).
Only the most recent ``max_history`` behaviours are summarised by the LLM; anything older is
described by a deterministic count of its categories so no information silently disappears.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage

from starrec.agents.env import AgentEnv, Counters
from starrec.agents.templates import render
from starrec.agents.tool_loop import invoke_model
from starrec.data.user_view import format_entries
from starrec.llm.messages import flatten_content

MAX_SUMMARY_CHARS = 1500
"""Summaries longer than this are cut (a runaway generation must not blow up later prompts)."""


@dataclass
class Abstract:
    summary: str
    recent: list[dict[str, Any]]
    chunk_summaries: list[str] = field(default_factory=list)
    older_note: str = ""


def split_history(
    history: Sequence[dict[str, Any]], chunk_size: int, max_history: int
) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]], list[dict[str, Any]]]:
    """(too old for the LLM, chunks to summarise, the last chunk) of a time-ordered history."""
    history = list(history)
    window = history[-max_history:] if max_history > 0 else history
    older = history[: len(history) - len(window)]
    chunks = [window[i : i + chunk_size] for i in range(0, len(window), chunk_size)]
    if not chunks:
        return older, [], []
    return older, chunks[:-1], chunks[-1]


def describe_older(older: Sequence[dict[str, Any]], items_word: str) -> str:
    """A factual one-liner for behaviours outside the LLM window."""
    if not older:
        return ""
    genres = Counter(label for entry in older for label in entry.get("categories", [])[:2])
    top = ", ".join(f"{name} ({count})" for name, count in genres.most_common(5))
    span = f"{older[0].get('date', '?')} to {older[-1].get('date', '?')}"
    return f"Before that, {len(older)} earlier {items_word} ({span})" + (f", mostly {top}." if top else ".")


async def _summary_call(env: AgentEnv, system: str, user: str, counters: Counters) -> str:
    response = await invoke_model(
        env.model, [SystemMessage(content=system), HumanMessage(content=user)], counters
    )
    return flatten_content(response).strip()[:MAX_SUMMARY_CHARS]


async def abstract(
    env: AgentEnv, history: Sequence[dict[str, Any]], chunk_size: int, max_history: int, counters: Counters
) -> Abstract:
    """Run the abstractor over a time-ordered history."""
    words = env.words
    older, chunks, recent = split_history(history, chunk_size, max_history)
    older_note = describe_older(older, words["items"])
    summaries: list[str] = []
    summary = ""
    for index, chunk in enumerate(chunks):
        if index == 0:
            system = render("abstractor_first", words)
            user = f"{older_note}\nBehaviours (oldest first):\n{format_entries(chunk)}\n\nWrite the summary."
        else:
            system = render("abstractor_fuse", words)
            user = (
                f"Summary so far:\n{summary}\n\nNext behaviours (oldest first):\n{format_entries(chunk)}"
                "\n\nWrite the updated summary."
            )
        text = await _summary_call(env, system, user.strip(), counters)
        if not text:
            # An empty summary would erase the chunk: keep its facts verbatim instead, and count it.
            counters.count("empty_summary")
            text = (summary + "\n" if summary else "") + "; ".join(
                f"[{e.get('item_id')}] {e.get('title', '')}" for e in chunk
            )
        summary = text
        summaries.append(text)
    if older_note and not chunks:
        summary = older_note
    elif older_note:
        summary = f"{older_note}\n{summary}"
    return Abstract(summary=summary, recent=list(recent), chunk_summaries=summaries, older_note=older_note)
