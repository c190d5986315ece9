"""HFGenerator: replies sampled with transformers' `generate`, in this process.

One `generate` call per request, `num_return_sequences=n`, after
`torch.manual_seed(seed)`: a request's replies depend on its seed alone, not
on what else was asked in the same run (batching requests together would tie
each one's random stream to its batch-mates, and a resumed run would differ).
"""
from __future__ import annotations

import json
from typing import Optional, Sequence

from ..errors import GraderError
from ..runtime.base import device_and_dtype, file_fingerprint
from .base import GenerationRequest, GenerationSettings


class HFGenerator:
    batch_size = 1  # one `generate` per request anyway (see above)

    def __init__(self, model: str, settings: Optional[GenerationSettings] = None, *, device: str = "auto",
                 dtype: str = "auto", tokenizer: Optional[str] = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.settings = settings or GenerationSettings()
        device, torch_dtype = device_and_dtype(device, dtype)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer or model)
            self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype).to(device).eval()
        except (OSError, ValueError) as exc:
            raise GraderError(f"cannot load generator `{model}`: {str(exc).strip().splitlines()[0]}") from None
        if not getattr(self.tokenizer, "chat_template", None):
            raise GraderError(f"generator `{model}` has no chat template: a generator must be a chat model")
        self.device, self._torch = device, torch
        self.identity = json.dumps({"backend": "hf", "model": str(model), "weights": file_fingerprint(model),
                                    "dtype": str(torch_dtype), "settings": self.settings.to_json()})

    def generate(self, requests: Sequence[GenerationRequest]) -> list[tuple[str, ...]]:
        torch, s = self._torch, self.settings
        out = []
        for req in requests:
            ids = self.tokenizer.apply_chat_template([dict(m) for m in req.messages], add_generation_prompt=True,
                                                     return_tensors="pt", return_dict=True)
            ids = {k: v.to(self.device) for k, v in ids.items()}
            torch.manual_seed(req.seed)
            sample = s.temperature > 0
            extra = {"temperature": s.temperature, "top_p": s.top_p} if sample else {}
            with torch.no_grad():
                result = self.model.generate(**ids, do_sample=sample, num_return_sequences=req.n,
                                             max_new_tokens=s.max_new_tokens,
                                             pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                                             **extra)
            start = ids["input_ids"].shape[1]
            out.append(tuple(self.tokenizer.decode(row[start:], skip_special_tokens=True).strip() for row in result))
        return out

    def close(self) -> None:
        pass
