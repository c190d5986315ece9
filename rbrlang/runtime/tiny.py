"""Tiny real graders for tests and benchmarks: a Llama-architecture model with
random weights and a locally trained byte-level BPE tokenizer with a chat
template, deterministic from a seed, saved with `save_pretrained` so it loads
through the same `from_pretrained` path users take. No download involved."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Optional

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL = ["<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]

BASE_CORPUS = """\
You are reviewing a conversation between a user and an AI assistant. Answer yes or no.
Question: Does the response apologise? Answer: yes. Answer: no. Yes. No.
I'm sorry, but I can't help with that. Here is how you do it, step by step.
The user asked a question and the assistant answered it politely and completely.
Please talk to a professional, a doctor, a therapist or a counsellor about how you feel.
"""


@dataclass(frozen=True)
class TinyConfig:
    vocab_size: int = 1024
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 8192


# The configs bench/grading.py documents. `vocab_size` is the model's; the
# tokenizer learns at most TOKENIZER_VOCAB tokens from the corpus and the rest of
# the embedding rows are padding, as released models often pad theirs.
TOKENIZER_VOCAB = 4096
PRESETS = {
    "tiny": TinyConfig(),
    # Proportions of a small real grader (Qwen2.5-0.5B: output layer ≈ 0.4 of
    # the transformer layers' weights), scaled down to run on two CPU cores.
    "small": TinyConfig(vocab_size=8192, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                        num_attention_heads=8, num_key_value_heads=2),
    # ~0.5B parameters, Qwen2.5-0.5B-like shape, for GPU runs (random weights).
    "half_b": TinyConfig(vocab_size=32000, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768),
}


def default_corpus() -> list[str]:
    """Base text plus the shipped policies, so prompts tokenise compactly."""
    texts = [BASE_CORPUS]
    root = Path(__file__).resolve().parents[2]
    for path in sorted((root / "policies").rglob("*.rbr")) if (root / "policies").is_dir() else []:
        texts.append(path.read_text(encoding="utf-8"))
    return texts


def build_tokenizer(corpus: Iterable[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(corpus), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   chat_template=CHAT_TEMPLATE, model_max_length=1 << 20)


def build_tiny_grader(path, seed: int = 0, config: TinyConfig | str = "tiny",
                      corpus: Optional[Iterable[str]] = None, dtype=None) -> Path:
    """Write a model + tokenizer folder at `path` and return it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = PRESETS[config] if isinstance(config, str) else config
    path = Path(path)
    tokenizer = build_tokenizer(corpus if corpus is not None else default_corpus(),
                                min(cfg.vocab_size, TOKENIZER_VOCAB))
    fields = asdict(cfg)
    fields["vocab_size"] = max(cfg.vocab_size, len(tokenizer))
    llama = LlamaConfig(**fields, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama)
    if dtype is not None:
        model = model.to(dtype)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "rbrlang_tiny.json").write_text(json.dumps({"seed": seed, "config": fields}, indent=2))
    return path
