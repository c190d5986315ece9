"""Real GGUF files for the GGUF checks, written with the `gguf` package's own
writer (llama.cpp's gguf-py): headers only (metadata, no tensors), enough for
everything rbrlang reads before transformers loads a file (and, with
`tensors=`, a few real fp32 tensors, to cut a file inside its weights)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}<|assistant|>"


def write_gguf(path, arch: str = "llama", chat_template: Optional[str] = TEMPLATE, vocab: int = 300,
               tensors: int = 0) -> Path:
    """A header-only GGUF file: `general.architecture`, a gpt2-style vocabulary of
    `vocab` tokens (a string array and a float array, as converters write them)
    and, unless None, a chat template."""
    import gguf

    path = Path(path)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("rbrlang test header")
    w.add_block_count(2)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"tok{i}" for i in range(vocab)])
    w.add_token_scores([0.0] * vocab)
    if chat_template is not None:
        w.add_chat_template(chat_template)
    w.add_uint32("rbrlang.after_the_vocabulary", 7)
    if tensors:
        import numpy as np

        for i in range(tensors):
            w.add_tensor(f"blk.{i}.weight", np.full((16, 32), i, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
