"""Tokenizers of the families graders use, for tests of prompt ids.

Two sources:
- `trained(family, corpus)`: a BPE tokenizer trained here with the
  `tokenizers` library, with the pre-tokeniser of a real family (GPT-2
  byte-level, Llama-3 and Qwen-2 split regexes + byte-level, sentencepiece-style
  Metaspace with prepend "first"). Fast and always available.
- `real(name)`: a released vocabulary, from the vocab-only GGUF files llama.cpp
  keeps for its tokenizer tests (`ggml-vocab-{name}.gguf`, in the source
  distribution of llama-cpp-python on PyPI). `.ci/run` fetches them into
  `vocab_dir()`; `real` returns None when they are absent.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional

# The GGUF vocabularies the tests use, and the family each stands for.
REAL = {
    "gpt-2": "GPT-2 byte-level",
    "llama-bpe": "Llama-3 byte-level",
    "qwen2": "Qwen-2 byte-level",
    "llama-spm": "Llama-2 sentencepiece",
}
FAMILIES = ("gpt2", "llama3", "qwen2", "metaspace")

# Chat templates for vocabularies that ship none, in the form their models use.
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
LLAMA3 = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
          "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
          "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
LLAMA2 = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] | trim }} "
          "[/INST]{% else %} {{ m['content'] | trim }} {{ eos_token }}{% endif %}{% endfor %}")
TEMPLATES = {"gpt-2": CHATML, "llama-bpe": LLAMA3, "qwen2": CHATML, "llama-spm": LLAMA2, "gpt2": CHATML, "llama3": LLAMA3,
             "metaspace": LLAMA2}

# Llama-3's and Qwen-2's pre-tokeniser regexes (they differ in digits).
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")

VOCAB_ENV = "RBRLANG_TEST_VOCABS"


def vocab_dir() -> Path:
    """Where `.ci/run` puts the GGUF vocabularies (`$RBRLANG_TEST_VOCABS` overrides)."""
    if os.environ.get(VOCAB_ENV):
        return Path(os.environ[VOCAB_ENV])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "rbrlang-test-vocabs"


def real(name: str, chat_template: Optional[str] = None):
    """The GGUF vocabulary `name` as a transformers fast tokenizer, or None
    when the file is absent. Without a template of its own it gets its
    family's (`chat_template` overrides)."""
    from transformers import AutoTokenizer

    folder = vocab_dir()
    gguf = folder / f"ggml-vocab-{name}.gguf"
    if not gguf.is_file():
        return None
    # Converting a GGUF vocabulary takes seconds: keep the converted tokenizer.
    converted = folder / "converted" / name
    if (converted / "tokenizer.json").is_file():
        tok = AutoTokenizer.from_pretrained(converted)
    else:
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf.name)
        try:
            tok.save_pretrained(converted)
        except OSError:
            pass  # a read-only cache: convert again next time
    if chat_template is not None or not tok.chat_template:
        tok.chat_template = chat_template or TEMPLATES[name]
    return tok


def trained(family: str, corpus: Iterable[str], vocab_size: int = 2000):
    """A BPE tokenizer trained on `corpus` with `family`'s pre-tokeniser and
    a chat template of that family's form."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<unk>", "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>", "<|start_header_id|>", "<|end_header_id|>",
               "<|eot_id|>"]
    if family == "metaspace":
        # Llama 2 / Mistral as transformers converts them: "▁" for spaces, one
        # prepended at the very start only, the text not split at spaces.
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=True)
        alphabet: list[str] = []
    else:
        tok = Tokenizer(models.BPE())
        if family == "gpt2":
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        else:
            split = LLAMA3_SPLIT if family == "llama3" else QWEN2_SPLIT
            tok.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Split(Regex(split), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                                  initial_alphabet=alphabet)
    tok.train_from_iterator(list(corpus), trainer=trainer)
    if family == "metaspace":
        # Trained word by word (as sentencepiece learns), applied to the whole text.
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   chat_template=TEMPLATES[family], model_max_length=1 << 20)
