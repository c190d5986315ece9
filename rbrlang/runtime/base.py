"""One grader interface, whatever runs the model, and one grading pipeline.

Every grader maps (policy, conversations, responses) to P(yes) for each of the
policy's propositions, reading the grader model's next-token probabilities of
the policy's yes and no tokens after the exact prompt ids that
`encoding.PromptEncoder` gives. Three backends do that:

- `HFGrader` (hf.py): transformers in this process, with its own prefix reuse;
- `VLLMGrader` (vllm.py): vLLM's offline engine in this process;
- `OpenAIGrader` (openai.py): any OpenAI-compatible `/v1/completions` server
  that takes token-id prompts and returns the log-probabilities of named token
  ids (vLLM's server; a judge served with tensor/pipeline parallelism or Ray).

`RBRReward`, `rbrc grade`, fitting and evaluation take any `Grader`;
`loading.load_grader(spec, backend=...)` builds one by name.

`BaseGrader.grade_detailed` is the pipeline, once for every backend: the
`matches` propositions, the grade cache, the prompt ids, the answer-mass
warning, the stats. A backend supplies only how rows ((item, proposition)
prompts) are scored (`_score`); `IdsGrader` does that for the engines that
take prompt ids and return log-probabilities of named ids (`_logprobs`).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Optional, Protocol, Sequence, runtime_checkable

import torch

from ..errors import GraderError
from ..policy import CompiledPolicy
from .answers import AnswerTokens, answer_tokens
from .cache import GradeCache, item_key
from .encoding import Encoded, PromptEncoder
from .gguf import fingerprint as gguf_fingerprint, is_gguf
from .options import GraderOptions


@dataclass
class GradeStats:
    """What one grade call (`Grades.stats`) or a grader's lifetime (`grader.stats`) cost."""

    items: int = 0
    graded: int = 0  # (item, proposition) prompts scored by the model
    cached: int = 0
    matched: int = 0  # `matches` propositions: no model call
    prefix_tokens: int = 0  # HFGrader: shared prefixes, forwarded once (with their batch padding)
    suffix_tokens: int = 0  # HFGrader: real tokens of each row after its shared prefix
    padded_tokens: int = 0  # HFGrader: those, with padding
    batches: int = 0  # HFGrader: forward batches; engines and servers: engine calls or HTTP requests
    oom_splits: int = 0
    low_mass: int = 0
    dropped_turns: int = 0
    prompt_tokens: int = 0  # engines and servers: prompt ids sent (they do their own prefix caching)
    engine_cached_tokens: int = 0  # vLLM: of those, the ones its prefix cache held (not computed)
    retries: int = 0  # servers: requests sent again after a timeout or a 429/5xx answer
    layout: str = ""  # HFGrader: what rows shared, "proposition" prefixes or "item" prefixes

    def count_retry(self) -> None:
        """One request sent again (a server client's `on_retry`)."""
        self.retries += 1

    @property
    def forwarded(self) -> int:
        return self.prefix_tokens + self.padded_tokens

    def add(self, other: "GradeStats") -> None:
        """Add another call's counts to these (a grader's running totals)."""
        for f in fields(self):
            if f.name == "layout":
                self.layout = other.layout or self.layout
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass(frozen=True)
class Grades:
    p_yes: torch.Tensor  # [N, P] in the policy's proposition order
    answer_mass: torch.Tensor  # [N, P]; 1 for `matches` propositions
    stats: GradeStats = field(compare=False)


class GraderWarning(UserWarning):
    pass


class LowAnswerMass(GraderWarning):
    """Little next-token probability on yes/no: `low` of `total` gradings under
    `minimum`, the lowest `lowest`. Its numbers are kept, so warnings of one
    run's grader calls can be merged into one (`merge`)."""

    def __init__(self, low: int, total: int, lowest: float, minimum: float):
        self.low, self.total, self.lowest, self.minimum = low, total, lowest, minimum
        super().__init__(f"the grader put less than {minimum:.0%} of its next-token probability on "
                         f"yes/no answers for {low} of {total} gradings (lowest "
                         f"{lowest:.2e}); check the grader model and the policy's yes/no spellings")

    def merge(self, other: "LowAnswerMass") -> "LowAnswerMass":
        return LowAnswerMass(self.low + other.low, self.total + other.total, min(self.lowest, other.lowest),
                             self.minimum)


@runtime_checkable
class Grader(Protocol):
    """What every grader offers. `identity` names everything that changes its
    answers (weights, dtype, prompt form, backend): the grade cache keys on it.
    `stats` are running totals over the grader's lifetime."""

    identity: str
    stats: GradeStats

    def grade(self, policy: CompiledPolicy, conversations: Sequence, responses: Sequence[str]) -> torch.Tensor:
        """`[N, P]` P(yes) in the policy's proposition order."""

    def grade_detailed(self, policy: CompiledPolicy, conversations: Sequence, responses: Sequence[str]) -> Grades:
        """P(yes), the answer mass and what the call cost."""

    def encode(self, policy: CompiledPolicy, proposition: str, conversation, response: str) -> list[int]:
        """The exact prompt token ids graded for one (item, proposition)."""

    def answer_tokens(self, policy: CompiledPolicy) -> AnswerTokens:
        """The token ids that count as a yes and as a no."""


def device_and_dtype(device="auto", dtype="auto") -> tuple[str, torch.dtype]:
    """`auto` means CUDA when there is one; bf16 on a GPU, fp32 on the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    elif isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    return device, dtype


def answer_probability(yes: Sequence[float], no: Sequence[float]) -> tuple[float, float]:
    """(P(yes), answer mass) from full-vocabulary log-probabilities of the yes
    and the no token ids: the same formula as `answers.yes_probability`, on
    the values an engine returns instead of the whole logit row."""
    def logsumexp(xs):
        top = max(xs)
        return top if top == -math.inf else top + math.log(sum(math.exp(x - top) for x in xs))

    y, n = logsumexp(yes), logsumexp(no)
    both = logsumexp([y, n])
    if both == -math.inf:  # neither answer has any probability: no P(yes) to read
        return math.nan, 0.0
    return math.exp(y - both), math.exp(both)


_RUNTIME = str(Path(__file__).resolve().parent) + os.sep


def _outside_runtime() -> int:
    """The `stacklevel` of the first frame outside runtime/: whoever called
    `grade` or `grade_detailed` (a backend or a subclass adds frames of its
    own, so a fixed number would point into the runtime for some of them)."""
    frame, level = sys._getframe(1), 1  # level 1: the function that calls warnings.warn
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(_RUNTIME):
        frame, level = frame.f_back, level + 1
    return level


def warn_low_mass(mass: torch.Tensor, minimum: float, stats: GradeStats) -> None:
    """The `GraderWarning` when little probability is on yes/no, pointing at the grader's caller."""
    low = mass < minimum
    stats.low_mass = int(low.sum())
    if stats.low_mass:
        warnings.warn(LowAnswerMass(stats.low_mass, low.numel(), float(mass.min()), minimum),
                      stacklevel=_outside_runtime())


def cached_slots(cache: Optional[GradeCache], identity: str, policy: CompiledPolicy, conversations, responses,
                 p_yes: torch.Tensor, mass: torch.Tensor, stats: GradeStats):
    """The (item, proposition) slots still to grade after the grade cache, and
    every slot's cache key. Hits are written into `p_yes` and `mass`."""
    todo, keys = [], {}
    for j, prop in enumerate(policy.propositions):
        if not prop.graded:
            continue
        slots = [(i, j) for i in range(len(responses))]
        if cache is not None:
            # P(yes) depends on the whole prompt and on which tokens count as answers.
            # P(yes) depends on the grader's chat turns too (added only when set: older keys stay valid).
            what = [prop.template, policy.yes, policy.no] + ([policy.system, policy.prefill]
                                                             if policy.system or policy.prefill else [])
            sha = hashlib.sha256(json.dumps(what).encode()).hexdigest()
            for i, s in enumerate(slots):
                keys[s] = item_key(identity, sha, conversations[i], responses[i])
            hits = cache.get_many([keys[s] for s in slots])
            for s in slots:
                if keys[s] in hits:
                    p_yes[s], mass[s] = hits[keys[s]]
                    stats.cached += 1
            slots = [s for s in slots if keys[s] not in hits]
        todo += slots
    return todo, keys


WEIGHT_FILES = ("*.safetensors", "*.bin", "*.gguf")


def file_fingerprint(path) -> str:
    """Names, sizes and modification times of a local model folder's weights
    (cheap; a changed file is a different grader identity); for a GGUF file,
    its size, time and a hash of a bounded part (gguf.fingerprint says why).
    A hub id or a path that is no folder has no files here: the digest of nothing."""
    digest = hashlib.sha256()
    folder = Path(str(path))
    if folder.is_file() and is_gguf(folder):
        return gguf_fingerprint(folder)
    if folder.is_dir():
        for pattern in WEIGHT_FILES:
            for f in sorted(folder.glob(pattern)):
                st = f.stat()
                digest.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Row:
    """One (item, proposition) prompt for a backend to score."""

    item: int
    prop: int  # index in the policy's proposition order
    name: str
    enc: Encoded

    @property
    def where(self) -> str:
        return f"item {self.item} (proposition `{self.name}`)"


class BaseGrader:
    """The grading pipeline every backend shares, and `encode` / `answer_tokens`.

    A backend calls `__init__` with its tokenizer, its options and its context
    length, sets `identity` (the grade cache keys on it), and implements
    `_score`. It does not override `grade_detailed` (refused at class
    creation), so the cache, the warning and the stats are the same for all.
    """

    identity: str = ""

    def __init__(self, tokenizer, options: GraderOptions, max_length: Optional[int] = None):
        """`max_length`: the backend's context for a prompt; `options.max_length` wins when given."""
        if options.max_length is not None:
            max_length = options.max_length
        self.tokenizer = tokenizer
        self.encoder = PromptEncoder(tokenizer, options.use_chat_template, max_length, options.truncate)
        self.cache = GradeCache(options.cache) if isinstance(options.cache, (str, Path)) else options.cache
        self.min_answer_mass = options.min_answer_mass
        self.stats = GradeStats()  # running totals over the grader's lifetime (Grader)
        self._answers: dict[tuple, AnswerTokens] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "grade_detailed" in cls.__dict__:
            raise TypeError(f"{cls.__name__} overrides grade_detailed: a backend implements _score(rows, answers, "
                            "stats), and the pipeline in runtime/base.py stays the same for every backend")

    def _score(self, rows: list[Row], answers: AnswerTokens, stats: GradeStats) -> tuple[torch.Tensor, torch.Tensor]:
        """P(yes) and the answer mass of each row, `[R]` float64 each, in
        `rows` order (item-major: an item's propositions follow each other).
        Add what scoring cost to `stats` (all but `graded`, counted here)."""
        raise NotImplementedError

    def answer_tokens(self, policy: CompiledPolicy) -> AnswerTokens:
        key = (policy.yes, policy.no)
        if key not in self._answers:
            self._answers[key] = answer_tokens(self.tokenizer, policy.yes, policy.no)
        return self._answers[key]

    def encode(self, policy: CompiledPolicy, proposition: str, conversation, response: str) -> list[int]:
        """The exact prompt token ids graded for one item."""
        if not policy.proposition(proposition).graded:
            raise GraderError(f"`{proposition}` is a `matches` proposition: no prompt")
        return list(self.encoder.encode(policy, proposition, conversation, response).ids)

    def grade(self, policy: CompiledPolicy, conversations: Sequence, responses: Sequence[str]) -> torch.Tensor:
        """`[N, P]` P(yes) in the policy's proposition order."""
        return self.grade_detailed(policy, conversations, responses).p_yes

    def grade_detailed(self, policy: CompiledPolicy, conversations: Sequence, responses: Sequence[str]) -> Grades:
        """P(yes), the answer mass and what the call cost."""
        if len(conversations) != len(responses):
            raise GraderError(f"{len(conversations)} conversations but {len(responses)} responses")
        n, names = len(responses), policy.proposition_names
        stats = GradeStats(items=n)
        p_yes = torch.zeros(n, len(names), dtype=torch.float64)
        mass = torch.ones(n, len(names), dtype=torch.float64)
        for j, prop in enumerate(policy.propositions):
            if not prop.graded:
                for i, r in enumerate(responses):
                    p_yes[i, j] = float(policy.matches(prop.name, r))
                stats.matched += n
        answers = self.answer_tokens(policy)
        todo, keys = cached_slots(self.cache, self.identity, policy, conversations, responses, p_yes, mass, stats)
        by_item: dict[int, list[int]] = {}
        for i, j in todo:
            by_item.setdefault(i, []).append(j)
        order = sorted(by_item)
        encoded = self.encoder.encode_items(policy, [conversations[i] for i in order],
                                            [responses[i] for i in order], order)
        rows = []
        for i, prompts in zip(order, encoded):
            stats.dropped_turns += next(iter(prompts.values())).dropped_turns
            rows += [Row(i, j, names[j], prompts[names[j]]) for j in by_item[i]]
        if rows:
            p, m = self._score(rows, answers, stats)
            items, props = torch.tensor([r.item for r in rows]), torch.tensor([r.prop for r in rows])
            p_yes[items, props], mass[items, props] = p.double(), m.double()
            stats.graded += len(rows)
        if self.cache is not None and todo:
            self.cache.put_many((keys[s], float(p_yes[s]), float(mass[s])) for s in todo)
        # Only the model's answers count: a `matches` proposition's mass of 1 is no grading.
        graded = [j for j, prop in enumerate(policy.propositions) if prop.graded]
        warn_low_mass(mass[:, graded], self.min_answer_mass, stats)
        self.stats.add(stats)
        return Grades(p_yes.float(), mass.float(), stats)


class IdsGrader(BaseGrader):
    """A grader that hands the exact prompt ids to an engine and gets back the
    log-probabilities of the answer token ids. Subclasses implement `_logprobs`."""

    def _logprobs(self, prompts: list[tuple[int, ...]], token_ids: list[int],
                  stats: GradeStats) -> list[list[float]]:
        """For each prompt, the full-vocabulary log-probability of each of
        `token_ids` as the next token, in that order."""
        raise NotImplementedError

    def _score(self, rows, answers, stats):
        prompts = [r.enc.ids for r in rows]
        ids, k = list(answers.yes) + list(answers.no), len(answers.yes)
        p_yes, mass = torch.empty(len(rows), dtype=torch.float64), torch.empty(len(rows), dtype=torch.float64)
        for n, (row, lps) in enumerate(zip(rows, self._logprobs(prompts, ids, stats), strict=True)):
            p, m = answer_probability(lps[:k], lps[k:])
            if math.isnan(p):
                raise GraderError(f"the grader gave the yes and no tokens no probability at all for {row.where}; "
                                  "no reward is given for it")
            p_yes[n], mass[n] = p, m
        stats.prompt_tokens += sum(len(p) for p in prompts)
        return p_yes, mass


__all__ = ["BaseGrader", "Grader", "Grades", "GradeStats", "GraderWarning", "IdsGrader", "LowAnswerMass", "Row",
           "answer_probability", "file_fingerprint"]
