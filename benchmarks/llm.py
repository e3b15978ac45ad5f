"""SmolLM2-135M-Instruct on this machine: dequantise, load, prompt and generation throughput.

Measures the one-off GGUF -> HF conversion (into a throw-away cache), the reload of the cached
folder, then for each dtype x thread count: prompt processing (prefill) tokens/s on a long chat prompt
and generation tokens/s (greedy, a fixed number of new tokens), best of ``--repeats``; finally one
``LocalChatModel`` chat call as the backends see it. The load average is recorded beside the numbers
because the 2 cores are shared. Writes ``benchmarks/results/llm.{json,md,png}``.

    python benchmarks/llm.py [--new-tokens 32] [--prompt-tokens 1000] [--threads 1,2] [--skip-dequantise]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from starrec.llm import LocalChatModel
from starrec.llm.local import generation_threads, load_local_model
from starrec.llm.smollm2 import smollm2_model_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
console = Console(stderr=True)

FILLER = (
    "The user watched Star Wars (1977), then The Empire Strikes Back, Raiders of the Lost Ark, "
    "Fargo, Pulp Fiction and Toy Story, rating most of them 4 or 5 stars. "
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--new-tokens", type=int, default=32, help="Tokens generated per measurement.")
    parser.add_argument("--prompt-tokens", type=int, default=1000, help="Approximate prompt length.")
    parser.add_argument("--threads", default="1,2", help="Comma-separated torch thread counts.")
    parser.add_argument("--dtypes", default="bfloat16,float32", help="Comma-separated weight dtypes.")
    parser.add_argument("--repeats", type=int, default=2, help="Best of this many runs per cell.")
    parser.add_argument("--skip-dequantise", action="store_true", help="Do not time a fresh GGUF conversion.")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="Where the json/md/png go.")
    args = parser.parse_args(argv)
    args.threads = [int(value) for value in args.threads.split(",") if value.strip()]
    args.dtypes = [value.strip() for value in args.dtypes.split(",") if value.strip()]
    return args


def time_dequantise() -> float:
    """Seconds for GGUF -> bf16 safetensors into an empty cache (what a fresh machine pays once)."""
    with tempfile.TemporaryDirectory(prefix="starrec-llm-bench-") as cache:
        previous = os.environ.get("STARREC_CACHE_DIR")
        os.environ["STARREC_CACHE_DIR"] = cache
        try:
            started = time.perf_counter()
            smollm2_model_dir()
            return time.perf_counter() - started
        finally:
            if previous is None:
                os.environ.pop("STARREC_CACHE_DIR")
            else:
                os.environ["STARREC_CACHE_DIR"] = previous


def chat_prompt_ids(tokenizer: Any, prompt_tokens: int) -> torch.Tensor:
    history = FILLER * max(1, prompt_tokens // len(tokenizer(FILLER)["input_ids"]))
    turns = [
        {"role": "system", "content": "You are a movie recommender."},
        {"role": "user", "content": f"{history}\nSummarise this user's taste in two sentences."},
    ]
    text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]


def measure_cell(model: Any, input_ids: torch.Tensor, new_tokens: int, repeats: int) -> dict[str, float]:
    """Best-of prefill tok/s (one forward pass) and generation tok/s (decode steps only)."""
    prefill_seconds, total_seconds = [], []
    with torch.inference_mode():
        for _ in range(repeats):
            started = time.perf_counter()
            model(input_ids)
            prefill_seconds.append(time.perf_counter() - started)
            started = time.perf_counter()
            model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=2,
            )
            total_seconds.append(time.perf_counter() - started)
    prefill = min(prefill_seconds)
    decode = max(min(total_seconds) - prefill, 1e-9)
    return {
        "prompt_tokens": int(input_ids.shape[1]),
        "prefill_seconds": prefill,
        "prompt_tokens_per_second": input_ids.shape[1] / prefill,
        "generation_tokens_per_second": (new_tokens - 1) / decode,
    }


def chat_call() -> dict[str, Any]:
    """One chat call as MARS makes it (threads chosen automatically by ``generation_threads``)."""
    threads = generation_threads(torch.get_num_threads())
    model = LocalChatModel(model="smollm2", max_new_tokens=48)
    message = model.invoke(
        [("system", "You are a helpful assistant."), ("user", "What is the capital of France?")]
    )
    return {
        "reply": message.content,
        "threads": threads,
        **{
            key: message.response_metadata[key]
            for key in ("prompt_tokens", "completion_tokens", "seconds", "tokens_per_second")
        },
    }


def write_results(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "llm.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# SmolLM2-135M-Instruct on CPU (`python benchmarks/llm.py`)",
        "",
        f"Machine: {results['machine']}. Load average during the run: {results['load_average_before']} → "
        f"{results['load_average_after']} (the 2 cores are shared; numbers fall sharply under load).",
        "",
    ]
    if results.get("dequantise_seconds") is not None:
        lines.append(
            f"- GGUF (Q4_1) → bf16 safetensors, once per cache: **{results['dequantise_seconds']:.1f} s**"
        )
    lines.append(f"- Reload of the cached folder: **{results['load_seconds']:.1f} s**")
    chat = results["chat_call"]
    lines += [
        f"- One `LocalChatModel` chat call (auto threads = {chat['threads']}): {chat['completion_tokens']} "
        f"tokens in {chat['seconds']:.2f} s ({chat['tokens_per_second']:.1f} tok/s): {chat['reply']!r}",
        "",
        "| dtype | threads | prompt tokens | prompt tok/s | generation tok/s |",
        "|---|---|---|---|---|",
    ]
    for cell in results["cells"]:
        lines.append(
            f"| {cell['dtype']} | {cell['threads']} | {cell['prompt_tokens']} | "
            f"{cell['prompt_tokens_per_second']:.0f} | {cell['generation_tokens_per_second']:.1f} |"
        )
    (out / "llm.md").write_text("\n".join(lines) + "\n")
    plot(results["cells"], out / "llm.png")


def plot(cells: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{cell['dtype']}\n{cell['threads']} thr" for cell in cells]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.bar(labels, [cell["prompt_tokens_per_second"] for cell in cells], color="tab:blue")
    left.set_title("prompt (prefill) tok/s")
    right.bar(labels, [cell["generation_tokens_per_second"] for cell in cells], color="tab:orange")
    right.set_title("generation tok/s")
    figure.suptitle("SmolLM2-135M-Instruct, transformers on CPU")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "load_average_before": [round(value, 2) for value in os.getloadavg()],
        "new_tokens": args.new_tokens,
    }
    if not args.skip_dequantise:
        with console.status("Dequantising SmolLM2 into a throw-away cache"):
            results["dequantise_seconds"] = time_dequantise()
    smollm2_model_dir()  # the real cache, built once
    results["cells"] = []
    default_threads = torch.get_num_threads()
    for dtype in args.dtypes:
        loaded = load_local_model("smollm2", dtype)
        results.setdefault("load_seconds", loaded.load_seconds)
        input_ids = chat_prompt_ids(loaded.tokenizer, args.prompt_tokens)
        for threads in args.threads:
            torch.set_num_threads(threads)
            with console.status(f"{dtype}, {threads} thread(s)"):
                cell = measure_cell(loaded.model, input_ids, args.new_tokens, args.repeats)
            results["cells"].append({"dtype": dtype, "threads": threads, **cell})
    torch.set_num_threads(default_threads)
    results["chat_call"] = chat_call()
    results["load_average_after"] = [round(value, 2) for value in os.getloadavg()]
    write_results(results, args.out)
    table = Table("dtype", "threads", "prompt tok/s", "generation tok/s", title="SmolLM2-135M on CPU")
    for cell in results["cells"]:
        table.add_row(
            cell["dtype"],
            str(cell["threads"]),
            f"{cell['prompt_tokens_per_second']:.0f}",
            f"{cell['generation_tokens_per_second']:.1f}",
        )
    console.print(table)
    return results


if __name__ == "__main__":
    main()
