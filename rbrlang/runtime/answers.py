"""Which token ids count as a yes or a no answer.

Each spelling in the policy's `grader` block (`yes "yes" "Yes"`) is tokenised
on its own, without special tokens, and its *first* token counts: the grader's
next token decides the answer, and a multi-token spelling begins with that
token. Listing both "yes" and " yes" covers tokenisers that fold a leading
space into the word.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import GraderError


@dataclass(frozen=True)
class AnswerTokens:
    yes: tuple[int, ...]
    no: tuple[int, ...]


def answer_tokens(tokenizer, yes_spellings, no_spellings) -> AnswerTokens:
    unk = getattr(tokenizer, "unk_token_id", None)

    def first_ids(spellings, label):
        ids = []
        for s in spellings:
            toks = tokenizer(s, add_special_tokens=False)["input_ids"]
            if not toks:
                raise GraderError(f"the {label} spelling {s!r} has no tokens in this tokenizer")
            if unk is not None and toks[0] == unk:  # a word-level or sentencepiece vocabulary without the word
                raise GraderError(f"the {label} spelling {s!r} is not in this tokenizer's vocabulary (it reads as "
                                  f"the unknown token {tokenizer.unk_token!r}); list spellings it has in the "
                                  f"policy's `grader {{ {label} \"…\" }}` block")
            if toks[0] not in ids:
                ids.append(toks[0])
        return tuple(ids)

    yes, no = first_ids(yes_spellings, "yes"), first_ids(no_spellings, "no")
    shared = set(yes) & set(no)
    if shared:
        token = tokenizer.convert_ids_to_tokens(sorted(shared)[0])
        raise GraderError(f"yes and no spellings start with the same token {token!r}; "
                          "choose spellings whose first tokens differ")
    return AnswerTokens(yes, no)


def yes_probability(logits: torch.Tensor, answers: AnswerTokens) -> tuple[torch.Tensor, torch.Tensor]:
    """(P(yes), answer mass) from next-token logits `[B, V]`.

    P(yes) = mass of the yes tokens / mass of yes and no tokens; the answer
    mass is the share of all probability on yes and no tokens together.
    """
    logp = torch.log_softmax(logits.double(), dim=-1)
    yes = torch.logsumexp(logp[:, list(answers.yes)], dim=-1)
    no = torch.logsumexp(logp[:, list(answers.no)], dim=-1)
    both = torch.logaddexp(yes, no)
    return torch.exp(yes - both), torch.exp(both)
