"""The FLOP model of the grading benchmarks (bench/grading.py, bench/grading_vllm.py):
one place, so every figure of achieved GFLOP/s means the same thing.

A decoder-only transformer (Llama, Qwen2, SmolLM2: no biases counted, a
multiply-add is 2 FLOPs) forwarding one token at position `i` (0-based, so it
attends to `i + 1` keys, itself included) costs, per layer,

  linear     2 · hidden · (q + k + v + o)  +  2 · 3 · hidden · intermediate
             q = o = heads · head_dim, k = v = kv_heads · head_dim (GQA), the MLP gated (up, gate, down)
  attention  4 · heads · head_dim · (i + 1)          (Q·Kᵀ and P·V over the keys)

and the output layer costs 2 · hidden · vocab per row that gets vocabulary
logits (both graders compute them only at each prompt's last token). Norms,
rotary, softmax and residuals are left out (a few % of the total at these shapes).

`trie_work` is the minimum work of a set of prompts: each distinct prefix
(a node of the prompts' token trie) forwarded once, at its depth; its FLOPs
(`Shape.flops`) are the *useful* FLOPs of a run, the same numerator for every
engine. What an engine really computed (its padding, its recomputed blocks) is
`Shape.flops` of its own token count at the trie's mean context (an
approximation of the attention term only: the linear and output terms are exact).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence


@dataclass(frozen=True)
class Shape:
    """What the FLOP model reads from a transformers config."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int

    @classmethod
    def of(cls, config) -> "Shape":
        config = getattr(config, "text_config", None) or config
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(hidden=config.hidden_size, intermediate=config.intermediate_size, layers=config.num_hidden_layers,
                   heads=heads, kv_heads=getattr(config, "num_key_value_heads", None) or heads, head_dim=head_dim,
                   vocab=config.vocab_size)

    @property
    def linear_per_token(self) -> int:
        q = o = self.heads * self.head_dim
        k = v = self.kv_heads * self.head_dim
        return self.layers * (2 * self.hidden * (q + k + v + o) + 2 * 3 * self.hidden * self.intermediate)

    @property
    def attention_per_key(self) -> int:
        """FLOPs of one (query, key) pair over all layers."""
        return self.layers * 4 * self.heads * self.head_dim

    @property
    def head_per_row(self) -> int:
        return 2 * self.hidden * self.vocab

    def flops(self, tokens: int, keys: float, rows: int) -> float:
        """`tokens` forwarded, attending to `keys` keys in all, `rows` rows of logits."""
        return tokens * self.linear_per_token + keys * self.attention_per_key + rows * self.head_per_row


@dataclass(frozen=True)
class Work:
    """The minimum work of a set of prompts: `tokens` trie nodes, attending to `keys` keys in all."""

    tokens: int
    keys: int
    rows: int

    @property
    def mean_keys(self) -> float:
        return self.keys / self.tokens if self.tokens else 0.0


def trie_work(rows: Iterable[Sequence[int]]) -> Work:
    """Distinct prefixes among token sequences: sorted, each adds what it does
    not share with its predecessor (positions `common … len-1`, each attending
    to its position + 1 keys)."""
    rows = sorted(tuple(r) for r in rows)
    tokens = keys = 0
    prev: tuple = ()
    for r in rows:
        common = 0
        for a, b in zip(prev, r):
            if a != b:
                break
            common += 1
        n = len(r)
        tokens += n - common
        keys += (n * (n + 1) - common * (common + 1)) // 2  # Σ (i + 1) for i in common … n-1
        prev = r
    return Work(tokens, keys, len(rows))


def useful_flops(shape: Shape, work: Work) -> float:
    """The minimum FLOPs of the run: the same for every engine."""
    return shape.flops(work.tokens, work.keys, work.rows)


def computed_flops(shape: Shape, tokens: int, work: Work) -> float:
    """What an engine that forwarded `tokens` computed, at the trie's mean context."""
    return shape.flops(tokens, tokens * work.mean_keys, work.rows)


__all__ = ["Shape", "Work", "computed_flops", "trie_work", "useful_flops"]
