"""OpenAIGenerator: replies from an OpenAI-compatible chat-completions server.

One `/chat/completions` request per generation request, with its `n` and
`seed` (vLLM's server honours both), at most `concurrency` in flight. The HTTP
side (pooled client, retries with backoff on connection errors, timeouts and
429/5xx, one-line errors) is the grader client's (`runtime.openai.Server`).
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence

from ..errors import GraderError
from ..runtime.openai import Server
from .base import GenerationRequest, GenerationSettings


class OpenAIGenerator:
    def __init__(self, base_url: str, model: str, settings: Optional[GenerationSettings] = None, *,
                 api_key: Optional[str] = None, concurrency: int = 8, timeout: float = 300.0, retries: int = 4,
                 backoff: float = 0.5):
        self.settings = settings or GenerationSettings()
        self.server = Server(base_url, api_key=api_key, concurrency=concurrency, timeout=timeout, retries=retries,
                             backoff=backoff, role="generator")
        self.model = model
        self.batch_size = self.server.concurrency  # as many as are in flight at once
        served = self.server.served_model(model)
        self.retries = 0  # requests sent again, over this generator's life
        self.identity = json.dumps({"backend": "openai", "url": self.server.base_url, "model": model,
                                    "root": served.get("root"), "settings": self.settings.to_json()})

    def _one(self, req: GenerationRequest) -> tuple[str, ...]:
        s = self.settings
        payload = {"model": self.model, "messages": [dict(m) for m in req.messages], "n": req.n, "seed": req.seed,
                   "max_tokens": s.max_new_tokens, "temperature": s.temperature, "top_p": s.top_p}
        answer = self.server.send("POST", "/chat/completions", payload, on_retry=self._retried)
        choices = answer.get("choices") if isinstance(answer, dict) else None
        if not isinstance(choices, list) or len(choices) != req.n:
            raise GraderError(f"the generator server at {self.server.base_url} answered a request for {req.n} "
                              f"replies with {len(choices) if isinstance(choices, list) else 'no'} choices")
        texts = []
        for choice in sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0):
            message = choice.get("message") if isinstance(choice, dict) else None
            content = message.get("content") if isinstance(message, dict) else None
            texts.append(content.strip() if isinstance(content, str) else "")  # None: an empty reply
        return tuple(texts)

    def _retried(self) -> None:
        self.retries += 1

    def generate(self, requests: Sequence[GenerationRequest]) -> list[tuple[str, ...]]:
        if len(requests) <= 1:
            return [self._one(r) for r in requests]
        with ThreadPoolExecutor(max_workers=min(self.server.concurrency, len(requests))) as pool:
            futures = [pool.submit(self._one, r) for r in requests]
            try:
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise

    def close(self) -> None:
        self.server.close()
