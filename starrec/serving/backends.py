"""Text generators the STAR loop drives: any OpenAI-compatible endpoint, or transformers in-process.

The loop needs one operation: *continue this assistant turn* (system + user messages, plus the
assistant text generated so far with tool responses spliced in) until a stop string or the end of
turn. The student was trained on one assistant message that contains its own ``<tool_call>`` and
``<tool_response>`` blocks, so continuing the same message (not adding ``tool`` role messages)
keeps serving identical to training.

- :class:`OpenAIBackend` in ``chat`` mode sends the partial assistant message with vLLM's
  ``continue_final_message=True, add_generation_prompt=False`` (llama.cpp's server treats a
  trailing assistant message as a prefill the same way); in ``completions`` mode it renders the
  chat template locally with the model's tokenizer and calls ``/v1/completions``.
- :class:`TransformersBackend` runs ``generate`` in this process (the fallback when no server is up).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

Message = dict[str, str]


@dataclass(frozen=True, slots=True)
class Generation:
    """One generation call's text (stop string excluded) and its token counts."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    """"stop" (stop string or end of turn) or "length" (token budget hit)."""
    seconds: float = 0.0


class GenerationBackend(Protocol):
    """Continue an assistant turn; implementations must be safe to call from several threads."""

    name: str

    def generate(
        self,
        messages: list[Message],
        assistant_prefix: str,
        *,
        stop: list[str],
        max_tokens: int,
        temperature: float,
        seed: int | None,
    ) -> Generation: ...


def strip_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """Cut ``text`` before the first stop string; True when one was found."""
    cut = min((index for index in (text.find(s) for s in stop) if index >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class OpenAIBackend:
    """Any OpenAI-compatible server (vLLM, llama.cpp server, hosted APIs)."""

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        mode: str = "chat",
        tokenizer: Any = None,
        timeout_s: float = 120.0,
        max_retries: int = 3,
    ) -> None:
        from openai import OpenAI

        if mode not in {"chat", "completions"}:
            raise ValueError(f"OpenAIBackend mode must be 'chat' or 'completions', got {mode!r}")
        if mode == "completions" and tokenizer is None:
            raise ValueError("OpenAIBackend(mode='completions') needs a tokenizer to render prompts")
        self.client = OpenAI(
            base_url=base_url, api_key=api_key or "not-needed", timeout=timeout_s, max_retries=max_retries
        )
        self.mode = mode
        self.tokenizer = tokenizer
        self.model = model or self._only_served_model(base_url)
        self.name = f"openai:{self.model}@{base_url}"

    def _only_served_model(self, base_url: str) -> str:
        served = [entry.id for entry in self.client.models.list().data]
        if len(served) != 1:
            raise ValueError(f"{base_url} serves {served or 'no models'}; pass the model name explicitly")
        return served[0]

    def generate(
        self,
        messages: list[Message],
        assistant_prefix: str,
        *,
        stop: list[str],
        max_tokens: int,
        temperature: float,
        seed: int | None,
    ) -> Generation:
        started = time.perf_counter()
        if self.mode == "chat":
            response = self._chat(messages, assistant_prefix, stop, max_tokens, temperature, seed)
            choice = response.choices[0]
            text = choice.message.content or ""
        else:
            prompt = render_prompt(self.tokenizer, messages, assistant_prefix)
            response = self.client.completions.create(
                model=self.model, prompt=prompt, stop=stop, max_tokens=max_tokens,
                temperature=temperature, seed=seed,
            )  # fmt: skip
            choice = response.choices[0]
            text = choice.text or ""
        # Servers drop the matched stop string; some (or a custom stop handling) keep it.
        text, _ = strip_at_stop(text, stop)
        usage = response.usage
        return Generation(
            text=text,
            prompt_tokens=int(usage.prompt_tokens) if usage else 0,
            completion_tokens=int(usage.completion_tokens) if usage else 0,
            finish_reason=str(choice.finish_reason or "stop"),
            seconds=time.perf_counter() - started,
        )

    def _chat(
        self,
        messages: list[Message],
        assistant_prefix: str,
        stop: list[str],
        max_tokens: int,
        temperature: float,
        seed: int | None,
    ) -> Any:
        request_messages: list[Any] = list(messages)
        extra_body: dict[str, Any] = {}
        if assistant_prefix:
            request_messages.append({"role": "assistant", "content": assistant_prefix})
            extra_body = {"continue_final_message": True, "add_generation_prompt": False}
        return self.client.chat.completions.create(
            model=self.model, messages=request_messages, stop=stop, max_tokens=max_tokens,
            temperature=temperature, seed=seed, extra_body=extra_body or None,
        )  # fmt: skip


def render_prompt(tokenizer: Any, messages: list[Message], assistant_prefix: str) -> str:
    """The chat template applied to the conversation, opened for the assistant, plus its partial text."""
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return str(prompt) + assistant_prefix


class TransformersBackend:
    """In-process ``generate`` with a HF model folder: no server needed, one request at a time.

    Weights come from :func:`starrec.llm.local.load_local_model`, so a local chat model on the same
    folder (the abstractor's) shares them and their lock.
    """

    def __init__(self, model: str | Path, *, dtype: str = "bfloat16", threads: int | None = None) -> None:
        from starrec.llm.local import load_local_model

        if threads:
            import torch

            torch.set_num_threads(threads)
        loaded = load_local_model(str(model), dtype)
        self.model, self.tokenizer, self.model_dir = loaded.model, loaded.tokenizer, loaded.path
        self._lock = loaded.lock
        self.name = f"transformers:{self.model_dir}"

    def generate(
        self,
        messages: list[Message],
        assistant_prefix: str,
        *,
        stop: list[str],
        max_tokens: int,
        temperature: float,
        seed: int | None,
    ) -> Generation:
        import torch

        started = time.perf_counter()
        prompt = render_prompt(self.tokenizer, messages, assistant_prefix)
        inputs = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        sampling: dict[str, Any] = {"do_sample": False}
        if temperature > 0:
            sampling = {"do_sample": True, "temperature": temperature, "top_p": 1.0}
        with self._lock, torch.inference_mode():
            if seed is not None:
                torch.manual_seed(seed)
            output = self.model.generate(
                **inputs, max_new_tokens=max_tokens, stop_strings=stop, tokenizer=self.tokenizer,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id, **sampling,
            )  # fmt: skip
        new_tokens = output[0, inputs["input_ids"].shape[1] :]
        text, stopped = strip_at_stop(self.tokenizer.decode(new_tokens, skip_special_tokens=True), stop)
        ended = bool(len(new_tokens)) and int(new_tokens[-1]) == self.tokenizer.eos_token_id
        finish = "stop" if stopped or ended or len(new_tokens) < max_tokens else "length"
        return Generation(
            text=text,
            prompt_tokens=int(inputs["input_ids"].shape[1]),
            completion_tokens=len(new_tokens),
            finish_reason=finish,
            seconds=time.perf_counter() - started,
        )
