"""The persistent LLM call cache: what it keys on, what it replays, and that it is safe to share."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration
from pydantic import BaseModel

from starrec.llm import EndpointChatModel, LLMSpec, LocalChatModel, ScriptedChatModel, make_chat_model
from starrec.llm.cache import CACHE_METADATA_KEY, SQLiteLLMCache, open_llm_cache


class CountingEndpoint:
    """A fake ``/v1/chat/completions`` that answers with the request's sampling fields, and counts."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.base_url = ""

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.requests.append(body)
            number = len(self.requests)
        sampled = {key: body.get(key) for key in ("temperature", "seed", "stop")}
        content = f"answer {number} {json.dumps(sampled, sort_keys=True)}"
        if body.get("response_format"):
            content = json.dumps({"agents": [f"a{number}"], "ranking": [f"m{number}"]})
        return {
            "id": f"chatcmpl-{number}", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12},
        }  # fmt: skip


@pytest.fixture
def endpoint() -> Iterator[CountingEndpoint]:
    fake = CountingEndpoint()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            data = json.dumps(fake.answer(body)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield fake
    server.shutdown()
    server.server_close()


def endpoint_model(endpoint: CountingEndpoint, cache: Path, **overrides: Any) -> EndpointChatModel:
    spec = LLMSpec(backend="openai", model="teacher", base_url=endpoint.base_url, max_retries=0,
                   timeout_s=5, cache=str(cache))  # fmt: skip
    model = make_chat_model(spec, **overrides)
    assert isinstance(model, EndpointChatModel)
    return model


PROMPT = [("system", "rank the candidates"), ("user", "user u1 watched m1, m2")]


class Plan(BaseModel):
    agents: list[str]


class Ranking(BaseModel):
    ranking: list[str]


def test_a_second_model_on_the_same_file_hits_and_returns_the_same_answer(
    endpoint: CountingEndpoint, tmp_path: Path
) -> None:
    cache_file = tmp_path / "llm.sqlite"
    first = endpoint_model(endpoint, cache_file, temperature=0.7, seed=1).invoke(PROMPT)
    again = endpoint_model(endpoint, cache_file, temperature=0.7, seed=1).invoke(PROMPT)
    assert len(endpoint.requests) == 1
    assert again.content == first.content and again.usage_metadata["output_tokens"] == 5
    assert first.response_metadata[CACHE_METADATA_KEY] == "miss"
    assert again.response_metadata[CACHE_METADATA_KEY] == "hit"
    assert open_llm_cache(cache_file).stats()["hits"] >= 1


@pytest.mark.parametrize(
    "change",
    [{"temperature": 0.9}, {"seed": 2}, {"max_tokens": 17}, {"model": "other-model"}],
    ids=["temperature", "seed", "max_tokens", "model"],
)
def test_a_different_sampling_setting_misses(
    endpoint: CountingEndpoint, tmp_path: Path, change: dict[str, Any]
) -> None:
    cache_file = tmp_path / "llm.sqlite"
    base = {"temperature": 0.7, "seed": 1, "max_tokens": 64}
    first = endpoint_model(endpoint, cache_file, **base).invoke(PROMPT)
    other = endpoint_model(endpoint, cache_file, **{**base, **change}).invoke(PROMPT)
    assert len(endpoint.requests) == 2
    assert other.content != first.content
    assert other.response_metadata[CACHE_METADATA_KEY] == "miss"


def test_stop_and_output_schema_are_part_of_the_key(endpoint: CountingEndpoint, tmp_path: Path) -> None:
    model = endpoint_model(endpoint, tmp_path / "llm.sqlite")
    model.invoke(PROMPT, stop=["</tool_call>"])
    model.invoke(PROMPT, stop=["</recommend>"])
    assert len(endpoint.requests) == 2
    plan = model.with_structured_output(Plan, method="json_schema")
    ranking = model.with_structured_output(Ranking, method="json_schema")
    assert plan.invoke(PROMPT) == plan.invoke(PROMPT) == Plan(agents=["a3"])  # the same schema hits
    assert len(endpoint.requests) == 3
    assert ranking.invoke(PROMPT) == Ranking(ranking=["m4"])  # another schema asks again
    assert len(endpoint.requests) == 4


def test_transport_knobs_do_not_change_the_key(endpoint: CountingEndpoint, tmp_path: Path) -> None:
    cache_file = tmp_path / "llm.sqlite"
    endpoint_model(endpoint, cache_file, concurrency=2, timeout_s=5, max_retries=0).invoke(PROMPT)
    endpoint_model(endpoint, cache_file, concurrency=7, timeout_s=30, max_retries=4,
                   requests_per_second=50).invoke(PROMPT)  # fmt: skip
    assert len(endpoint.requests) == 1


def test_the_cache_survives_the_process_state_and_counts_per_file(tmp_path: Path) -> None:
    path = tmp_path / "llm.sqlite"
    cache = SQLiteLLMCache(path)
    message = AIMessage(
        content="", tool_calls=[{"name": "item_cf", "args": {"item_id": "m1"}, "id": "call_0"}],
        usage_metadata={"input_tokens": 3, "output_tokens": 2, "total_tokens": 5},
    )  # fmt: skip
    assert cache.lookup("prompt", "llm") is None
    cache.update("prompt", "llm", [ChatGeneration(message=message)])
    reopened = SQLiteLLMCache(path)
    [replayed] = reopened.lookup("prompt", "llm") or []
    assert isinstance(replayed, ChatGeneration)
    assert replayed.message.tool_calls[0]["args"] == {"item_id": "m1"}
    assert replayed.message.usage_metadata["output_tokens"] == 2
    assert reopened.lookup("prompt", "other llm") is None
    assert (cache.stats()["misses"], reopened.stats()["hits"], reopened.stats()["misses"]) == (1, 1, 1)
    assert len(reopened) == 1


def test_local_model_key_lists_every_sampling_field() -> None:
    base = LocalChatModel(model="tiny", temperature=0.7, seed=1)
    keys = {
        LocalChatModel(model="tiny", **change)._get_llm_string()
        for change in ({"temperature": 0.7, "seed": 1}, {"temperature": 0.9, "seed": 1},
                       {"temperature": 0.7, "seed": 2}, {"temperature": 0.7, "seed": 1, "max_new_tokens": 9},
                       {"temperature": 0.7, "seed": 1, "top_p": 0.5},
                       {"temperature": 0.7, "seed": 1, "stop": ["x"]})
    }  # fmt: skip
    assert len(keys) == 6 and base._get_llm_string() in keys


def test_concurrent_async_calls_share_one_cache(tmp_path: Path) -> None:
    cache = open_llm_cache(tmp_path / "llm.sqlite")
    prompts = [f"question {index}" for index in range(24)]

    async def ask(model: ScriptedChatModel) -> list[str]:
        answers = await asyncio.gather(*(model.ainvoke(prompt) for prompt in prompts))
        return [str(answer.content) for answer in answers]

    first = asyncio.run(ask(ScriptedChatModel(responses=lambda m: f"re: {m[-1].content}", cache=cache)))
    silent = ScriptedChatModel(responses=[], cache=cache)  # any call it has to answer raises
    assert asyncio.run(ask(silent)) == first == [f"re: {prompt}" for prompt in prompts]
    assert silent.calls == []


def _write_entries(path: str, writer: int) -> None:
    cache = SQLiteLLMCache(path)
    for index in range(40):
        message = AIMessage(content=f"writer {writer} answer {index}")
        cache.update(f"prompt {writer}-{index}", "llm", [ChatGeneration(message=message)])


def test_two_processes_write_the_same_file_without_losing_entries(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite")
    SQLiteLLMCache(path)  # create the schema once, as the first process of a batch would
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_entries, args=(path, writer)) for writer in (1, 2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    cache = SQLiteLLMCache(path)
    assert len(cache) == 80
    [answer] = cache.lookup("prompt 2-39", "llm") or []
    assert answer.text == "writer 2 answer 39"


def test_an_unusable_cache_path_is_a_clear_error(tmp_path: Path) -> None:
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("this is not a database, just text that is long enough to be read as a header")
    with pytest.raises(ValueError, match=r"--llm-cache .*notes.txt: cannot open it as an SQLite file"):
        open_llm_cache(not_sqlite)
