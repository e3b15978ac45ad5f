"""The openai backend against a fake OpenAI-compatible server on 127.0.0.1 (no network, no key).

Checks the wiring a real endpoint relies on: request fields, retries with backoff on 5xx, timeouts,
the concurrency limit, native tool calls, and the three structured-output methods.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
import pytest
from langchain_core.tools import tool
from pydantic import BaseModel

from starrec.llm import EndpointChatModel, LLMSpec, llm_capabilities, make_chat_model


@dataclass
class Reply:
    content: str | None = "ok"
    tool_calls: list[dict[str, Any]] | None = None
    status: int = 200
    delay_s: float = 0.0


@dataclass
class FakeEndpoint:
    """Serves ``/v1/chat/completions`` from a queue of replies; records every request body."""

    replies: list[Reply] = field(default_factory=list)
    default: Reply = field(default_factory=Reply)
    requests: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    base_url: str = ""

    def next_reply(self, body: dict[str, Any]) -> Reply:
        with self.lock:
            self.requests.append(body)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return self.replies.pop(0) if self.replies else self.default

    def done(self) -> None:
        with self.lock:
            self.in_flight -= 1


def completion(reply: Reply, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": f"call_{index}",
                "type": "function",
                "function": {"name": call["name"], "arguments": json.dumps(call["args"])},
            }
            for index, call in enumerate(reply.tool_calls)
        ]
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": "tool_calls" if reply.tool_calls else "stop"}
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
    }


def handler_for(endpoint: FakeEndpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep pytest output clean
            pass

        def stream(self, reply: Reply, model: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for index, piece in enumerate((reply.content or "").split(" ")):
                delta = {"role": "assistant", "content": (" " if index else "") + piece}
                chunk = {
                    "id": "c",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
                }
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            final = {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            }
            self.wfile.write(f"data: {json.dumps(final)}\n\ndata: [DONE]\n\n".encode())

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            reply = endpoint.next_reply(body)
            try:
                time.sleep(reply.delay_s)
                if body.get("stream"):
                    self.stream(reply, body["model"])
                    return
                payload = (
                    completion(reply, body["model"])
                    if reply.status == 200
                    else {"error": {"message": "overloaded", "type": "server_error"}}
                )
                data = json.dumps(payload).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("retry-after-ms", "20")  # keeps the client's backoff short in tests
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client timed out and hung up
            finally:
                endpoint.done()

    return Handler


@pytest.fixture
def endpoint() -> Iterator[FakeEndpoint]:
    fake = FakeEndpoint()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(fake))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield fake
    server.shutdown()
    server.server_close()


def model_for(endpoint: FakeEndpoint, **overrides: Any) -> EndpointChatModel:
    spec = LLMSpec(backend="openai", model="smollm2", base_url=endpoint.base_url, max_retries=0, timeout_s=5)
    model = make_chat_model(spec, **overrides)
    assert isinstance(model, EndpointChatModel)
    return model


@tool
def item_cf(item_id: str, k: int = 10) -> str:
    """Items co-consumed with ``item_id``."""
    return item_id


class Plan(BaseModel):
    agents: list[str]


def test_invoke_sends_the_spec_and_reports_usage(endpoint: FakeEndpoint) -> None:
    endpoint.default = Reply(content="Paris.")
    model = model_for(endpoint, temperature=0.2, max_tokens=64)
    message = model.invoke([("system", "be brief"), ("user", "capital of France?")])
    assert message.content == "Paris."
    assert message.usage_metadata["input_tokens"] == 11 and message.usage_metadata["output_tokens"] == 3
    [request] = endpoint.requests
    assert request["model"] == "smollm2" and request["temperature"] == 0.2
    assert 64 in (request.get("max_tokens"), request.get("max_completion_tokens"))
    assert [turn["role"] for turn in request["messages"]] == ["system", "user"]


def test_server_errors_are_retried_with_backoff(endpoint: FakeEndpoint) -> None:
    endpoint.replies = [Reply(status=500), Reply(status=503), Reply(content="third time")]
    assert model_for(endpoint, max_retries=2).invoke("hi").content == "third time"
    assert len(endpoint.requests) == 3


def test_retries_run_out_with_a_clear_error(endpoint: FakeEndpoint) -> None:
    endpoint.default = Reply(status=500)
    with pytest.raises(openai.InternalServerError):
        model_for(endpoint, max_retries=1).invoke("hi")
    assert len(endpoint.requests) == 2


def test_slow_endpoint_times_out(endpoint: FakeEndpoint) -> None:
    endpoint.default = Reply(delay_s=1.5)
    started = time.perf_counter()
    with pytest.raises(openai.APITimeoutError):
        model_for(endpoint, timeout_s=0.2, max_retries=0).invoke("hi")
    assert time.perf_counter() - started < 1.5


def test_concurrency_limit_holds_async(endpoint: FakeEndpoint) -> None:
    endpoint.default = Reply(content="x", delay_s=0.15)
    model = model_for(endpoint, concurrency=2)

    async def burst() -> list[Any]:
        return await asyncio.gather(*(model.ainvoke(f"q{index}") for index in range(6)))

    assert len(asyncio.run(burst())) == 6
    assert endpoint.max_in_flight == 2


def test_concurrency_limit_holds_for_threads(endpoint: FakeEndpoint) -> None:
    endpoint.default = Reply(content="x", delay_s=0.1)
    model = model_for(endpoint, concurrency=1)
    assert len(model.batch([f"q{index}" for index in range(4)], config={"max_concurrency": 4})) == 4
    assert endpoint.max_in_flight == 1


def test_native_tool_calls(endpoint: FakeEndpoint) -> None:
    endpoint.default = Reply(content="", tool_calls=[{"name": "item_cf", "args": {"item_id": "B01"}}])
    message = model_for(endpoint).bind_tools([item_cf]).invoke("neighbours of B01")
    assert message.tool_calls[0]["name"] == "item_cf" and message.tool_calls[0]["args"] == {"item_id": "B01"}
    assert endpoint.requests[0]["tools"][0]["function"]["name"] == "item_cf"


def test_structured_output_function_calling_is_the_default(endpoint: FakeEndpoint) -> None:
    endpoint.default = Reply(content="", tool_calls=[{"name": "Plan", "args": {"agents": ["user_profile"]}}])
    model = model_for(endpoint)
    assert model.with_structured_output(Plan).invoke("plan") == Plan(agents=["user_profile"])
    request = endpoint.requests[0]
    assert request["tools"][0]["function"]["name"] == "Plan"
    assert "response_format" not in request


def test_structured_output_json_schema_for_vllm(endpoint: FakeEndpoint) -> None:
    endpoint.default = Reply(content='{"agents": ["recent_interest"]}')
    model = model_for(endpoint, structured_method="json_schema")
    assert model.with_structured_output(Plan).invoke("plan") == Plan(agents=["recent_interest"])
    assert endpoint.requests[0]["response_format"]["type"] == "json_schema"


def test_structured_output_text_path_repairs_and_retries(endpoint: FakeEndpoint) -> None:
    endpoint.replies = [Reply(content="no json"), Reply(content="```json\n{'agents': ['a',]}\n```")]
    model = model_for(endpoint, structured_method="text")
    assert model.with_structured_output(Plan).invoke("plan") == Plan(agents=["a"])
    assert model.repair_counts == {"structured_retry": 1, "json_repair": 1}
    assert "tools" not in endpoint.requests[0] and "response_format" not in endpoint.requests[0]


def test_capabilities_come_from_the_spec(endpoint: FakeEndpoint) -> None:
    model = model_for(endpoint, supports_tool_calling=False, structured_method="json_schema")
    capabilities = llm_capabilities(model)
    assert not capabilities.supports_tool_calling
    assert capabilities.structured_method == "json_schema"


def test_streaming_respects_the_limit_without_deadlocking(endpoint: FakeEndpoint) -> None:
    endpoint.default = Reply(content="streamed reply here", delay_s=0.1)
    model = model_for(endpoint, concurrency=2)

    async def consume(prompt: str) -> str:
        return "".join([chunk.content async for chunk in model.astream(prompt)])

    async def burst() -> list[str]:
        return await asyncio.wait_for(asyncio.gather(*(consume(f"q{index}") for index in range(5))), 20)

    assert asyncio.run(burst()) == ["streamed reply here"] * 5
    assert endpoint.max_in_flight == 2

    # streaming=True: generate calls the streaming path inside its own slot and must not wait for another
    streaming = EndpointChatModel(
        model="smollm2", base_url=endpoint.base_url, api_key="x", streaming=True, concurrency=1, max_retries=0
    )
    endpoint.max_in_flight = 0

    async def two() -> list[Any]:
        return await asyncio.wait_for(asyncio.gather(streaming.ainvoke("a"), streaming.ainvoke("b")), 20)

    assert [message.content for message in asyncio.run(two())] == ["streamed reply here"] * 2
    assert streaming.invoke("sync").content == "streamed reply here"
    assert endpoint.max_in_flight == 1


def test_client_retries_are_counted_and_announced(endpoint: FakeEndpoint) -> None:
    from langchain_core.callbacks import AsyncCallbackHandler

    from starrec.llm.openai import CLIENT_RETRY_KEY

    events: list[dict[str, Any]] = []

    class Events(AsyncCallbackHandler):
        async def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
            events.append(data)

    endpoint.replies = [Reply(status=500), Reply(status=503), Reply(content="third time")]
    model = model_for(endpoint, max_retries=2)
    reply = asyncio.run(model.ainvoke("hi", config={"callbacks": [Events()]}))
    assert reply.content == "third time"
    assert model.repair_counts[CLIENT_RETRY_KEY] == 2
    assert [event["key"] for event in events] == [CLIENT_RETRY_KEY, CLIENT_RETRY_KEY]


def test_transient_errors_of_the_openai_stack_are_retried_by_the_graph() -> None:
    import httpx

    from starrec.graphs.graph import is_transient

    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")

    def status(code: int) -> openai.APIStatusError:
        return openai.APIStatusError("x", response=httpx.Response(code, request=request), body=None)

    assert is_transient(openai.APIConnectionError(request=request))
    assert is_transient(openai.APITimeoutError(request=request))
    assert is_transient(status(429)) and is_transient(status(503))
    assert not is_transient(status(400)) and not is_transient(ValueError("bug"))


def test_requests_per_second_limit_is_a_langchain_rate_limiter(endpoint: FakeEndpoint) -> None:
    from langchain_core.rate_limiters import InMemoryRateLimiter

    from starrec.graphs.context import Context
    from starrec.graphs.resources import Resources

    limited = model_for(endpoint, requests_per_second=4.0)
    assert isinstance(limited.rate_limiter, InMemoryRateLimiter)
    assert limited.rate_limiter.requests_per_second == 4.0
    assert limited.invoke("hi").content == "ok"
    assert model_for(endpoint).rate_limiter is None
    context = Context(llm="openai:smollm2", base_url=endpoint.base_url, requests_per_second=2.0)
    assert Resources().chat_model(context).rate_limiter.requests_per_second == 2.0
    with pytest.raises(ValueError, match="requests_per_second must be > 0"):
        model_for(endpoint, requests_per_second=0.0)
