"""STAR behind the common :class:`~starrec.eval.recommender.Recommender` interface.

``starrec eval --method star --model DIR`` (in-process transformers, or ``--option backend=vllm``
to launch a vLLM server for the run) or ``--base-url URL`` (any OpenAI-compatible endpoint already
serving the student). Each request is answered as the student was trained: the teacher's hybrid
input (long-term summary from the long-sequence abstractor + the last chunk verbatim + candidates)
rendered by :mod:`starrec.distill.student_prompt` (the module the teacher's recorder uses), then
the single-pass loop of :mod:`starrec.serving.loop`. The abstractor runs on the same served model,
and its calls are counted apart from the chain's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from langchain_core.callbacks import get_usage_metadata_callback
from langchain_core.language_models import BaseChatModel

from starrec.data.schema import Dataset, RankRequest
from starrec.eval.methods import MethodOptions, config_with_overrides
from starrec.eval.recommender import BatchRecommender
from starrec.serving.backends import GenerationBackend, Message
from starrec.serving.loop import StarLoop, StarLoopConfig, StarResult
from starrec.tools.base import EvidenceSource


@dataclass(slots=True)
class StarOptions:
    """``--option key=value`` knobs of ``--method star`` (loop knobs: see :class:`StarLoopConfig`)."""

    backend: Literal["auto", "transformers", "vllm", "openai"] = field(
        default="auto",
        metadata={
            "help": "auto = openai when --base-url is given, else transformers in-process; vllm launches "
            "a vLLM server (.venv-vllm) for the run and stops it at exit."
        },
    )
    mode: Literal["chat", "completions"] = field(
        default="chat", metadata={"help": "Endpoint API: chat (continue_final_message) or completions."}
    )
    served_model_name: str = field(
        default="", metadata={"help": "Model name on the endpoint ('' = the only model it serves)."}
    )
    use_tools: bool = field(default=True, metadata={"help": "False: tool calls get an error (ablation)."})
    use_abstractor: bool = field(
        default=True,
        metadata={"help": "Summarise older history with the served model (the teacher's hybrid input)."},
    )
    chunk_size: int = field(default=10, metadata={"help": "Abstractor chunk size m (match the teacher)."})
    max_history: int = field(
        default=40, metadata={"help": "Behaviours the abstractor reads (match the teacher)."}
    )
    abstractor_max_tokens: int = field(default=256, metadata={"help": "Tokens per abstractor summary."})
    timeout_s: float = field(
        default=600.0,
        metadata={"help": "Per-request timeout: long chains at many concurrent streams are slow on CPU."},
    )
    dtype: str = field(
        default="bfloat16", metadata={"help": "Weights dtype (transformers and vllm backends)."}
    )
    prior: bool = field(
        default=True,
        metadata={
            "help": "Compute the candidate-CF prior per task: unparsed or partial <recommend> lists are "
            "completed in prior order (False: in the order shown), and fusion=agreement can use it."
        },
    )


def split_options(options: MethodOptions) -> tuple[StarOptions, StarLoopConfig]:
    """``MethodOptions`` -> (serving options, loop config); unknown ``--option`` keys are an error."""
    star_fields = {f.name for f in dataclasses.fields(StarOptions)}
    loop_fields = {f.name for f in dataclasses.fields(StarLoopConfig)}
    star_extra: dict[str, Any] = {}
    loop_extra: dict[str, Any] = {}
    for key, raw in options.extra.items():
        if key in star_fields:
            star_extra[key] = raw
        elif key in loop_fields:
            loop_extra[key] = raw
        else:
            valid = sorted((star_fields | loop_fields) - {"samples", "seed"})
            raise ValueError(f"unknown STAR option {key!r}; valid options: {', '.join(valid)}")
    star = config_with_overrides(StarOptions(), star_extra, label="STAR")
    loop = StarLoopConfig(samples=options.samples, seed=options.seed)
    return star, config_with_overrides(loop, loop_extra, label="STAR")


class StarRecommender(BatchRecommender):
    """Ranks with a distilled STAR student: abstractor preprocessing + one tool-using generation pass."""

    name = "star"

    def __init__(
        self,
        backend: GenerationBackend,
        config: StarLoopConfig,
        *,
        options: StarOptions | None = None,
        summary_model: BaseChatModel | None = None,
        evidence: EvidenceSource | None = None,
        concurrency: int = 1,
    ) -> None:
        self.backend = backend
        self.config = config
        self.options = options or StarOptions()
        self.summary_model = summary_model
        self.evidence = evidence
        self.concurrency = max(1, concurrency)
        self._chain_slots = threading.BoundedSemaphore(self.concurrency)
        """At most ``concurrency`` chains in flight in all, whatever ``samples`` is: k chains per task
        at ``concurrency`` tasks would put k x concurrency requests on the server and time them out."""
        self.train: Dataset | None = None
        self.loop: StarLoop | None = None
        self.results: dict[str, StarResult] = {}
        """Task id -> the chains behind its ranking (inspection, benchmarks)."""
        self._evidence_from_fit = False
        self.abstractor = {"llm_calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "seconds": 0.0}
        self._closers: list[Callable[[], Any]] = []

    def fit(self, train: Dataset) -> None:
        from starrec.graphs.recommender import evidence_for_training_view

        self.train = train
        self.results = {}
        wanted = self.options.use_tools or self.options.prior
        if self._evidence_from_fit or (self.evidence is None and wanted):
            # Built from this training view: a later fit (other tasks, other hidden answers) rebuilds it.
            self.evidence = evidence_for_training_view(train) if wanted else None
            self._evidence_from_fit = self.evidence is not None
        self.loop = StarLoop(self.backend, self.evidence if self.options.use_tools else None, self.config)

    def messages_for(self, request: RankRequest) -> list[Message]:
        """The student prompt for one request (same dict the teacher recorded in ``Trajectory.prompt``)."""
        from starrec.agents.abstractor import split_history
        from starrec.data.user_view import history_entries
        from starrec.distill.student_prompt import request_messages

        train = self._train()
        history = history_entries(request, train)
        if self.options.use_abstractor and self.summary_model is not None:
            summary, recent = self._abstract(history, train.domain)
        else:
            _, _, recent = split_history(history, self.options.chunk_size, self.options.max_history)
            summary = ""
        return request_messages(request, train, summary, recent, recommend_top=self.config.recommend_top)

    def _abstract(self, history: list[Any], domain: str) -> tuple[str, list[Any]]:
        from starrec.agents.abstractor import abstract
        from starrec.agents.env import AgentEnv, Counters

        assert self.summary_model is not None
        counters = Counters()
        started = time.perf_counter()
        env = AgentEnv(model=self.summary_model, domain=domain)
        with get_usage_metadata_callback() as usage:
            result = asyncio.run(
                abstract(env, history, self.options.chunk_size, self.options.max_history, counters)
            )
        totals = usage.usage_metadata.values()
        self.abstractor["llm_calls"] += counters.llm_calls
        self.abstractor["prompt_tokens"] += sum(int(u.get("input_tokens", 0)) for u in totals)
        self.abstractor["completion_tokens"] += sum(int(u.get("output_tokens", 0)) for u in totals)
        self.abstractor["seconds"] += time.perf_counter() - started
        return result.summary, result.recent

    def _train(self) -> Dataset:
        if self.train is None:
            raise RuntimeError("StarRecommender.fit(train) must run before ranking")
        return self.train

    def answer(self, request: RankRequest) -> StarResult:
        """Abstractor + k chains for one request; the result is kept in :attr:`results`."""
        loop = self.loop
        if loop is None:
            raise RuntimeError("StarRecommender.fit(train) must run before ranking")
        started = time.perf_counter()
        messages = self.messages_for(request)
        settings = loop.sample_settings()
        prior, prior_scores = self.prior_for(request)

        def sample(setting: tuple[float, int]) -> Any:
            with self._chain_slots:
                try:
                    return loop.run_sample(messages, request.candidates, *setting, prior)
                except Exception as error:  # one failed sample must not sink the other k - 1
                    return error

        with ThreadPoolExecutor(max_workers=len(settings)) as pool:
            outcomes = list(pool.map(sample, settings))
        chains = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                loop.stats.add_chain_error(outcome)
        if not chains:
            raise next(outcome for outcome in outcomes if isinstance(outcome, BaseException))
        result = loop.finish(chains, request.candidates, time.perf_counter() - started, prior, prior_scores)
        self.results[request.task_id] = result
        return result

    def prior_for(self, request: RankRequest) -> tuple[list[str] | None, dict[str, float] | None]:
        """The candidate-CF prior order and Item-CF scores of one request (None when off)."""
        if not self.options.prior or self.evidence is None:
            return None, None
        history = [event.item_id for event in request.history]
        prior = self.evidence.candidate_cf(request.user_id, request.candidates, history)
        return list(prior.order), {entry.id: entry.item_cf for entry in prior.scores}

    def prior_orders(self) -> dict[str, list[str]]:
        return {task_id: result.prior for task_id, result in self.results.items() if result.prior}

    def rank_batch(self, requests: Sequence[RankRequest]) -> list[Sequence[str] | BaseException]:
        def one(request: RankRequest) -> Sequence[str] | BaseException:
            try:
                return self.answer(request).ranking
            except Exception as error:  # isolated per task; the harness counts it
                return error

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(one, requests))

    def stats(self) -> dict[str, Any]:
        stats = self.loop.stats.as_dict() if self.loop else {}
        tasks = max(int(stats.get("tasks", 0)), 1)
        abstractor = dict(self.abstractor)
        stats["abstractor"] = abstractor
        stats["llm_calls_per_task_total"] = (stats.get("llm_calls", 0) + abstractor["llm_calls"]) / tasks
        stats["completion_tokens_per_task_total"] = (
            stats.get("completion_tokens", 0) + abstractor["completion_tokens"]
        ) / tasks
        stats["backend"] = self.backend.name
        stats["samples"] = self.config.samples
        stats["cost_usd"] = self.cost_usd(
            stats.get("prompt_tokens", 0) + abstractor["prompt_tokens"],
            stats.get("completion_tokens", 0) + abstractor["completion_tokens"],
        )
        stats["cost_usd_per_task"] = None if stats["cost_usd"] is None else stats["cost_usd"] / tasks
        return stats

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """Dollars for these tokens on this backend (0 in-process or self-hosted; None if unpriced)."""
        from starrec.llm.usage import ModelIdentity, call_cost
        from starrec.serving.backends import OpenAIBackend

        if isinstance(self.backend, OpenAIBackend):
            identity = ModelIdentity(self.backend.model, base_url=str(self.backend.client.base_url))
        else:
            identity = ModelIdentity(self.backend.name, local=True)
        return call_cost(identity, prompt_tokens, completion_tokens)

    def on_close(self, closer: Callable[[], Any]) -> None:
        """Run ``closer`` (e.g. stop a server this recommender launched) at :meth:`close` or exit."""
        self._closers.append(closer)
        weakref.finalize(self, closer)

    def close(self) -> None:
        while self._closers:
            self._closers.pop()()


def summary_chat_model(backend: GenerationBackend, options: StarOptions, seed: int) -> BaseChatModel:
    """A LangChain chat model on the same model as ``backend`` (for the abstractor)."""
    from starrec.llm.spec import LLMSpec, make_chat_model
    from starrec.serving.backends import OpenAIBackend, TransformersBackend

    common = {"temperature": 0.0, "max_tokens": options.abstractor_max_tokens, "seed": seed}
    if isinstance(backend, OpenAIBackend):
        spec = LLMSpec(
            backend="openai", model=backend.model, base_url=str(backend.client.base_url),
            structured_method="text", supports_tool_calling=False, supports_structured_output=False, **common,
        )  # fmt: skip
    elif isinstance(backend, TransformersBackend):
        spec = LLMSpec(backend="local", model=str(backend.model_dir), dtype=options.dtype, **common)
    else:
        raise TypeError(f"no abstractor chat model for backend {backend.name}")
    return make_chat_model(spec)


def make_star(options: MethodOptions) -> StarRecommender:
    """Factory for ``starrec eval --method star`` (see :data:`starrec.eval.methods.METHOD_FACTORIES`)."""
    from starrec.serving.backends import OpenAIBackend, TransformersBackend

    if options.llm_cache:
        raise ValueError(
            "--llm-cache applies to MARS's LangChain chat models; STAR generates through its own serving "
            "backend, which is not cached (drop --llm-cache)"
        )
    star, config = split_options(options)
    kind = star.backend
    if kind == "auto":
        kind = "openai" if options.base_url else "transformers"
    closers: list[Callable[[], Any]] = []
    backend: GenerationBackend
    if kind in {"openai", "vllm"}:
        base_url = options.base_url
        tokenizer = None
        if kind == "vllm":
            base_url, stop = launch_vllm(options.model, star)
            closers.append(stop)
        if not base_url:
            raise ValueError("STAR backend 'openai' needs --base-url (an OpenAI-compatible endpoint)")
        if star.mode == "completions":
            tokenizer = _tokenizer_for(options.model)
        backend = OpenAIBackend(
            base_url,
            star.served_model_name or None,
            mode=star.mode,
            tokenizer=tokenizer,
            timeout_s=star.timeout_s,
        )
    elif kind == "transformers":
        if not options.model:
            raise ValueError("STAR needs --model DIR (a trained student folder) or --base-url URL")
        backend = TransformersBackend(options.model, dtype=star.dtype)
    else:
        raise ValueError(f"unknown STAR backend {kind!r}; choose auto, transformers, vllm or openai")
    summary = summary_chat_model(backend, star, options.seed) if star.use_abstractor else None
    recommender = StarRecommender(
        backend, config, options=star, summary_model=summary, concurrency=options.concurrency
    )
    for closer in closers:
        recommender.on_close(closer)
    return recommender


def _tokenizer_for(model: str | None) -> Any:
    if not model:
        raise ValueError("STAR mode=completions needs --model DIR too (its tokenizer renders the prompt)")
    from transformers import AutoTokenizer

    from starrec.llm.local import resolve_model_dir

    return AutoTokenizer.from_pretrained(resolve_model_dir(model))


def launch_vllm(model: str | None, star: StarOptions) -> tuple[str, Callable[[], Any]]:
    """Start a vLLM server for ``model`` and return (base URL, stop function)."""
    from starrec.llm.local import resolve_model_dir
    from starrec.serving.server import VLLMServer, VLLMServerConfig

    if not model:
        raise ValueError("STAR backend 'vllm' needs --model DIR (the folder to serve)")
    name = star.served_model_name or "star"
    server = VLLMServer(VLLMServerConfig(model_dir=Path(resolve_model_dir(model)), served_model_name=name))
    server.__enter__()
    star.served_model_name = name
    return server.base_url, server.stop
