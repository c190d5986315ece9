"""Test and bench helpers for the reward server: a real uvicorn server on a free
127.0.0.1 port in a thread, or `rbrc serve` in its own process, and
OpenRLHF-shaped requests made the way OpenRLHF makes them (chat template, then
decode(prompt ids + response ids))."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time

from .files import ROOT, gold_rows


@contextlib.contextmanager
def running_server(app, startup_timeout: float = 60.0):
    """Serve `app` on 127.0.0.1 (a free port) in a thread; yields (base_url, uvicorn server).
    Leaving the block shuts it down gracefully and joins the thread."""
    from rbrlang.cli.serve import listen
    from rbrlang.serve import server

    sock = listen("127.0.0.1", 0)
    srv = server(app, "127.0.0.1", sock.getsockname()[1], log_level="warning")
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not srv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", srv
    finally:
        srv.should_exit = True
        thread.join(timeout=120)
        sock.close()


def free_port() -> int:
    """A 127.0.0.1 port nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def signal_with_a_request_in_flight(args, send, stop: int) -> tuple[int, str, dict]:
    """Run `rbrc serve ARGS --port P` in its own process (one OpenMP thread); once it
    answers /health, call `send(url)` in a thread, and once the server counts that
    request in flight, send the process the signal `stop`. Returns (exit code,
    stderr, answer), answer["r"] being what `send` returned."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "rbrlang.cli", "serve", *map(str, args), "--port", str(port)],
                            cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    answer = {}
    sender = threading.Thread(target=lambda: answer.update(r=send(url)))
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if http().get(url + "/health", timeout=5).status_code == 200:
                    break
            except http().TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.2)
        sender.start()
        while http().get(url + "/health", timeout=5).json()["in_flight"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        proc.send_signal(stop)
        code = proc.wait(timeout=60)  # not the server's batch window
    sender.join(timeout=60)
    return code, proc.stderr.read(), answer


def http():
    """httpx2 (installed with huggingface-hub), else httpx: the same API."""
    try:
        import httpx2 as httpx
    except ImportError:
        import httpx
    return httpx


class PolicyModelText:
    """What OpenRLHF sends, made with a (policy model) tokenizer: the chat-templated
    prompt, and the query decoded from prompt ids + response ids + EOS with
    `skip_special_tokens=False` (openrlhf/utils/agent.py)."""

    def __init__(self, tokenizer):
        self.tok = tokenizer

    def prompt(self, messages) -> str:
        return self.tok.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)

    def query(self, prompt: str, response: str) -> str:
        ids = self.tok(prompt, add_special_tokens=False)["input_ids"]
        ids += self.tok(response, add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id]
        return self.tok.decode(ids, skip_special_tokens=False)


def completion_text(value) -> str:
    return value if isinstance(value, str) else "".join(m["content"] for m in value)


def gold_samples(n: int, shortest: bool = True) -> list[dict]:
    """`n` gold rows as {"messages", "completion", "category"} (shortest first)."""
    return [{"messages": r["prompt"], "completion": completion_text(r["completion"]), "category": r["category"]}
            for r in gold_rows(n, shortest)]


def openrlhf_body(texts: PolicyModelText, samples, label: str = "json") -> dict:
    """A /get_reward body for `samples`; label "json": {"category", "messages"}, "category": the bare category."""
    prompts = [texts.prompt(s["messages"]) for s in samples]
    queries = [texts.query(p, s["completion"]) for p, s in zip(prompts, samples)]
    if label == "json":
        labels = [json.dumps({"category": s["category"], "messages": s["messages"]}) for s in samples]
    else:
        labels = [s["category"] for s in samples]
    return {"query": queries, "prompts": prompts, "labels": labels}
