"""The reward server: OpenRLHF's remote reward protocol over a compiled policy.

    POST /get_reward  {"query": [...], "prompts": [...], "labels": [...]}
                      -> {"rewards": [...], "scores": [...], "extra_logs": {...}}
    GET  /health      -> {"status": "ok", "policy": ..., "grader": {...}, "batching": {...}}

The protocol, and how the grader gets the conversation as messages, are in
`rbrlang.integrations.openrlhf`. A request that cannot be scored gets a 4xx
with `{"error": reason}` and never stops the server: 400, a body that is not a
JSON object (or not UTF-8, or JSON we refuse: see `data.jsonl.parse_json`);
408, a body not all sent within the time allowed; 413, a body or a sample
count over the limits; 422, a sample the policy or the
grader's context cannot take, naming it (`"sample": i`). What each costs is
bounded before the work (`limits`). A bug in scoring is a 500 for that request
alone. Starlette serves; uvicorn's shutdown stops accepting connections and
waits for requests in flight, and the lifespan's end then scores whatever is
still queued before the worker ends.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Optional, Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..data.jsonl import JSONTextError, parse_json
from ..errors import RbrError, SampleError
from ..integrations.batching import Batcher
from ..integrations.loading import scores_setting
from ..integrations.openrlhf import answer, samples_from_request
from ..integrations.samples import score_samples
from .limits import (BODY_BUDGET, BODY_TIMEOUT_S, MAX_BODY, MAX_SAMPLES, BodyBudget, LengthCheck, TooLarge, TooSlow,
                     declared_length, read_body)

log = logging.getLogger("rbrlang.serve")

SHAPE = '{"query": [...], "prompts": [...], "labels": [...]}'


def _error(status: int, message: str, sample: Optional[int] = None) -> JSONResponse:
    # OpenRLHF's client logs a failed request at INFO and drops the body: the reason is said here.
    log.warning("answered %d%s: %s", status, "" if sample is None else f" (sample {sample})", message)
    body = {"error": message}
    if sample is not None:
        body["sample"] = sample
    return JSONResponse(body, status_code=status)


def grader_description(grader) -> dict:
    """The grader as a JSON object for /health: its class, what makes it the
    grader it is (a grader's `identity` is a JSON object as text: unpacked, not
    sent as a string inside JSON), and its context length."""
    out: dict = {"class": type(grader).__name__}
    identity = getattr(grader, "identity", None)
    if identity:
        try:
            value = json.loads(identity)
        except (TypeError, ValueError):
            value = None
        if isinstance(value, dict):
            out.update(value)
        else:
            out["identity"] = str(identity)
    context = getattr(getattr(grader, "encoder", None), "max_length", None)
    if context is not None:
        out["context"] = context
    return out


def create_app(reward, max_batch: int = 64, batch_window_ms: float = 5.0,
               strip_suffixes: Sequence[str] = (), max_body: int = MAX_BODY,
               max_samples: int = MAX_SAMPLES, body_timeout_s: float = BODY_TIMEOUT_S,
               scores: Optional[str] = None) -> Starlette:
    """A Starlette app serving `reward` (an `RBRReward`) to OpenRLHF.

    `max_body` (bytes) and `max_samples` bound one request, and `body_timeout_s`
    the time its body may take to arrive; the bodies held at once are bounded
    by `BODY_BUDGET` times `max_body`. `app.state.batcher`
    holds the `Batcher` (its `stats` count batches) once the app has started.
    `scores`: what answers' `scores` are (`integrations.openrlhf.answer`); None: `RBR_SCORES`, else "reward"."""
    has_rm = reward.rm is not None
    scores = scores_setting(scores)
    suffixes = tuple(strip_suffixes)
    lengths = LengthCheck(reward.policy, reward.grader)
    budget = BodyBudget(BODY_BUDGET * max_body)

    def score(entries: list) -> list:
        """Scores (index in its request, Sample) entries on the grader's thread; a
        sample the grader's context cannot take fails its request alone."""
        samples = [s for _, s in entries]
        problems = lengths.too_long(samples)
        good = [k for k in range(len(samples)) if k not in problems]
        out: list = [None] * len(samples)
        for k, item in zip(good, score_samples(reward, [samples[k] for k in good])):
            out[k] = item
        for k, why in problems.items():
            out[k] = SampleError(entries[k][0], why)
        return out

    batcher = Batcher(score, max_batch=max_batch, window_s=batch_window_ms / 1000.0)

    async def get_reward(request: Request) -> JSONResponse:
        declared = declared_length(request)
        if declared is not None and declared > max_body:  # before a byte is read
            return _error(413, str(TooLarge(declared, max_body, True)))
        held = max_body if declared is None else declared
        await budget.reserve(held)
        try:
            try:
                body = await read_body(request, max_body, declared, body_timeout_s)
            except TooLarge as exc:
                return _error(413, str(exc))
            except TooSlow as exc:
                return _error(408, str(exc))
            await budget.release(held - len(body))  # what a body sent without a length did not use
            held = len(body)
            return await _reward(body)
        except asyncio.CancelledError:
            # Shutdown's grace period is over (uvicorn cancels what is left): say so, rather
            # than drop the connection and log a traceback. Its samples are not scored.
            return _error(503, "the server is shutting down; this request was not scored: send it again")
        finally:
            await budget.release(held)

    async def _reward(body: bytes) -> JSONResponse:
        try:
            data = parse_json(body.decode("utf-8"))
        except UnicodeDecodeError as exc:
            return _error(400, f"the body is not UTF-8 (byte {exc.start})")
        except JSONTextError as exc:
            return _error(400, f"the body is not JSON we can read ({exc.message}, at character {exc.position})")
        if not isinstance(data, dict):
            return _error(400, f"the body must be a JSON object {SHAPE}")
        missing = [k for k in ("query", "prompts", "labels") if k not in data]
        if missing:
            return _error(422, f"missing {', '.join(map(repr, missing))}: the body is {SHAPE}, one entry per sample")
        count = len(data["query"]) if isinstance(data["query"], list) else 0
        if count > max_samples:
            return _error(413, f"the request has {count:,} samples; the limit is {max_samples:,} a request")
        try:
            samples = samples_from_request(data["query"], data["prompts"], data["labels"], reward.policy, suffixes)
        except SampleError as exc:
            return _error(422, str(exc), exc.index)
        hopeless = lengths.hopeless(samples)
        if hopeless is not None:
            return _error(422, str(hopeless), hopeless.index)
        try:
            items = await batcher.submit(list(enumerate(samples)))
        except RbrError as exc:  # a sample over the grader's context, a conversation it cannot take
            return _error(422, str(exc), getattr(exc, "index", None))
        except Exception as exc:  # a bug: this request fails, the server goes on
            log.exception("scoring a request failed")
            return _error(500, f"internal error while scoring ({type(exc).__name__}: {exc})")
        return JSONResponse(answer(items, has_rm, scores=scores))

    async def health(request: Request) -> JSONResponse:
        ok = batcher.running
        return JSONResponse({"status": "ok" if ok else "stopped", "policy": reward.policy.name,
                             "grader": grader_description(reward.grader), "rm": has_rm,
                             "in_flight": batcher.in_flight,
                             "limits": {"max_body": max_body, "max_samples": max_samples,
                                        "body_timeout_s": body_timeout_s},
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
