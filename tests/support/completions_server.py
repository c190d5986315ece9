"""A small OpenAI-compatible completions server on 127.0.0.1, in a thread,
speaking vLLM's wire format for what `OpenAIGrader` sends (token-id prompts,
`logprob_token_ids`, `return_tokens_as_token_ids`) and computing the answers
with a real transformers model: one full forward per prompt, the plain way.

It can also misbehave on purpose, so the client's retries, timeouts and errors
are tested against real HTTP: answer the first requests with an error status,
stall, or ignore `logprob_token_ids` like a server that only knows top-k.
Tests that need the real vLLM server use tests/support/vllm_server.py."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import torch

from .openai_server import OpenAIServer


@dataclass
class Behaviour:
    fail_first: int = 0  # answer this many completions requests with `fail_status`
    fail_status: int = 503
    stall_first: int = 0  # let this many completions requests wait `stall_s` before answering
    stall_s: float = 0.0
    top_k_only: bool = False  # ignore logprob_token_ids: return the sampled token only
    requests: int = 0  # completions requests seen
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class CompletionsServer(OpenAIServer):
    """`with CompletionsServer(model, "name") as server:` → `server.url` ("http://127.0.0.1:PORT/v1")."""

    def __init__(self, model, name: str, max_model_len: int = 8192, behaviour: Behaviour | None = None):
        self.model, self.max_model_len = model.eval(), max_model_len
        self.behaviour = behaviour or Behaviour()
        self._model_lock = threading.Lock()  # one forward at a time; requests still overlap in flight
        super().__init__(name)

    route = "/v1/completions"

    def model_card(self) -> dict:
        return {**super().model_card(), "max_model_len": self.max_model_len}

    def answer(self, body) -> tuple[int, dict]:
        b = self.behaviour
        with b.lock:
            b.requests += 1
            number = b.requests
            b.in_flight += 1
            b.max_in_flight = max(b.max_in_flight, b.in_flight)
        try:
            if number <= b.stall_first:
                time.sleep(b.stall_s)
            if number <= b.fail_first:
                return b.fail_status, {"error": {"message": "overloaded, try again"}}
            if body.get("model") != self.name:
                return 404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}}
            prompts = body["prompt"]
            if any(len(p) >= self.max_model_len for p in prompts):
                return 400, {"error": {"message": f"This model's maximum context length is {self.max_model_len} "
                                                  "tokens."}}
            wanted = [] if b.top_k_only else list(body.get("logprob_token_ids") or [])
            choices = []
            for index, ids in enumerate(prompts):
                with self._model_lock, torch.no_grad():
                    logits = self.model(input_ids=torch.tensor([ids])).logits[0, -1]
                logp = torch.log_softmax(logits.double(), dim=-1)
                sampled = int(logp.argmax())
                step = {f"token_id:{t}": float(logp[t]) for t in [sampled, *wanted]}
                choices.append({"index": index, "text": "", "finish_reason": "length", "logprobs": {
                    "tokens": [f"token_id:{sampled}"], "token_logprobs": [float(logp[sampled])],
                    "top_logprobs": [step], "text_offset": [0]}})
            return 200, {"id": "cmpl-test", "object": "text_completion", "model": self.name, "choices": choices}
        finally:
            with b.lock:
                b.in_flight -= 1
