"""One `RBRReward` per process for engines that load a reward by file or module
name and call it with data only (OpenRLHF's `reward_func` file, veRL's
`compute_score`): what to load comes from arguments or environment variables.

    RBR_POLICY        the compiled policy folder (`rbrc compile` output)
    RBR_GRADER        the grader model: a local folder or a hub id
    RBR_BACKEND       optional: "hf" (default, transformers here), "vllm" (vLLM's engine here) or
                      "openai" (a served judge at RBR_BASE_URL, e.g. http://judge:8000/v1)
    RBR_RM            optional: a reward model (one-output sequence classifier) added to the RBR
    RBR_DEVICE        optional: "cuda", "cuda:1", "cpu" (default: cuda when there is one)
    RBR_DTYPE         optional: "bfloat16", "float16", "float32" (default: bfloat16 on GPU)
    RBR_STRIP_SUFFIX  optional (OpenRLHF): text to cut off the end of responses, e.g. "<|im_end|>";
                      several as a JSON list: '["<|eot_id|>", "</s>"]'

    RBR_MAX_BATCH     optional: samples per grader batch at most (default 64)
    RBR_UNROUTED_REWARD  optional: the reward of a sample whose category has no route, when
                      there is no RM (default 0.0; see `rbrlang.rewards.unrouted_reward`)
    RBR_SCORES        optional (OpenRLHF): what the answer's `scores` are, for dynamic filtering:
                      "reward" (default) or "class_score" (in [0, 1]; `integrations.openrlhf.answer`)

The reward is built at the first call and kept (engines call these functions
many times, from threads): a lock makes the first load happen once. Calls
from several threads share grader batches through one `ThreadBatcher` per
reward (`batcher_for`), which is also the one thread that runs the grader.
"""
from __future__ import annotations

import json
import os
import threading
from typing import Optional

from ..errors import UsageError

ENV_POLICY, ENV_GRADER, ENV_RM = "RBR_POLICY", "RBR_GRADER", "RBR_RM"
ENV_DEVICE, ENV_DTYPE, ENV_STRIP = "RBR_DEVICE", "RBR_DTYPE", "RBR_STRIP_SUFFIX"
ENV_MAX_BATCH = "RBR_MAX_BATCH"
ENV_UNROUTED = "RBR_UNROUTED_REWARD"
ENV_BACKEND, ENV_BASE_URL = "RBR_BACKEND", "RBR_BASE_URL"
ENV_SCORES = "RBR_SCORES"

_lock = threading.Lock()
_rewards: dict[tuple, object] = {}
_batchers: dict[int, tuple] = {}  # id(reward) -> (reward, its ThreadBatcher): the reward is kept alive


def shared_reward(policy: Optional[str] = None, grader: Optional[str] = None, rm: Optional[str] = None,
                  device: Optional[str] = None, dtype: Optional[str] = None, backend: Optional[str] = None,
                  base_url: Optional[str] = None, tokenizer: Optional[str] = None):
    """The process's `RBRReward` for these settings (arguments win over the environment;
    `tokenizer`: the served model's, for the openai backend, when its name is not a path or hub id)."""
    env = os.environ
    policy = policy or env.get(ENV_POLICY)
    grader = grader or env.get(ENV_GRADER)
    rm = rm or env.get(ENV_RM) or None
    device = device or env.get(ENV_DEVICE) or "auto"
    dtype = dtype or env.get(ENV_DTYPE) or "auto"
    backend = backend or env.get(ENV_BACKEND) or "hf"
    base_url = base_url or env.get(ENV_BASE_URL) or None
    if not policy:
        raise UsageError(f"no compiled policy: set {ENV_POLICY} to the folder `rbrc compile` wrote")
    if not grader:
        raise UsageError(f"no grader model: set {ENV_GRADER} to a model folder or hub id")
    key = (str(policy), str(grader), rm, device, dtype, backend, base_url, tokenizer)
    with _lock:
        if key not in _rewards:
            from ..policy import load_policy
            from ..rewards import RBRReward
            from ..runtime import load_grader
            from .reward_model import load_reward_model

            compiled = load_policy(policy)  # a bad folder fails before a model loads
            options = {"hf": {"device": device, "dtype": dtype}, "vllm": {"dtype": dtype},
                       "openai": {"tokenizer": tokenizer} if tokenizer else {}}.get(backend, {})
            model = load_grader(str(grader), backend=backend, base_url=base_url, **options)
            _rewards[key] = RBRReward(compiled, model, load_reward_model(rm, device=device, dtype=dtype))
        return _rewards[key]


class LazyGrader:
    """A grader named by its model and options, loaded the first time it grades,
    in the process where that happens.

    Trainers pickle reward functions to hand them to other processes (TRL's
    async GRPO sends them to a rollout child that sees no GPU, accelerate and Ray
    to workers): a loaded `HFGrader` travels with its weights. This travels
    with `load_grader`'s arguments only (a grade cache as its path), and each
    copy loads its own grader where it runs, so `device="auto"` means that
    process's device. `grade` and `grade_detailed` load it; any other attribute
    (`encoder`, `cache`, ...) is the loaded grader's.
    """

    def __init__(self, spec, backend: str = "hf", base_url: Optional[str] = None, **options):
        from ..runtime.loading import BACKENDS

        if backend not in BACKENDS:  # a typo is an error now, not in a worker at the first grade
            raise UsageError(f"unknown grader backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.spec, self.backend, self.base_url, self.options = str(spec), backend, base_url, dict(options)
        self._lock, self._grader = threading.Lock(), None

    @property
    def loaded(self):
        """The grader, loaded now if it was not yet."""
        with self._lock:
            if self._grader is None:
                from ..runtime import load_grader

                self._grader = load_grader(self.spec, backend=self.backend, base_url=self.base_url, **self.options)
            return self._grader

    def grade(self, policy, conversations, responses):
        return self.loaded.grade(policy, conversations, responses)

    def grade_detailed(self, policy, conversations, responses):
        return self.loaded.grade_detailed(policy, conversations, responses)

    @property
    def identity(self) -> str:
        """The loaded grader's identity; before loading, what will be loaded (for reprs, not cache keys)."""
        if self._grader is not None:
            return self._grader.identity
        return f"{self.backend}:{self.spec} (not loaded yet)"

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("_grader", "_lock"):  # copy/pickle probes; half-built copies
            raise AttributeError(name)
        return getattr(self.loaded, name)

    def __repr__(self) -> str:
        return f"LazyGrader({self.spec!r}, backend={self.backend!r}, loaded={self._grader is not None})"

    def __getstate__(self):
        return {"spec": self.spec, "backend": self.backend, "base_url": self.base_url, "options": self.options}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock, self._grader = threading.Lock(), None


def strip_suffixes(value: Optional[str] = None) -> tuple[str, ...]:
    """`RBR_STRIP_SUFFIX` (or `value`): one suffix, or a JSON list of them."""
    value = os.environ.get(ENV_STRIP, "") if value is None else value
    if not value:
        return ()
    if value.lstrip().startswith("["):
        try:
            items = json.loads(value)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{ENV_STRIP} looks like a JSON list but is not valid JSON ({exc.msg})") from None
        if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
            raise UsageError(f"{ENV_STRIP} must be one suffix or a JSON list of strings")
        return tuple(items)
    return (value,)


def unrouted_reward_setting(value=None) -> float:
    """What a sample without a route (and without an RM) scores: `value` when
    given, else `RBR_UNROUTED_REWARD`, else `rbrlang.rewards.UNROUTED_REWARD`."""
    import math

    from ..rewards.reward import UNROUTED_REWARD

    if value is None:
        value = os.environ.get(ENV_UNROUTED) or UNROUTED_REWARD
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number):
        raise UsageError(f"unrouted reward {value!r} ({ENV_UNROUTED} or `unrouted_reward`): give a finite number")
    return number


def scores_setting(value: Optional[str] = None) -> str:
    """What OpenRLHF answers' `scores` are: `value`, else `RBR_SCORES`, else "reward"."""
    from .samples import SCORES

    value = value or os.environ.get(ENV_SCORES) or "reward"
    if value not in SCORES:
        raise UsageError(f"{ENV_SCORES}={value!r}: choose one of {', '.join(SCORES)}")
    return value


def batcher_for(reward):
    """The `ThreadBatcher` that scores `Sample`s with `reward` (one per reward, made once)."""
    with _lock:
        if id(reward) not in _batchers:
            from .batching import ThreadBatcher
            from .samples import score_samples

            value = os.environ.get(ENV_MAX_BATCH, "64")
            try:
                max_batch = int(value)
                if max_batch < 1:
                    raise ValueError
            except ValueError:
                raise UsageError(f"{ENV_MAX_BATCH}={value!r}: give a whole number of samples, at least 1") from None
            batcher = ThreadBatcher(lambda samples: score_samples(reward, samples), max_batch=max_batch)
            _batchers[id(reward)] = (reward, batcher)
        return _batchers[id(reward)][1]
