"""OpenAIGrader: P(yes) from an OpenAI-compatible completions server.

At RL scale the judge runs as a service (vLLM with tensor or pipeline
parallelism, several nodes through Ray) and the trainer calls it. This client
sends the shared prompt encoder's exact ids (a completions `prompt` may be a
list of token-id lists, so nothing is tokenised twice) and asks for one token.

What the server must support, per request (vLLM's completions API):
  `logprob_token_ids`: the log-probabilities of exactly these token ids,
      from the full-vocabulary log-softmax, whatever their rank (a top-k list
      cannot give P(yes): a `no` outside the top k would be missing);
  `return_tokens_as_token_ids`: the returned keys are "token_id:N", so a
      token is named by its id, not by text that two ids may share.
`logprobs` is 1 (vLLM requires it with `logprob_token_ids`): a server that
ignores `logprob_token_ids` then returns at most the sampled and the top
token, so it fails on the first request, with a `GraderError` naming what is
missing, rather than on whichever item first has an answer outside its top k.

Requests carry `prompts_per_request` prompts; at most `concurrency` are in
flight (threads sharing one pooled httpx2 client, so it works inside an
event loop too). A connection error, a timeout, or a 429/5xx answer is retried
`retries` times with exponential backoff and jitter; any other 4xx is an
error at once, with the server's message.
"""
from __future__ import annotations

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

from ..errors import GraderError
from .base import GradeStats, IdsGrader
from .options import GraderOptions

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class Server:
    """The HTTP side of a client of an OpenAI-compatible server, shared by the
    grader (completions) and the generator (`rbrlang.generate`, chat
    completions): one pooled client for the request threads, retries with
    backoff on connection errors, timeouts and 429/5xx, one-line errors.

    `role` names the server in errors ("the grader server at …"). Pickles
    without its HTTP client; the copy opens its own."""

    def __init__(self, base_url: str, *, api_key: Optional[str] = None, concurrency: int = 8,
                 timeout: float = 300.0, retries: int = 4, backoff: float = 0.5, role: str = "grader"):
        _http()  # fail now, not at the first request
        root = base_url.rstrip("/")
        self.base_url = root if root.endswith("/v1") else root + "/v1"
        self.api_key = api_key
        self.concurrency = max(1, int(concurrency))
        self.timeout, self.retries, self.backoff = float(timeout), int(retries), float(backoff)
        self.role = role
        self._lock, self._http_client = threading.Lock(), None

    def _client(self):
        """One pooled client, shared by the request threads (an httpx client is
        thread-safe; it does not pickle, so a pickled copy makes a new one)."""
        with self._lock:
            if self._http_client is None:
                httpx = _http()
                headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
                self._http_client = httpx.Client(
                    headers=headers, timeout=httpx.Timeout(self.timeout, connect=min(10.0, self.timeout)),
                    limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency))
            return self._http_client

    def send(self, method: str, path: str, payload=None, on_retry: Optional[Callable[[], None]] = None) -> dict:
        """One request, retried on connection errors, timeouts and 429/5xx."""
        httpx = _http()
        url = self.base_url + path
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._client().request(method, url, json=payload)
            except httpx.TransportError as exc:  # connect, read or write failure, timeout
                if last:
                    raise GraderError(f"the {self.role} server at {url} did not answer after {attempt + 1} tries: "
                                      f"{type(exc).__name__}: {exc}") from None
            else:
                if response.status_code < 400:
                    try:
                        return response.json()
                    except ValueError:
                        raise GraderError(f"the {self.role} server at {url} answered with something that is not "
                                          f"JSON: {response.text[:200]!r}") from None
                if response.status_code not in RETRY_STATUS or last:
                    raise GraderError(f"the {self.role} server at {url} answered {response.status_code}: "
                                      f"{_server_message(response)}")
            if on_retry is not None:
                on_retry()
            time.sleep(min(30.0, self.backoff * 2 ** attempt) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def served_model(self, model: str) -> dict:
        """The server's entry for `model` from /v1/models (its context length, if it says)."""
        listing = self.send("GET", "/models")
        models = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(models, list):
            raise GraderError(f"{self.base_url}/models is not an OpenAI-compatible model list")
        for entry in models:
            if isinstance(entry, dict) and entry.get("id") == model:
                return entry
        names = ", ".join(str(e.get("id")) for e in models if isinstance(e, dict)) or "none"
        raise GraderError(f"the server at {self.base_url} does not serve `{model}` (it serves: {names})")

    def close(self) -> None:
        with self._lock:
            if self._http_client is not None:
                self._http_client.close()
                self._http_client = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_lock"], state["_http_client"] = None, None  # neither pickles
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()


class OpenAIGrader(IdsGrader):
    """Grade through `base_url` (e.g. "http://127.0.0.1:8000/v1"), served model `model`.

    Args:
        base_url: the server's root or its `/v1` root.
        model: the model name the server serves (vLLM: `--served-model-name`,
            by default its `--model`).
        tokenizer: a local folder or hub id of the served model's tokenizer
            (default: `model`). Prompt ids are made here with it.
        api_key: sent as a bearer token when given.
        concurrency: requests in flight at once.
        prompts_per_request: prompts batched into one completions request.
        timeout: seconds for one request (connecting: at most 10).
        retries, backoff: how often and how patiently to retry.
        options: the options every backend takes (`GraderOptions`); its
            fields also work as keyword arguments (`cache=`, `truncate=`, ...).
            `max_length` defaults to the server's `max_model_len` from
            `/v1/models`, less one for the answer token, when it says.

    The served model's weights are on the server: the identity names the
    server, the model and the `root` it reports, not a fingerprint of files.
    Pickles without its HTTP client; the copy opens its own.
    """

    def __init__(self, base_url: str, model: str, options: Optional[GraderOptions] = None, *,
                 tokenizer: Optional[str] = None, api_key: Optional[str] = None, concurrency: int = 8,
                 prompts_per_request: int = 32, timeout: float = 300.0, retries: int = 4, backoff: float = 0.5,
                 **option_values):
        options = GraderOptions.of(options, **option_values)
        self.server = Server(base_url, api_key=api_key, concurrency=concurrency, timeout=timeout, retries=retries,
                             backoff=backoff)
        from transformers import AutoTokenizer

        self.base_url, self.model = self.server.base_url, model
        self.concurrency, self.prompts_per_request = self.server.concurrency, max(1, int(prompts_per_request))
        served = self.server.served_model(model)
        limit = served.get("max_model_len")
        limit = limit - 1 if isinstance(limit, int) else None  # room for the answer token
        try:
            tok = AutoTokenizer.from_pretrained(tokenizer or model)
        except (OSError, ValueError) as exc:
            raise GraderError(f"cannot load the tokenizer `{tokenizer or model}` for the served model: "
                              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc}; "
                              "pass tokenizer= (a local folder or hub id of the served model's tokenizer)") from None
        super().__init__(tok, options, limit)
        self.identity = json.dumps({"backend": "openai", "url": self.base_url, "model": model,
                                    "root": served.get("root"), "chat": self.encoder.chat})

    # --- grading --------------------------------------------------------------------
    def _logprobs(self, prompts, token_ids, stats: GradeStats):
        chunks = [list(range(s, min(len(prompts), s + self.prompts_per_request)))
                  for s in range(0, len(prompts), self.prompts_per_request)]
        out: list = [None] * len(prompts)

        def run(chunk):
            payload = {"model": self.model, "prompt": [list(prompts[k]) for k in chunk], "max_tokens": 1,
                       "temperature": 0.0, "logprobs": 1, "logprob_token_ids": list(token_ids),
                       "return_tokens_as_token_ids": True}
            answer = self.server.send("POST", "/completions", payload, on_retry=stats.count_retry)
            for k, values in zip(chunk, _read_choices(answer, len(chunk), token_ids, self.base_url), strict=True):
                out[k] = values

        if len(chunks) == 1:
            run(chunks[0])
        else:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(chunks))) as pool:
                futures = [pool.submit(run, c) for c in chunks]
                try:
                    for future in futures:
                        future.result()  # the first error, if any, is raised here
                except BaseException:
                    for future in futures:  # send nothing more; requests in flight end on their own
                        future.cancel()
                    raise
        stats.batches += len(chunks)
        return out

    def close(self) -> None:
        self.server.close()


def _http():
    """httpx2 (what huggingface-hub, and so transformers, already installs), or httpx: the same API."""
    try:
        import httpx2 as httpx
    except ImportError:
        try:
            import httpx
        except ImportError:
            raise GraderError("the openai backend needs an HTTP client: pip install 'rbrlang[openai]'") from None
    return httpx


def _read_choices(answer, count: int, token_ids, url: str) -> list[list[float]]:
    """Each prompt's log-probabilities of `token_ids`, from a completions answer."""
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not isinstance(choices, list) or len(choices) != count:
        raise GraderError(f"the grader server at {url} answered {count} prompts with "
                          f"{len(choices) if isinstance(choices, list) else 'no'} choices")
    wanted = {f"token_id:{t}": t for t in token_ids}
    out: list = [None] * count
    for position, choice in enumerate(choices):
        index = choice.get("index", position) if isinstance(choice, dict) else position
        logprobs = choice.get("logprobs") if isinstance(choice, dict) else None
        top = logprobs.get("top_logprobs") if isinstance(logprobs, dict) else None
        step = top[0] if isinstance(top, list) and top and isinstance(top[0], dict) else None
        if step is None:
            raise GraderError(f"the grader server at {url} returned no log-probabilities; P(yes) needs the "
                              "log-probability of each yes and no token id (an OpenAI-compatible server "
                              "supporting `logprob_token_ids`, such as vLLM's)")
        found = {wanted[key]: value for key, value in step.items() if key in wanted}
        missing = [t for t in token_ids if t not in found]
        if missing:
            raise GraderError(f"the grader server at {url} returned no log-probability for answer token ids "
                              f"{missing}; it must honour `logprob_token_ids` and `return_tokens_as_token_ids` "
                              "(vLLM's completions API does), a top-k list is not enough for P(yes)")
        if not isinstance(index, int) or not 0 <= index < count or out[index] is not None:
            raise GraderError(f"the grader server at {url} answered with choice index {index!r} for {count} prompts")
        out[index] = [float(found[t]) for t in token_ids]
    return out


def _server_message(response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    error = body.get("error", body) if isinstance(body, dict) else body
    message = error.get("message") if isinstance(error, dict) else None
    return str(message or error)[:300]


__all__ = ["OpenAIGrader"]
