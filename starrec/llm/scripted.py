"""A scripted chat model (the test double) and a recorder that turns real runs into scripts.

``ScriptedChatModel`` replays responses so graphs, batch runs and benchmarks run without a model:

* a list (consumed in order), a dict keyed by LangGraph node name / tag / a substring of the prompt
  (each key with its own list), or one callable ``(messages) -> str | AIMessage`` for every call;
* each response is a string (``<tool_call>`` text becomes ``tool_calls`` when tools are bound), an
  ``AIMessage`` (native tool calls), a callable, a recorded dict, or an exception to raise;
* ``latency_s`` per call (``time.sleep`` sync, ``asyncio.sleep`` async) for throughput benchmarks;
* ``fail_at``: call numbers (1-based) that raise ``TimeoutError``;
* ``calls``: a log of every call for assertions.

``RecordingChatModel`` wraps a real model and appends each exchange to a JSON-lines file that
``ScriptedChatModel.from_recording`` replays.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from pydantic import Field, PrivateAttr

from starrec.llm.messages import (
    ai_message_from_text,
    approximate_token_count,
    join_text_blocks,
    message_to_record,
    tool_names,
)
from starrec.llm.structured import RepairLog, TextProtocolMixin

ScriptedResponse = Any
"""str | AIMessage | dict (recorded) | BaseException | Callable[[list[BaseMessage]], str | AIMessage]."""


class ScriptExhaustedError(RuntimeError):
    """The script has no response left for a call."""


@dataclass
class ScriptedCall:
    """One call to a :class:`ScriptedChatModel`, for assertions in tests."""

    index: int
    key: str | None
    messages: list[BaseMessage]
    tools: list[str] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    response: AIMessage | None = None
    error: str | None = None

    @property
    def prompt(self) -> str:
        return "\n".join(join_text_blocks(message) for message in self.messages)


def _run_metadata(
    run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
) -> tuple[dict[str, Any], list[str]]:
    if run_manager is None:
        return {}, []
    return dict(run_manager.metadata or {}), list(run_manager.tags or [])


def node_of(metadata: Mapping[str, Any], tags: Sequence[str]) -> str | None:
    """The LangGraph node a model call runs in (``langgraph_node`` metadata), if any."""
    node = metadata.get("langgraph_node")
    return str(node) if node else None


class ScriptedChatModel(TextProtocolMixin, BaseChatModel):
    """Replays scripted responses (see module docstring); supports tools and structured output."""

    responses: Any = Field(default_factory=list, description="list | dict[key, list|response] | callable.")
    matcher: Callable[[list[BaseMessage], dict[str, Any]], str | None] | None = Field(
        default=None, description="Picks the dict key for a call: (messages, run metadata) -> key."
    )
    cycle: bool = Field(default=False, description="Start over when a response list is exhausted.")
    latency_s: float = Field(default=0.0, description="Seconds each call takes (sleep).")
    fail_at: Sequence[int] = Field(default=(), description="1-based call numbers that raise TimeoutError.")
    model_name: str = "scripted"
    supports_tool_calling: bool = Field(default=True, description="bind_tools gives AIMessage.tool_calls.")
    supports_structured_output: bool = True
    structured_method: str = "text"
    constrained_decoding: str = Field(
        default="none",
        description="'vllm' makes MARS send vLLM structured_outputs (recorded in each call's kwargs).",
    )

    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _calls: list[ScriptedCall] = PrivateAttr(default_factory=list)
    _positions: dict[str | None, int] = PrivateAttr(default_factory=dict)
    _repairs: RepairLog = PrivateAttr(default_factory=RepairLog)

    @property
    def _llm_type(self) -> str:
        return "starrec-scripted"

    @property
    def calls(self) -> list[ScriptedCall]:
        with self._lock:
            return list(self._calls)

    @classmethod
    def from_recording(
        cls, path: str | Path, *, by: Literal["sequence", "node"] = "sequence", **fields: Any
    ) -> ScriptedChatModel:
        """Replay a :class:`RecordingChatModel` file, in call order or per LangGraph node."""
        records = load_recording(path)
        if by == "sequence":
            return cls(responses=[record["response"] for record in records], **fields)
        keyed: dict[str, list[Any]] = {}
        for record in records:
            keyed.setdefault(record.get("key") or "*", []).append(record["response"])
        return cls(responses=keyed, **fields)

    # -- response selection --------------------------------------------------------------------

    def _key_for(self, messages: list[BaseMessage], metadata: dict[str, Any], tags: list[str]) -> str | None:
        if not isinstance(self.responses, Mapping):
            return None
        if self.matcher is not None:
            return self.matcher(messages, metadata)
        node = node_of(metadata, tags)
        if node in self.responses:
            return node
        for tag in tags:
            if tag in self.responses:
                return tag
        prompt = "\n".join(join_text_blocks(message) for message in messages)
        for key in sorted(self.responses, key=len, reverse=True):
            if key != "*" and key in prompt:
                return key
        return "*" if "*" in self.responses else None

    def _next_response(self, key: str | None, call_number: int) -> ScriptedResponse:
        if callable(self.responses) and not isinstance(self.responses, Mapping | Sequence):
            return self.responses
        if isinstance(self.responses, Mapping):
            if key is None or key not in self.responses:
                raise ScriptExhaustedError(
                    f"Scripted call {call_number}: no script key matches (keys: {sorted(self.responses)}); "
                    "add a '*' entry or a matcher."
                )
            script = self.responses[key]
        else:
            script = self.responses
        if isinstance(script, str | AIMessage | BaseException | Mapping) or callable(script):
            return script
        position = self._positions.get(key, 0)
        if position >= len(script):
            if not self.cycle or not script:
                raise ScriptExhaustedError(
                    f"Scripted call {call_number}: the script{f' for {key!r}' if key else ''} has only "
                    f"{len(script)} response(s); add more or set cycle=True."
                )
            position = 0
        self._positions[key] = position + 1
        return script[position]

    def _materialise(
        self, response: ScriptedResponse, messages: list[BaseMessage], tools: list[dict[str, Any]] | None
    ) -> AIMessage:
        if isinstance(response, BaseException):
            raise response
        if isinstance(response, type) and issubclass(response, BaseException):
            raise response(f"scripted {response.__name__}")
        if isinstance(response, AIMessage):
            return response.model_copy(deep=True)
        if isinstance(response, str):
            return ai_message_from_text(response, tools)
        if isinstance(response, Mapping):
            return _message_from_record(response, tools)
        if callable(response):
            return self._materialise(response(messages), messages, tools)
        raise TypeError(
            f"Unsupported scripted response {response!r}; use str, AIMessage, dict or a callable."
        )

    def _respond(
        self, messages: list[BaseMessage], metadata: dict[str, Any], tags: list[str], kwargs: dict[str, Any]
    ) -> ChatResult:
        tools = kwargs.get("tools")
        with self._lock:
            call_number = len(self._calls) + 1
            key = self._key_for(messages, metadata, tags)
            call = ScriptedCall(call_number, key, list(messages), tool_names(tools), dict(kwargs))
            self._calls.append(call)
            try:
                if call_number in set(self.fail_at):
                    raise TimeoutError(f"scripted timeout at call {call_number}")
                response = self._next_response(key, call_number)
            except Exception as exc:
                call.error = f"{type(exc).__name__}: {exc}"
                raise
        try:
            message = self._materialise(response, messages, tools)
        except Exception as exc:
            call.error = f"{type(exc).__name__}: {exc}"
            raise
        message = _with_usage(message, messages, self.model_name)
        call.response = message
        return ChatResult(
            generations=[ChatGeneration(message=message)], llm_output={"model_name": self.model_name}
        )

    # -- BaseChatModel -------------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.latency_s > 0:
            time.sleep(self.latency_s)
        metadata, tags = _run_metadata(run_manager)
        return self._respond(messages, metadata, tags, kwargs)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        metadata, tags = _run_metadata(run_manager)
        return self._respond(messages, metadata, tags, kwargs)


def _with_usage(message: AIMessage, messages: list[BaseMessage], model_name: str) -> AIMessage:
    if message.usage_metadata:
        return message
    prompt_tokens = sum(approximate_token_count(join_text_blocks(item)) for item in messages)
    completion_tokens = approximate_token_count(join_text_blocks(message)) + sum(
        approximate_token_count(json.dumps(call["args"])) + 1 for call in message.tool_calls
    )
    message.usage_metadata = {
        "input_tokens": prompt_tokens,
        "output_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    message.response_metadata = {
        **message.response_metadata,
        "model_name": model_name,
        "finish_reason": "stop",
    }
    return message


# ---------------------------------------------------------------------------------------------
# Recording
# ---------------------------------------------------------------------------------------------


def _message_from_record(record: Mapping[str, Any], tools: list[dict[str, Any]] | None) -> AIMessage:
    calls = record.get("tool_calls") or []
    if calls:
        return AIMessage(
            content=record.get("content", ""),
            tool_calls=[
                {
                    "name": call["name"],
                    "args": call.get("args", {}),
                    "id": call.get("id") or f"call_{index}",
                    "type": "tool_call",
                }
                for index, call in enumerate(calls)
            ],
        )
    return ai_message_from_text(str(record.get("content", "")), tools)


def load_recording(path: str | Path) -> list[dict[str, Any]]:
    """The records of a recording file, with a clear error naming the bad line."""
    records = []
    path = Path(path)
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{line_number}: not a JSON object ({exc})") from exc
        if not isinstance(record, dict) or "response" not in record:
            raise ValueError(f"{path}:{line_number}: a recording line needs a 'response' field")
        records.append(record)
    return records


class RecordingChatModel(TextProtocolMixin, BaseChatModel):
    """Delegates to ``inner`` and appends every exchange to ``path`` (JSON lines) for later replay."""

    inner: BaseChatModel
    path: Path
    supports_tool_calling: bool = True
    supports_structured_output: bool = True
    structured_method: str = "text"

    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _repairs: RepairLog = PrivateAttr(default_factory=RepairLog)

    @property
    def _llm_type(self) -> str:
        return "starrec-recording"

    def _bound_inner(self, kwargs: dict[str, Any]) -> Runnable:
        tools = kwargs.pop("tools", None)
        tool_choice = kwargs.pop("tool_choice", None)
        runnable: Runnable = self.inner.bind_tools(tools, tool_choice=tool_choice) if tools else self.inner
        return runnable.bind(**kwargs) if kwargs else runnable

    def _append(self, messages: list[BaseMessage], response: AIMessage, metadata: dict[str, Any]) -> None:
        record = {
            "key": node_of(metadata, []),
            "messages": [message_to_record(message) for message in messages],
            "response": message_to_record(response),
            "usage": response.usage_metadata,
        }
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                handle.flush()

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # The recorder's own run is what callbacks see; passing them on would count each call twice.
        response = self._bound_inner(kwargs).invoke(messages, stop=stop)
        self._append(messages, response, _run_metadata(run_manager)[0])
        return ChatResult(generations=[ChatGeneration(message=response)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        response = await self._bound_inner(kwargs).ainvoke(messages, stop=stop)
        self._append(messages, response, _run_metadata(run_manager)[0])
        return ChatResult(generations=[ChatGeneration(message=response)])


__all__ = [
    "RecordingChatModel",
    "ScriptExhaustedError",
    "ScriptedCall",
    "ScriptedChatModel",
    "load_recording",
]
