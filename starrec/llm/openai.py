"""The ``openai`` backend: any OpenAI-compatible endpoint (DeepSeek, OpenAI, vLLM, llama.cpp server).

``EndpointChatModel`` is ``langchain_openai.ChatOpenAI`` plus what a batch teacher needs:

* a concurrency limit (at most ``concurrency`` requests in flight per process, sync and async);
* timeouts and retries with exponential backoff (the OpenAI client's: 0.5 s doubling up to 8 s with
  jitter, on connection errors, 408/409/429 and 5xx), ``max_retries`` times;
* ``structured_method``: how ``with_structured_output`` asks for JSON. vLLM: ``json_schema`` (guided
  decoding); llama.cpp server: ``function_calling`` (its ``json_schema`` path returns HTTP 500);
  ``text``: prompt + repair + retry, for endpoints with neither;
* capability flags (``supports_tool_calling``, ``supports_structured_output``) that MARS reads to choose
  between LangChain tool calling and the ``<tool_call>`` text protocol;
* a cache key (``_get_llm_string``) without the transport knobs (concurrency, retries, timeout, rate
  limit), which never change an answer, so an LLM cache (:mod:`starrec.llm.cache`) still hits when
  only they change;
* an HTTP connection pool per event loop (:class:`LoopLocalAsyncClient`): batch runners call
  ``asyncio.run`` once per batch, and a pooled connection from a closed loop would fail the next
  batch's requests with ``RuntimeError: Event loop is closed``.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

import httpx
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.callbacks.manager import ahandle_event
from langchain_core.language_models import LanguageModelInput
from langchain_core.load import dumpd
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_openai import ChatOpenAI
from pydantic import Field, PrivateAttr, model_validator

from starrec.llm.constraints import ConstrainedDecoding
from starrec.llm.structured import REPAIR_EVENT, RepairLog, with_json_output

StructuredMethod = Literal["json_schema", "function_calling", "json_mode", "text"]

# Set while this context holds a request slot, so streaming called from inside generate does not
# wait for a second slot (which would deadlock at concurrency 1).
_HOLDS_SLOT: contextvars.ContextVar[bool] = contextvars.ContextVar("starrec_llm_holds_slot", default=False)
# HTTP attempts of the current async LLM call; more than one means the OpenAI client retried.
_HTTP_ATTEMPTS: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "starrec_http_attempts", default=None
)
TRANSPORT_FIELDS = frozenset({"concurrency", "max_retries", "request_timeout", "rate_limiter"})
"""Constructor fields that decide how a request travels, not what it asks: left out of the cache key."""
CLIENT_RETRY_KEY = "llm_client_retry"
"""Run-stats key for requests the OpenAI client re-sent (timeouts, resets, 429, 5xx)."""


class LoopLocalAsyncClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` that sends each request through a pool owned by the running loop.

    httpx connections are bound to the loop that opened them; LangChain's default async client is
    shared process-wide, so a second ``asyncio.run`` reuses sockets of a closed loop. One inner
    client per loop (weakly keyed, so it goes with its loop) keeps pooling within a loop.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._inner_kwargs = kwargs
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._per_loop_lock = threading.Lock()

    def _client_for_running_loop(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        with self._per_loop_lock:
            client = self._per_loop.get(loop)
            if client is None:
                client = httpx.AsyncClient(**self._inner_kwargs)
                self._per_loop[loop] = client
            return client

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        attempts = _HTTP_ATTEMPTS.get()
        if attempts is not None:
            attempts[0] += 1
        return await self._client_for_running_loop().send(request, **kwargs)

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        with self._per_loop_lock:
            client = self._per_loop.pop(loop, None)
        if client is not None:
            await client.aclose()
        await super().aclose()


class EndpointChatModel(ChatOpenAI):
    """``ChatOpenAI`` with a concurrency limit, a default structured-output method and capability flags."""

    concurrency: int = Field(default=8, ge=1, description="At most this many requests in flight.")
    structured_method: StructuredMethod = Field(
        default="function_calling",
        description="json_schema for vLLM, function_calling for llama.cpp/DeepSeek.",
    )
    supports_tool_calling: bool = Field(default=True, description="The endpoint returns native tool calls.")
    supports_structured_output: bool = True
    constrained_decoding: ConstrainedDecoding = Field(
        default="none",
        description="vllm: the server takes vLLM's structured_outputs field (JSON schemas with enums, "
        "structural tags), so agents' answers and tool calls are valid by construction.",
    )

    _thread_slots: threading.BoundedSemaphore | None = PrivateAttr(default=None)
    _loop_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = PrivateAttr(
        default_factory=weakref.WeakKeyDictionary
    )
    _slots_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _repairs: RepairLog = PrivateAttr(default_factory=RepairLog)

    @model_validator(mode="before")
    @classmethod
    def _loop_local_http_client(cls, values: Any) -> Any:
        """Give the OpenAI client a per-loop connection pool unless the caller brought its own client."""
        if isinstance(values, dict) and values.get("http_async_client") is None:
            timeout = values.get("timeout", values.get("request_timeout"))
            values = {**values, "http_async_client": LoopLocalAsyncClient(timeout=timeout)}
        return values

    @property
    def repair_counts(self) -> dict[str, int]:
        return self._repairs.snapshot()

    def _get_llm_string(self, stop: list[str] | None = None, **kwargs: Any) -> str:
        """LangChain's cache key (the serialised constructor + the call's parameters) minus
        :data:`TRANSPORT_FIELDS` and objects without a stable serialisation."""
        described = dumpd(self)
        described["kwargs"] = {
            name: value
            for name, value in described.get("kwargs", {}).items()
            if name not in TRANSPORT_FIELDS
            and not (isinstance(value, dict) and value.get("type") == "not_implemented")
        }
        parameters = str(sorted({**kwargs, "stop": stop}.items()))
        return json.dumps(described, sort_keys=True) + "---" + parameters

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
            attempts = [0]
            token = _HTTP_ATTEMPTS.set(attempts)
            try:
                return await super()._agenerate(messages, stop, run_manager, **kwargs)
            finally:
                _HTTP_ATTEMPTS.reset(token)
                _HOLDS_SLOT.set(False)
                await self._report_client_retries(attempts[0] - 1, run_manager)

    async def _report_client_retries(
        self, retries: int, run_manager: AsyncCallbackManagerForLLMRun | None
    ) -> None:
        """Announce the client's own retries so trajectories count them (``llm_client_retry``)."""
        if retries <= 0:
            return
        self._repairs.add(CLIENT_RETRY_KEY, retries)
        if run_manager is None:
            return
        data = {"kind": "client_retry", "key": CLIENT_RETRY_KEY, "detail": "the OpenAI client re-sent"}
        for _ in range(retries):
            await ahandle_event(
                run_manager.handlers, "on_custom_event", "ignore_custom_event", REPAIR_EVENT, data,
                run_id=run_manager.run_id, tags=run_manager.tags, metadata=run_manager.metadata,
            )  # fmt: skip

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
