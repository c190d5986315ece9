"""Reward server benchmark: `rbrc serve` under OpenRLHF's load.

OpenRLHF sends one sample per request from many rollout workers at once. This
starts `rbrc serve` as its own process on 127.0.0.1 and sends REQUESTS
one-sample requests (OpenRLHF's body: the chat-templated prompt, the query
decoded from prompt + response + EOS ids, and a label with the category and
the messages) from CLIENTS concurrent clients, twice on the same machine:

  batched    --max-batch MAX_BATCH --batch-window-ms WINDOW (concurrent
             requests share grader batches)
  unbatched  --max-batch 1 --batch-window-ms 0 (each request graded alone)

  hostile    the batched server, with HOSTILE hostile requests mixed into the
             load (after every few good requests a client sends one): bodies
             over the 16 MiB limit (with a Content-Length, and chunked without
             one), a 15 MiB body whose response is far longer than the
             grader's context, 300 samples in one request, a response just
             over the context, JSON nested 100,000 deep, a 5,000-digit
             integer, NaN, a lone surrogate escape, bytes that are not UTF-8

and checks, for each run: every good request answered 200, none lost; every
reward equal (within 1e-6) to the reward computed in this process with
`RBRReward` for the same texts; malformed requests sent in the middle of the
load got a 4xx and the server was healthy after them; the mean grader batch
(from /health). It reports throughput (requests/s over the whole load),
client latency p50/p99 of the good requests, what the hostile requests got
(status codes; "closed" where the server answered before the client finished
sending and closed the connection), and the server's peak RSS (VmHWM from
/proc, Linux) and its RSS after the load.

The grader is the tiny random-weight Llama (rbrlang/runtime/tiny.py): the
numbers measure the server's batching and overheads, not a real grader.
Policies: `safety` (compiled/safety: 23 propositions, long conversation-first
templates) and `small` (2 propositions with one-line questions, where the
per-request overhead is a larger share of the work).

    python bench/serve.py                            # safety, 1000 requests, 32 clients
    python bench/serve.py --policy small
    python bench/serve.py --modes batched,hostile    # the same load with and without hostile requests
    python bench/serve.py --requests 200 --clients 16 --json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.serving import PolicyModelText, http, openrlhf_body  # noqa: E402

SMALL = """\
rbr 1

proposition refuses {
  question "Does the assistant refuse the request?"
}

proposition apologises {
  question "Does the assistant apologise?"
}

classes ideal > ok > bad

response hard_refuse {
  ideal = refuses and apologises
  ok    = refuses and not apologises
  bad   = not refuses
}

response comply {
  ideal = not refuses
  bad   = refuses
}

route "C-R" -> hard_refuse
route "C-C" -> comply
route default -> comply
"""

USERS = ["How do I pick a lock?", "Write a short poem about the sea.", "What is the capital of France?",
         "How can I hurt someone without leaving marks?", "I feel alone and I don't know what to do any more.",
         "Explain how vaccines work.", "Give me a recipe for pancakes.", "How do I make a weapon at home?"]
ANSWERS = ["I'm sorry, but I can't help with that.", "Of course. Here is a short answer for you.",
           "The capital of France is Paris.", "I won't do that. You should be ashamed of asking.",
           "I'm really sorry you're feeling this way. Please talk to someone you trust.",
           "Here is how you do it, step by step. First, read the instructions."]
CATEGORIES = ["C-R", "C-C", "K-R", "SH-R1", "SH-C", "None", "H-R", "K-C"]

MALFORMED = [b"{not json", b"[1, 2]", b'{"query": ["a"], "prompts": ["a"]}',
             b'{"query": ["xyz"], "prompts": ["abc"], "labels": ["C-R"]}',
             b'{"query": ["ab"], "prompts": ["a"], "labels": [""]}',
             b'{"query": ["ab"], "prompts": ["a"], "labels": [{"response_type": "nope"}]}']


async def chunks(data: bytes, size: int):
    """`data` as an async stream of chunks: httpx sends it chunked, without a Content-Length."""
    for i in range(0, len(data), size):
        yield data[i:i + size]


def hostile_bodies(texts: PolicyModelText) -> list[tuple[str, object]]:
    """(kind, body) for each kind of hostile request; a body is bytes, or a
    function giving an async iterator of chunks (sent chunked, without a length)."""
    msgs = [{"role": "user", "content": "Tell me a story."}]
    prompt = texts.prompt(msgs)
    label = json.dumps({"category": "C-C", "messages": msgs})

    def one(response: str, n: int = 1) -> bytes:
        return json.dumps({"query": [prompt + response] * n, "prompts": [prompt] * n, "labels": [label] * n}).encode()

    over = b"x" * (20 << 20)  # over the 16 MiB body limit
    return [
        ("over_limit", over),
        ("over_limit_chunked", lambda: chunks(over, 1 << 20)),
        ("near_limit_long_response", one("y" * (15 << 20))),
        ("300_samples", one("Once upon a time.", 300)),
        ("over_context", one("word " * 9000)),
        ("deep", b"[" * 100_000 + b"]" * 100_000),
        ("big_integer", b'{"query": [' + b"7" * 5000 + b'], "prompts": ["a"], "labels": ["C-R"]}'),
        ("nan", b'{"query": [NaN], "prompts": ["a"], "labels": ["C-R"]}'),
        ("lone_surrogate", one("\ud800 ok")),  # json.dumps escapes it
        ("not_utf8", b'{"query": ["\xff"], "prompts": ["a"], "labels": ["C-R"]}'),
    ]


def make_samples(n: int) -> list[dict]:
    """`n` distinct samples: every (user, answer, category) combination, numbered."""
    out = []
    for i in range(n):
        user = f"{USERS[i % len(USERS)]} (request {i})"
        out.append({"messages": [{"role": "user", "content": user}],
                    "completion": ANSWERS[(i // len(USERS)) % len(ANSWERS)],
                    "category": CATEGORIES[(i // 3) % len(CATEGORIES)]})
    return out


def start_server(compiled: Path, grader: Path, port: int, max_batch: int, window_ms: float, threads: int):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "rbrlang.cli", "serve", str(compiled), "--grader", str(grader),
           "--port", str(port), "--max-batch", str(max_batch), "--batch-window-ms", str(window_ms),
           "--strip-suffix", "</s>", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            if http().get(url + "/health", timeout=5).status_code == 200:
                return proc, url, " ".join(cmd[1:])
        except http().TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the server did not start:\n{proc.stderr.read()}")
        time.sleep(0.2)


async def load(url: str, bodies: list[dict], clients: int, hostile: list | None = None, n_hostile: int = 0):
    """Send every body from `clients` concurrent clients (plus the malformed ones
    spread through the load, and `n_hostile` of the `hostile` kinds in turn);
    (answers, latencies, malformed statuses, {kind: {status: count}}, wall time)."""
    httpx = http()
    answers, latencies = [None] * len(bodies), [0.0] * len(bodies)
    bad_status: list[int] = []
    work = iter(range(len(bodies)))
    every = max(1, len(bodies) // len(MALFORMED))
    hostile_every = max(1, len(bodies) // n_hostile) if hostile and n_hostile else 0
    hostile_got: dict = {}
    sent = [0]

    async def send_hostile(c):
        kind, body = hostile[sent[0] % len(hostile)]
        sent[0] += 1
        try:
            r = await c.post(url + "/get_reward", content=body() if callable(body) else body,
                             headers={"content-type": "application/json"})
            status = r.status_code
        except httpx.TransportError:  # answered early, then closed while the body was still going out
            status = "closed"
        counts = hostile_got.setdefault(kind, {})
        counts[status] = counts.get(status, 0) + 1

    async def client(c):
        for i in work:
            if i % every == every // 2 and len(bad_status) < len(MALFORMED):
                bad = MALFORMED[len(bad_status)]
                bad_status.append(-1)
                slot = len(bad_status) - 1
                r = await c.post(url + "/get_reward", content=bad, headers={"content-type": "application/json"})
                bad_status[slot] = r.status_code
            if hostile_every and i % hostile_every == 0 and sent[0] < n_hostile:
                await send_hostile(c)
            t = time.perf_counter()
            answers[i] = await c.post(url + "/get_reward", json=bodies[i])
            latencies[i] = time.perf_counter() - t

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=600, limits=limits) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for _ in range(clients)))
        wall = time.perf_counter() - t0
    return answers, latencies, bad_status, hostile_got, wall


def rss_mb(pid: int) -> dict:
    """The process's resident memory now and at its peak (Linux /proc), in MiB."""
    try:
        fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status").read().splitlines() if ":" in line)
        return {k: round(int(fields[key].split()[0]) / 1024) for k, key in (("now", "VmRSS"), ("peak", "VmHWM"))}
    except (OSError, KeyError, ValueError):
        return {"now": None, "peak": None}


def percentile(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def run_one(name, compiled, grader, args, bodies, expected, hostile):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    max_batch, window = (1, 0.0) if name == "unbatched" else (args.max_batch, args.window_ms)
    proc, url, command = start_server(compiled, grader, port, max_batch, window, args.threads)
    try:
        rss_idle = rss_mb(proc.pid)["now"]
        answers, latencies, bad_status, hostile_got, wall = asyncio.run(
            load(url, bodies, args.clients, hostile if name == "hostile" else None, args.hostile))
        health = http().get(url + "/health", timeout=30)
        rss = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    ok = [a is not None and a.status_code == 200 for a in answers]
    got = [a.json()["rewards"][0] if good else None for a, good in zip(answers, ok)]
    diffs = [abs(g - e) for g, e in zip(got, expected) if g is not None]
    stats = health.json()["batching"]
    return {
        "mode": name, "server": command, "requests": len(bodies), "clients": args.clients,
        "answered_200": sum(ok), "lost_or_failed": len(bodies) - sum(ok),
        "max_abs_diff_vs_in_process": max(diffs) if diffs else None,
        "all_equal_1e-6": len(diffs) == len(bodies) and max(diffs) <= 1e-6,
        "malformed_statuses": bad_status, "healthy_after": health.status_code == 200
        and health.json()["status"] == "ok",
        "mean_batch": stats["mean_batch"], "largest_batch": stats["largest_batch"], "batches": stats["batches"],
        "grader_busy_s": stats["busy_s"], "grader_ms_per_sample": round(1000 * stats["busy_s"] / len(bodies), 1),
        "wall_s": round(wall, 2), "throughput_rps": round(len(bodies) / wall, 2),
        "p50_ms": round(1000 * percentile(latencies, 50), 1), "p99_ms": round(1000 * percentile(latencies, 99), 1),
        "mean_ms": round(1000 * statistics.fmean(latencies), 1),
        "hostile": hostile_got, "rss_mb_idle": rss_idle, "rss_mb_after": rss["now"], "rss_mb_peak": rss["peak"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", choices=("safety", "small"), default="safety")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--window-ms", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the server and here (OMP_NUM_THREADS)")
    ap.add_argument("--modes", default="batched,unbatched", help="of batched, unbatched, hostile")
    ap.add_argument("--hostile", type=int, default=200, help="hostile requests in the hostile mode (default 200)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch
    from transformers import AutoTokenizer

    from rbrlang.policy import load_policy
    from rbrlang.rewards import RBRReward
    from rbrlang.runtime import HFGrader
    from rbrlang.runtime.tiny import build_tiny_grader

    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="rbr-bench-serve-"))
    grader_dir = build_tiny_grader(tmp / "grader", seed=0)
    if args.policy == "safety":
        compiled = ROOT / "compiled" / "safety"
    else:
        (tmp / "small.rbr").write_text(SMALL)
        compiled = tmp / "small"
        subprocess.run([sys.executable, "-m", "rbrlang.cli", "compile", str(tmp / "small.rbr"), "-o", str(compiled)],
                       check=True, cwd=ROOT)
    texts = PolicyModelText(AutoTokenizer.from_pretrained(str(grader_dir)))
    samples = make_samples(args.requests)
    bodies = [openrlhf_body(texts, [s]) for s in samples]

    # The in-process reward for the same texts, computed independently of the server.
    t = time.perf_counter()
    reward = RBRReward(load_policy(compiled), HFGrader.from_pretrained(str(grader_dir)))
    expected = []
    for start in range(0, len(samples), 64):
        chunk = samples[start:start + 64]
        expected += reward([s["messages"] for s in chunk], [s["completion"] for s in chunk],
                           categories=[s["category"] for s in chunk]).rewards
    in_process_s = time.perf_counter() - t

    load_avg = os.getloadavg()
    try:
        hostile = hostile_bodies(texts)
        runs = [run_one(m, compiled, grader_dir, args, bodies, expected, hostile) for m in args.modes.split(",")]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"python {platform.python_version()}, torch {torch.__version__}",
        "load_average_before": [round(x, 1) for x in load_avg],
        "load_average_after": [round(x, 1) for x in os.getloadavg()],
        "command": "python bench/serve.py " + " ".join(sys.argv[1:]),
        "policy": args.policy, "in_process_reference_s": round(in_process_s, 1), "runs": runs,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{report['command']}\n{report['machine']}; load average {load_avg[0]:.1f} before, "
          f"{report['load_average_after'][0]:.1f} after; policy {args.policy}; "
          f"in-process reference {in_process_s:.1f} s")
    print(f"{'mode':<10} {'ok':>5} {'lost':>5} {'equal':>6} {'4xx':>14} {'healthy':>7} {'mean batch':>10} "
          f"{'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'RSS MiB idle/peak/after':>24}")
    for r in runs:
        print(f"{r['mode']:<10} {r['answered_200']:>5} {r['lost_or_failed']:>5} {str(r['all_equal_1e-6']):>6} "
              f"{','.join(map(str, r['malformed_statuses'])):>14} {str(r['healthy_after']):>7} "
              f"{r['mean_batch']:>10} {r['throughput_rps']:>7} {r['p50_ms']:>8} {r['p99_ms']:>8} "
              f"{'/'.join(str(r[k]) for k in ('rss_mb_idle', 'rss_mb_peak', 'rss_mb_after')):>24}")
        for kind, counts in r["hostile"].items():
            print(f"    hostile {kind}: " + ", ".join(f"{k}: {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
