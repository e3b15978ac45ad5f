"""The LLM layer shared by MARS, distillation and serving.

* :func:`make_chat_model` / :class:`LLMSpec`: the ``openai``, ``local`` and ``scripted`` backends.
* the text protocols, one module each: :mod:`~starrec.llm.toolcall_syntax` (``<tool_call>``),
  :mod:`~starrec.llm.json_repair` (tolerant JSON), :mod:`~starrec.llm.candidate_ids` (ids in text).
* :func:`llm_capabilities`: whether a model does native tool calling and structured output.
* :class:`LLMUsageCallback`: calls, tokens, seconds and repairs per graph node.

Heavy backends (transformers, the OpenAI client) are imported only when a model is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starrec.llm.spec import BACKENDS, LLMSpec, make_chat_model
from starrec.llm.structured import (
    REPAIR_EVENT,
    LLMCapabilities,
    RepairLog,
    StructuredOutputError,
    llm_capabilities,
    with_json_output,
)
from starrec.llm.usage import LLMUsageCallback, NodeUsage

if TYPE_CHECKING:
    from starrec.llm.local import LocalChatModel
    from starrec.llm.openai import EndpointChatModel
    from starrec.llm.scripted import RecordingChatModel, ScriptedChatModel

__all__ = [
    "BACKENDS",
    "REPAIR_EVENT",
    "EndpointChatModel",
    "LLMCapabilities",
    "LLMSpec",
    "LLMUsageCallback",
    "LocalChatModel",
    "NodeUsage",
    "RecordingChatModel",
    "RepairLog",
    "ScriptedChatModel",
    "StructuredOutputError",
    "llm_capabilities",
    "make_chat_model",
    "with_json_output",
]

_LAZY = {
    "LocalChatModel": "starrec.llm.local",
    "EndpointChatModel": "starrec.llm.openai",
    "ScriptedChatModel": "starrec.llm.scripted",
    "RecordingChatModel": "starrec.llm.scripted",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'starrec.llm' has no attribute {name!r}")
