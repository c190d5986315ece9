"""A small OpenAI-compatible chat-completions server on 127.0.0.1, in a
thread, for the generator client (`rbrlang.generate.openai`): it samples with a
real transformers model through `HFGenerator`, honouring `n` and `seed`, so
its replies equal the in-process generator's for the same request.

It can misbehave on purpose: answer the first requests with an error status,
or drop the connection without an answer, so the client's retries and errors
are tested against real HTTP."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from rbrlang.generate import GenerationRequest

from .openai_server import OpenAIServer


@dataclass
class ChatBehaviour:
    fail_first: int = 0  # answer this many chat requests with 503
    drop_first: int = 0  # then close this many connections without answering
    delay_s: float = 0.0  # each request waits this long (to see requests overlap)
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class ChatServer(OpenAIServer):
    """`with ChatServer(generator, "name") as server:` → `server.url`."""

    def __init__(self, generator, name: str, behaviour: ChatBehaviour | None = None):
        self.generator = generator
        self.behaviour = behaviour or ChatBehaviour()
        self._model_lock = threading.Lock()
        super().__init__(name)

    route = "/v1/chat/completions"

    def answer(self, body):
        b = self.behaviour
        with b.lock:
            b.requests += 1
            number = b.requests
            b.in_flight += 1
            b.max_in_flight = max(b.max_in_flight, b.in_flight)
        try:
            time.sleep(b.delay_s)
            if number <= b.fail_first:
                return 503, {"error": {"message": "overloaded, try again"}}
            if number <= b.fail_first + b.drop_first:
                return None, None
            if body.get("model") != self.name:
                return 404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}}
            request = GenerationRequest(tuple(body["messages"]), int(body.get("n", 1)), int(body.get("seed", 0)))
            with self._model_lock:
                (texts,) = self.generator.generate([request])
            return 200, {"id": "chat-test", "object": "chat.completion", "model": self.name, "choices": [
                {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "length"}
                for i, t in enumerate(texts)]}
        finally:
            with b.lock:
                b.in_flight -= 1
