"""MARS against a local keep-alive OpenAI-compatible server, batch after batch, concurrency > 1.

Each ``rank_batch`` runs its own ``asyncio.run``; pooled HTTP connections from an earlier (closed)
loop must never fail a later batch's runs with ``RuntimeError: Event loop is closed``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from mars_fixtures import FakeEvidence, build_movie_dataset, make_request, make_task

from starrec.graphs.context import Context
from starrec.graphs.recommender import MarsRecommender
from starrec.llm.openai import EndpointChatModel


class KeepAliveHandler(BaseHTTPRequestHandler):
    """Answers every chat completion with a short plain-text reply, keeping connections open."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps(
            {
                "id": "c", "object": "chat.completion", "created": 0, "model": "m",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "They like films."}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
            }
        ).encode()  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def base_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), KeepAliveHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_sequential_event_loops_share_one_endpoint_model(base_url: str) -> None:
    model = EndpointChatModel(model="m", base_url=base_url, api_key="x", max_retries=0)

    async def burst() -> list[Any]:
        return await asyncio.gather(*(model.ainvoke(f"q{i}") for i in range(4)))

    for _ in range(3):
        assert [m.content for m in asyncio.run(burst())] == ["They like films."] * 4


def test_mars_batches_never_fail_on_a_closed_loop(base_url: str) -> None:
    dataset = build_movie_dataset(users=12)
    users = [f"u{i}" for i in range(1, 13)]
    tasks = [make_task(dataset, user, index) for index, user in enumerate(users)]
    model = EndpointChatModel(model="m", base_url=base_url, api_key="x", max_retries=0,
                              supports_tool_calling=False, supports_structured_output=False)  # fmt: skip
    mars = MarsRecommender(
        Context(chunk_size=3, structured_output="json", tool_protocol="text"),
        chat_model=model,
        evidence=FakeEvidence(dataset),
        concurrency=4,
    )
    mars.fit(dataset.hide_from(tasks))
    for batch in (tasks[:6], tasks[6:]):
        results = mars.rank_batch([make_request(dataset, task) for task in batch])
        errors = [r for r in results if isinstance(r, BaseException)]
        assert errors == [], errors[:1]
    assert len(mars.trajectories) == 12 and all(t.error is None for t in mars.trajectories)
