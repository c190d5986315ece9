"""The reward server: OpenRLHF's remote reward protocol over a compiled policy.

    POST /get_reward  {"query": [...], "prompts": [...], "labels": [...]}
                      -> {"rewards": [...], "scores": [...], "extra_logs": {...}}
    GET  /health      -> {"status": "ok", "policy": ..., "batching": {...}}

The protocol, and how the grader gets the conversation as messages, are in
`rbrlang.integrations.openrlhf`. A request that cannot be scored gets a 4xx
with `{"error": reason}` (400: not a JSON object; 413: too large; 422: a
sample the policy cannot take, naming it) and never stops the server; a bug
in scoring is a 500 for that request alone. Starlette serves; uvicorn's
shutdown stops accepting connections and waits for requests in flight, and
the lifespan's end then scores whatever is still queued before the worker ends.
"""
from __future__ import annotations

import contextlib
import json
import logging
from typing import Optional, Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..errors import RbrError
from ..integrations.openrlhf import answer, samples_from_request
from ..integrations.samples import SampleError, score_samples
from ..integrations.batching import Batcher

log = logging.getLogger("rbrlang.serve")

MAX_BODY = 64 << 20  # bytes: far above any batch of samples OpenRLHF sends


def _error(status: int, message: str, sample: Optional[int] = None) -> JSONResponse:
    body = {"error": message}
    if sample is not None:
        body["sample"] = sample
    return JSONResponse(body, status_code=status)


def create_app(reward, max_batch: int = 64, batch_window_ms: float = 5.0,
               strip_suffixes: Sequence[str] = (), max_body: int = MAX_BODY) -> Starlette:
    """A Starlette app serving `reward` (an `RBRReward`) to OpenRLHF.

    `app.state.batcher` holds the `Batcher` (its `stats` count batches) once
    the app has started."""
    has_rm = reward.rm is not None
    suffixes = tuple(strip_suffixes)
    batcher = Batcher(lambda samples: score_samples(reward, samples), max_batch=max_batch,
                      window_s=batch_window_ms / 1000.0)

    async def get_reward(request: Request) -> JSONResponse:
        body = await request.body()
        if len(body) > max_body:
            return _error(413, f"the body is {len(body)} bytes; the limit is {max_body}")
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _error(400, f"the body is not JSON ({exc})")
        if not isinstance(data, dict):
            return _error(400, 'the body must be a JSON object {"query": [...], "prompts": [...], "labels": [...]}')
        missing = [k for k in ("query", "prompts", "labels") if k not in data]
        if missing:
            return _error(422, f"missing {', '.join(map(repr, missing))}: the body is "
                               '{"query": [...], "prompts": [...], "labels": [...]}, one entry per sample')
        try:
            samples = samples_from_request(data["query"], data["prompts"], data["labels"], reward.policy, suffixes)
        except SampleError as exc:
            return _error(422, str(exc), exc.index)
        try:
            items = await batcher.submit(samples)
        except RbrError as exc:  # e.g. a conversation longer than the grader's context
            return _error(422, str(exc), getattr(exc, "index", None))
        except Exception as exc:  # a bug: this request fails, the server goes on
            log.exception("scoring a request failed")
            return _error(500, f"internal error while scoring ({type(exc).__name__}: {exc})")
        return JSONResponse(answer(items, has_rm))

    async def health(request: Request) -> JSONResponse:
        ok = batcher.running
        grader = getattr(reward.grader, "identity", None) or type(reward.grader).__name__
        return JSONResponse({"status": "ok" if ok else "stopped", "policy": reward.policy.name, "grader": grader,
                             "rm": has_rm, "in_flight": batcher.in_flight,
                             "batching": {"max_batch": batcher.max_batch, "window_ms": batch_window_ms,
                                          **batcher.stats.as_dict()}},
                            status_code=200 if ok else 503)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        log.info("serving policy %s: max batch %d, window %.1f ms", reward.policy.name, max_batch, batch_window_ms)
        try:
            yield
        finally:
            await batcher.stop()  # requests still queued are scored first

    app = Starlette(routes=[Route("/get_reward", get_reward, methods=["POST"]),
                            Route("/health", health, methods=["GET"])], lifespan=lifespan)
    app.state.batcher = batcher
    app.state.reward = reward
    return app
