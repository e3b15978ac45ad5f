"""The ``openai`` backend: any OpenAI-compatible endpoint (DeepSeek, OpenAI, vLLM, llama.cpp server).

``EndpointChatModel`` is ``langchain_openai.ChatOpenAI`` plus what a batch teacher needs:

* a concurrency limit (at most ``concurrency`` requests in flight per process, sync and async);
* timeouts and retries with exponential backoff (the OpenAI client's: 0.5 s doubling up to 8 s with
  jitter, on connection errors, 408/409/429 and 5xx), ``max_retries`` times;
* ``structured_method``: how ``with_structured_output`` asks for JSON. vLLM: ``json_schema`` (guided
  decoding); llama.cpp server: ``function_calling`` (its ``json_schema`` path returns HTTP 500);
  ``text``: prompt + repair + retry, for endpoints with neither;
* capability flags (``supports_tool_calling``, ``supports_structured_output``) that MARS reads to choose
  between LangChain tool calling and the ``<tool_call>`` text protocol.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_openai import ChatOpenAI
from pydantic import Field, PrivateAttr

from starrec.llm.structured import RepairLog, with_json_output

StructuredMethod = Literal["json_schema", "function_calling", "json_mode", "text"]

# Set while this context holds a request slot, so streaming called from inside generate does not
# wait for a second slot (which would deadlock at concurrency 1).
_HOLDS_SLOT: contextvars.ContextVar[bool] = contextvars.ContextVar("starrec_llm_holds_slot", default=False)


class EndpointChatModel(ChatOpenAI):
    """``ChatOpenAI`` with a concurrency limit, a default structured-output method and capability flags."""

    concurrency: int = Field(default=8, ge=1, description="At most this many requests in flight.")
    structured_method: StructuredMethod = Field(
        default="function_calling",
        description="json_schema for vLLM, function_calling for llama.cpp/DeepSeek.",
    )
    supports_tool_calling: bool = Field(default=True, description="The endpoint returns native tool calls.")
    supports_structured_output: bool = True

    _thread_slots: threading.BoundedSemaphore | None = PrivateAttr(default=None)
    _loop_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = PrivateAttr(
        default_factory=weakref.WeakKeyDictionary
    )
    _slots_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _repairs: RepairLog = PrivateAttr(default_factory=RepairLog)

    @property
    def repair_counts(self) -> dict[str, int]:
        return self._repairs.snapshot()

    def _sync_slots(self) -> threading.BoundedSemaphore:
        with self._slots_lock:
            if self._thread_slots is None:
                self._thread_slots = threading.BoundedSemaphore(self.concurrency)
            return self._thread_slots

    def _async_slots(self) -> asyncio.Semaphore:
        # One semaphore per event loop: asyncio primitives must not cross loops.
        loop = asyncio.get_running_loop()
        with self._slots_lock:
            slots = self._loop_slots.get(loop)
            if slots is None:
                slots = asyncio.Semaphore(self.concurrency)
                self._loop_slots[loop] = slots
            return slots

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if _HOLDS_SLOT.get():
            return super()._generate(messages, stop, run_manager, **kwargs)
        with self._sync_slots():
            _HOLDS_SLOT.set(True)
            try:
                return super()._generate(messages, stop, run_manager, **kwargs)
            finally:
                _HOLDS_SLOT.set(False)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        if _HOLDS_SLOT.get():
            yield from super()._stream(messages, stop, run_manager, **kwargs)
            return
        with self._sync_slots():
            yield from super()._stream(messages, stop, run_manager, **kwargs)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if _HOLDS_SLOT.get():
            return await super()._agenerate(messages, stop, run_manager, **kwargs)
        async with self._async_slots():
            _HOLDS_SLOT.set(True)
            try:
                return await super()._agenerate(messages, stop, run_manager, **kwargs)
            finally:
                _HOLDS_SLOT.set(False)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        if _HOLDS_SLOT.get():
            async for chunk in super()._astream(messages, stop, run_manager, **kwargs):
                yield chunk
            return
        async with self._async_slots():
            async for chunk in super()._astream(messages, stop, run_manager, **kwargs):
                yield chunk

    def with_structured_output(
        self,
        schema: Any = None,
        *,
        method: StructuredMethod | None = None,
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """``method`` defaults to this endpoint's ``structured_method``; ``text`` uses the JSON text path."""
        chosen = method or self.structured_method
        if chosen == "text":
            return with_json_output(self, schema, include_raw=include_raw, repair_log=self._repairs)
        return super().with_structured_output(
            schema, method=chosen, include_raw=include_raw, strict=strict, **kwargs
        )
