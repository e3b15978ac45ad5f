"""The STAR loop against a scripted OpenAI-compatible server on loopback (real HTTP, no model)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from starrec.distill.chain import tool_response_block
from starrec.serving.backends import OpenAIBackend
from starrec.serving.loop import (
    StarChain,
    StarLoop,
    StarLoopConfig,
    aggregate_rankings,
    open_tool_call,
)
from starrec.tools.base import CFResult
from starrec.tools.candidate_cf import CandidateCFResult, CandidateScore

CANDIDATES = [f"c{index}" for index in range(1, 21)]
MESSAGES = [{"role": "system", "content": "You are STAR."}, {"role": "user", "content": "rank them"}]
TOOL_CALL = '<tool_call>{"name": "item_cf", "arguments": {"item_id": "i7"}}'
FINAL = (
    '\n{"interests": ["action"]}\n</historical_analysis>\n'
    '<reflection>\nfine {"passed": true}\n</reflection>\n'
    "<recommend>\nbest first\n"
    + json.dumps(["c3", "c1", *[c for c in CANDIDATES if c not in {"c3", "c1"}]])
    + "\n</recommend>"
)
OPENING = '<plan>\nlook at history {"agents": ["historical_interest"]}\n</plan>\n<historical_analysis>\n'

Script = Callable[[dict[str, Any]], "str | tuple[str, str]"]


class ScriptedServer:
    """A minimal OpenAI-compatible server: ``script(request_body) -> completion text`` (or ``(text,
    finish_reason)``; default "stop"); a completion token is a word. Records requests."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[dict[str, Any]] = []
        handler = self._handler()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send({"object": "list", "data": [{"id": "star", "object": "model"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                answer = server.script(body)
                text, finish = answer if isinstance(answer, tuple) else (answer, "stop")
                stop = next((s for s in body.get("stop") or [] if s in text), None)
                if stop:  # like vLLM: cut at the stop string, drop it
                    text = text[: text.index(stop)]
                usage = {"prompt_tokens": 100, "completion_tokens": len(text.split()), "total_tokens": 0}
                choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
                if self.path.endswith("/chat/completions"):
                    choice["message"] = {"role": "assistant", "content": text}
                    kind = "chat.completion"
                else:
                    choice["text"] = text
                    kind = "text_completion"
                self._send(
                    {
                        "id": "x",
                        "object": kind,
                        "created": 0,
                        "model": "star",
                        "choices": [choice],
                        "usage": usage,
                    }
                )

        return Handler

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class RecordingEvidence:
    """An EvidenceSource that answers with a recognisable sentence and remembers the anchors."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.prior_calls: list[str] = []

    def candidate_cf(
        self, user_id: str, candidates: Any, history: Any = None, k: int | None = None
    ) -> CandidateCFResult:
        """A recognisable prior: the candidates in reverse order of their ids."""
        self.prior_calls.append(user_id)
        order = sorted(candidates, reverse=True)
        scores = [
            CandidateScore(id=item, item_cf=float(len(order) - i), user_cf=0, popularity=0, line="")
            for i, item in enumerate(order)
        ]
        return CandidateCFResult(
            user=user_id, anchors=[], neighbours=0, scores=scores, order=order, evidence="prior"
        )

    def item_cf(self, item_id: str, k: int = 10) -> CFResult:
        self.calls.append(("item_cf", item_id))
        return CFResult(
            tool="item_cf", anchor=item_id, found=True, evidence=f"fans of {item_id} also liked c3"
        )

    def user_cf(self, user_id: str, k: int = 10) -> CFResult:
        self.calls.append(("user_cf", user_id))
        return CFResult(tool="user_cf", anchor=user_id, found=True, evidence=f"users like {user_id} liked c1")


def prefix_of(request: dict[str, Any]) -> str:
    """The assistant text the loop asked the server to continue ('' on the first segment)."""
    last = request["messages"][-1]
    return last["content"] if last["role"] == "assistant" else ""


@pytest.fixture
def evidence() -> RecordingEvidence:
    return RecordingEvidence()


@contextmanager
def serve(script: Script) -> Iterator[tuple[ScriptedServer, OpenAIBackend]]:
    with ScriptedServer(script) as server:
        yield server, OpenAIBackend(server.base_url, max_retries=0)


def test_tool_call_is_executed_and_its_response_inserted(evidence: RecordingEvidence) -> None:
    def script(request: dict[str, Any]) -> str:
        return OPENING + TOOL_CALL + "</tool_call>" if not prefix_of(request) else FINAL

    with serve(script) as (server, backend):
        loop = StarLoop(backend, evidence, StarLoopConfig())
        result = loop.answer(MESSAGES, CANDIDATES)
        assert evidence.calls == [("item_cf", "i7")]
        inserted = tool_response_block("fans of i7 also liked c3")
        assert "<tool_response>" in inserted and "fans of i7 also liked c3" in inserted
        second = server.requests[1]
        assert second["continue_final_message"] is True and second["add_generation_prompt"] is False
        assert second["stop"] == ["</tool_call>"]
        assert prefix_of(second) == (
            OPENING + TOOL_CALL + "</tool_call>" + tool_response_block("fans of i7 also liked c3")
        )
        chain = result.chains[0]
        assert chain.completion == prefix_of(second) + FINAL
        assert result.ranking[:2] == ["c3", "c1"] and sorted(result.ranking) == sorted(CANDIDATES)
        assert not chain.repair.needed and not chain.format_errors
        stats = loop.stats.as_dict()
        assert (stats["llm_calls"], stats["tool_calls"], stats["tool_errors"]) == (2, 1, 0)
        assert stats["prompt_tokens"] == 200 and stats["rankings_repaired"] == 0


def test_tool_calls_are_bounded(evidence: RecordingEvidence) -> None:
    with serve(lambda request: "<historical_analysis>\n" + TOOL_CALL + "</tool_call>") as (server, backend):
        loop = StarLoop(backend, evidence, StarLoopConfig(max_tool_calls=2))
        result = loop.answer(MESSAGES, CANDIDATES)
        chain = result.chains[0]
        assert len(evidence.calls) == 2 and len(chain.tool_calls) == 2
        # 2 executed + 1 refused + 1 grace segment, then the forced ranking
        assert chain.llm_calls == len(server.requests) == 5
        assert chain.tool_limit_hits == 2 and chain.truncated and chain.forced
        assert "Tool-call limit reached (2 per answer)" in chain.completion
        assert server.requests[-1]["stop"] == ["</recommend>"]
        assert prefix_of(server.requests[-1]).endswith("</historical_analysis>\n<recommend>\n")
        stats = loop.stats.as_dict()
        assert stats["tool_limit_hits"] == 2 and stats["truncated_chains"] == 1
        assert stats["forced_endings"] == 1 and stats["unforced_recommend_share"] == 0.0
        assert stats["unparsed_chains"] == 1 and stats["repairs"]["missing"] == 20


def test_unparseable_answer_is_repaired_and_counted(evidence: RecordingEvidence) -> None:
    with serve(lambda request: "I would watch something nice.") as (_, backend):
        loop = StarLoop(backend, evidence, StarLoopConfig())
        result = loop.answer(MESSAGES, CANDIDATES)
        assert result.ranking == CANDIDATES  # repair appends everything in the presented order
        stats = loop.stats.as_dict()
        assert stats["unparsed_chains"] == 1 and stats["format_invalid_chains"] == 1
        assert stats["rankings_repaired"] == 1 and stats["repairs"] == {
            "hallucinated": 0, "duplicates": 0, "missing": 20,
        }  # fmt: skip


def test_a_chain_that_never_closes_is_completed_in_prior_order(evidence: RecordingEvidence) -> None:
    prior = list(reversed(CANDIDATES))
    rambling = "<plan>\nthinking about films, films, films"
    with serve(lambda request: rambling) as (_, backend):
        loop = StarLoop(backend, evidence, StarLoopConfig())
        result = loop.answer(MESSAGES, CANDIDATES, prior)
        assert result.ranking == prior and result.prior == prior
        assert loop.stats.as_dict()["unparsed_chains"] == 1


def test_a_recommend_cut_twice_keeps_its_ids_then_follows_the_prior(evidence: RecordingEvidence) -> None:
    """The model opened <recommend> itself: the reserve continues it (no forcing); the reserve runs out
    too, so the list stays cut, its last (maybe partial) id is not trusted, the prior completes it."""
    prior = list(reversed(CANDIDATES))
    opened = '<plan>\np {"agents": []}\n</plan>\n<recommend>\n["c3", '

    def script(request: dict[str, Any]) -> tuple[str, str]:
        return (opened, "length") if not prefix_of(request) else ('"c7", "c1', "length")

    with serve(script) as (server, backend):
        loop = StarLoop(backend, evidence, StarLoopConfig(max_completion_tokens=60, recommend_reserve=20))
        result = loop.answer(MESSAGES, CANDIDATES, prior)
        assert result.ranking[:2] == ["c3", "c7"]
        assert result.ranking[2:] == [item for item in prior if item not in {"c3", "c7"}]
        assert [request["max_tokens"] for request in server.requests] == [40, 60 - len(opened.split())]
        assert prefix_of(server.requests[1]) == opened  # continued as it was, nothing inserted
        chain = result.chains[0]
        assert chain.truncated and not chain.forced
        assert loop.stats.as_dict()["unforced_recommend_share"] == 1.0


def test_a_chain_out_of_thinking_budget_is_closed_and_forced_to_rank(evidence: RecordingEvidence) -> None:
    prior = list(reversed(CANDIDATES))
    rambling = (
        '<plan>\np {"agents": ["historical_interest"]}\n</plan>\n<historical_analysis>\n' + "films " * 50
    )

    def script(request: dict[str, Any]) -> tuple[str, str]:
        if not prefix_of(request):
            return rambling, "length"
        return '["c3","c7"]\n</recommend>', "stop"  # the server cuts at the stop string

    with serve(script) as (server, backend):
        config = StarLoopConfig(max_completion_tokens=80, recommend_reserve=20)
        loop = StarLoop(backend, evidence, config)
        result = loop.answer(MESSAGES, CANDIDATES, prior)
        first, forced = server.requests
        assert first["max_tokens"] == 60 and first["stop"] == ["</tool_call>"]
        assert forced["stop"] == ["</recommend>"] and forced["max_tokens"] == 80 - len(rambling.split())
        assert prefix_of(forced) == rambling + "</historical_analysis>\n<recommend>\n"
        chain = result.chains[0]
        assert chain.forced and chain.truncated and chain.format_errors == []
        assert chain.completion.endswith('<recommend>\n["c3","c7"]\n</recommend>')
        assert result.ranking[:2] == ["c3", "c7"]
        assert result.ranking[2:] == [item for item in prior if item not in {"c3", "c7"}]
        stats = loop.stats.as_dict()
        assert stats["forced_endings"] == 1 and stats["unforced_recommend_share"] == 0.0


def test_a_turn_ended_before_recommend_is_forced_too(evidence: RecordingEvidence) -> None:
    def script(request: dict[str, Any]) -> str:
        return '<plan>\np {"agents": []}\n</plan>' if not prefix_of(request) else '["c5"]'

    with serve(script) as (server, backend):
        loop = StarLoop(backend, evidence, StarLoopConfig())
        result = loop.answer(MESSAGES, CANDIDATES)
        assert prefix_of(server.requests[1]) == '<plan>\np {"agents": []}\n</plan>\n<recommend>\n'
        chain = result.chains[0]
        assert chain.forced and not chain.truncated and chain.parsed == ["c5"]
        assert chain.completion.endswith("</recommend>") and chain.format_errors == []


def test_a_finished_chain_is_not_forced(evidence: RecordingEvidence) -> None:
    answer = '<plan>\np {"agents": []}\n</plan>\n<recommend>\n["c2","c4"]\n</recommend>'
    with serve(lambda request: answer) as (server, backend):
        loop = StarLoop(backend, evidence, StarLoopConfig())
        result = loop.answer(MESSAGES, CANDIDATES)
        assert len(server.requests) == 1 and not result.chains[0].forced
        assert result.ranking[:2] == ["c2", "c4"]
        assert loop.stats.as_dict()["unforced_recommend_share"] == 1.0


def test_tool_responses_do_not_count_against_the_generated_budget() -> None:
    """Each segment's budget is what is left of max_completion_tokens minus the words generated so
    far: the long evidence inserted between them is not charged."""

    class LongEvidence(RecordingEvidence):
        def item_cf(self, item_id: str, k: int = 10) -> CFResult:
            return CFResult(tool="item_cf", anchor=item_id, found=True, evidence="evidence " * 500)

    def script(request: dict[str, Any]) -> str:
        return OPENING + TOOL_CALL + "</tool_call>" if not prefix_of(request) else FINAL

    with serve(script) as (server, backend):
        config = StarLoopConfig(max_completion_tokens=200, recommend_reserve=40)
        result = StarLoop(backend, LongEvidence(), config).answer(MESSAGES, CANDIDATES)
        generated = len((OPENING + TOOL_CALL).split())
        assert [request["max_tokens"] for request in server.requests] == [160, 160 - generated]
        assert not result.chains[0].forced and result.ranking[:2] == ["c3", "c1"]


def test_loop_config_rejects_a_reserve_that_leaves_no_room() -> None:
    assert StarLoopConfig().reserve == 68  # enough for 10 ids
    assert StarLoopConfig(recommend_top=20).reserve == 128
    with pytest.raises(ValueError, match="below max_completion_tokens"):
        StarLoopConfig(max_completion_tokens=64)


def test_agreement_fusion_option_leaves_the_prior_for_an_uninformative_student(
    evidence: RecordingEvidence,
) -> None:
    prior = list(reversed(CANDIDATES))
    echo = '<plan>\np {"agents": []}\n</plan>\n<recommend>\n' + json.dumps(CANDIDATES) + "\n</recommend>"
    with serve(lambda request: echo) as (_, backend):
        pure = StarLoop(backend, evidence, StarLoopConfig()).answer(MESSAGES, CANDIDATES, prior)
        fusing = StarLoop(backend, evidence, StarLoopConfig(fusion="agreement"))
        fused = fusing.answer(MESSAGES, CANDIDATES, prior)
    assert pure.ranking == CANDIDATES  # the student's own order, as the paper scores it
    assert fused.ranking == prior and fused.fusion["weight"] == 0.0  # the reverse of the prior: no agreement


def test_hallucinated_and_repeated_ids_are_repaired_and_counted(evidence: RecordingEvidence) -> None:
    answer = '<plan>\np {"agents": []}\n</plan>\n<recommend>\n["c5", "c5", "zz9", "c2"]\n</recommend>'
    with serve(lambda request: answer) as (_, backend):
        loop = StarLoop(backend, evidence, StarLoopConfig())
        result = loop.answer(MESSAGES, CANDIDATES)
        assert result.ranking[:2] == ["c5", "c2"] and len(result.ranking) == 20
        assert result.chains[0].repair.counts() == {"hallucinated": 1, "duplicates": 1, "missing": 18}
        assert loop.stats.as_dict()["repairs"] == {"hallucinated": 1, "duplicates": 1, "missing": 18}


def test_invalid_tool_call_gets_an_error_response(evidence: RecordingEvidence) -> None:
    def script(request: dict[str, Any]) -> str:
        if not prefix_of(request):
            return '<historical_analysis>\n<tool_call>{"name": "item_cf", "arguments": {"id": 3}}</tool_call>'
        return FINAL

    with serve(script) as (server, backend):
        loop = StarLoop(backend, evidence, StarLoopConfig())
        loop.answer(MESSAGES, CANDIDATES)
        assert evidence.calls == []
        assert "error: bad arguments for item_cf (item_id: Field required)" in prefix_of(server.requests[1])
        assert loop.stats.as_dict()["tool_errors"] == 1


def test_best_of_k_sends_k_seeded_samples_and_fuses_them(evidence: RecordingEvidence) -> None:
    orders = {
        0: ["c2", "c1", "c3"],
        1: ["c1", "c2", "c3"],
        2: ["c1", "c3", "c2"],
    }

    def script(request: dict[str, Any]) -> str:
        return "<recommend>\n" + json.dumps(orders[request["seed"]]) + "\n</recommend>"

    with serve(script) as (server, backend):
        loop = StarLoop(backend, evidence, StarLoopConfig(samples=3, seed=0))
        result = loop.answer(MESSAGES, CANDIDATES)
        assert sorted(request["seed"] for request in server.requests) == [0, 1, 2]
        assert {request["temperature"] for request in server.requests} == {0.7}
        # Borda over 20 slots: c1 = 19 + 20 + 20, c2 = 20 + 19 + 18, c3 = 18 + 18 + 19.
        assert result.ranking[:3] == ["c1", "c2", "c3"]
        assert result.ranking[3:] == [c for c in CANDIDATES if c not in {"c1", "c2", "c3"}]
        assert loop.stats.as_dict()["chains"] == 3


def chain_of(model_ranked: list[str], candidates: list[str]) -> StarChain:
    from starrec.eval.repair import repair_ranking

    chain = StarChain(parsed=model_ranked)
    chain.ranking, chain.repair = repair_ranking(model_ranked, candidates)
    return chain


def test_aggregate_rankings_borda_with_first_sample_tie_break() -> None:
    candidates = ["a", "b", "c", "d"]
    chains = [chain_of(["b", "a"], candidates), chain_of(["a", "b"], candidates), chain_of([], candidates)]
    # a = 3 + 4, b = 4 + 3: tie broken by the first chain's order (b first); the empty chain votes for none.
    assert aggregate_rankings(chains, candidates) == ["b", "a", "c", "d"]
    assert aggregate_rankings([chain_of(["d", "c", "b", "a"], candidates)], candidates) == [
        "d",
        "c",
        "b",
        "a",
    ]
    with pytest.raises(ValueError, match="at least one chain"):
        aggregate_rankings([], candidates)


def test_open_tool_call_detects_only_unclosed_calls() -> None:
    assert open_tool_call('x <tool_call>{"a": 1}') == '{"a": 1}'
    assert open_tool_call("<tool_call>{}</tool_call> done") is None
    assert open_tool_call("no call") is None


def test_completions_mode_renders_the_chat_template(evidence: RecordingEvidence) -> None:
    class Template:
        def apply_chat_template(self, messages: list[dict[str, str]], **kwargs: Any) -> str:
            assert kwargs == {"tokenize": False, "add_generation_prompt": True}
            return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    def script(request: dict[str, Any]) -> str:
        return OPENING + TOOL_CALL + "</tool_call>" if request["prompt"].endswith("<assistant>") else FINAL

    with ScriptedServer(script) as server:
        backend = OpenAIBackend(
            server.base_url, "star", mode="completions", tokenizer=Template(), max_retries=0
        )
        result = StarLoop(backend, evidence, StarLoopConfig()).answer(MESSAGES, CANDIDATES)
        assert server.requests[1]["prompt"].startswith(
            "<system>You are STAR.<user>rank them<assistant><plan>"
        )
        assert (
            "</tool_call>" + tool_response_block("fans of i7 also liked c3") in server.requests[1]["prompt"]
        )
        assert result.ranking[:2] == ["c3", "c1"]


def test_a_cut_off_recommend_reads_the_list_not_the_thinking_or_tool_text() -> None:
    from starrec.distill.chain import partial_ranking

    candidates = ["172", "50", "3", "31"]
    body = 'I put 50 above 172 because 31 is old.\n["172", "50", "3'
    assert partial_ranking(body, candidates) == ["172", "50"]
    tool_text = '<tool_call>{"name": "candidate_cf"}</tool_call><tool_response>- [31] x\n- [3] y'
    assert partial_ranking(tool_text + '</tool_response>\n["50", "172"', candidates) == ["50", "172"]
    assert partial_ranking(tool_text + '</tool_response>\n["50", "17', candidates) == ["50"]
    assert partial_ranking('["3", "31"\n', candidates) == ["3", "31"]
