"""`rbrc serve COMPILED --grader MODEL`: a reward server for OpenRLHF.

It speaks OpenRLHF's remote reward protocol (POST /get_reward; GET /health)
and batches concurrent requests into grader batches. Everything cheap is
checked first (the extra is installed, the policy loads, the port is free),
then the models load, then it serves until Ctrl-C or SIGTERM, which finish
the requests in flight (for at most --grace-s seconds) before it exits (130
after Ctrl-C, 143 after SIGTERM)."""
from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import sys

from ..errors import EXIT_OK, EXIT_TERMINATED, RbrError, UsageError

EPILOG = """\
request:  {"query": [prompt+response text], "prompts": [prompt text], "labels": [label]}
          label: the request category ("C-R"), or a JSON object
          {"category": "C-R", "messages": [{"role": "user", "content": "…"}]}
          so the grader reads the conversation as messages (else: the prompt
          text as one user message)
answer:   {"rewards": [...], "scores": [...], "extra_logs": {"rbr_routed": [...], "rbr": [...]}}
          a sample whose category has no route gets 0.0 (or the --rm score)
OpenRLHF: --reward.remote_url http://HOST:PORT/get_reward --data.label_key label
          (before OpenRLHF 0.10.2: --remote_rm_url, --label_key)
"""


def register(sub) -> None:
    import argparse

    from ..serve import GRACE_S
    from ..serve.limits import BODY_TIMEOUT_S, MAX_BODY, MAX_SAMPLES
    from .grader_args import add_grader_options

    p = sub.add_parser("serve", help="serve a compiled policy's rewards to OpenRLHF over HTTP",
                       description=__doc__.split("\n\n", 1)[1].replace("\n", " "), epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("compiled", metavar="COMPILED")
    add_grader_options(p, required=True, cache=False, max_batch=False,
                       grader_help="a local model folder or hub id (served, with --backend openai)")
    p.add_argument("--rm", metavar="MODEL", help="a reward model (one-output sequence classifier) added to the RBR")
    p.add_argument("--allow-untrained-head", action="store_true",
                   help="serve --rm even when its checkpoint has no score head (a causal LM: random scores)")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1; 0.0.0.0 for "
                                                      "other machines)")
    p.add_argument("--port", type=int, default=5000, help="default 5000")
    p.add_argument("--max-batch", type=int, default=64, help="samples per grader batch at most (default 64)")
    p.add_argument("--batch-window-ms", type=float, default=5.0,
                   help="how long an idle server waits for more requests before grading (default 5)")
    p.add_argument("--strip-suffix", action="append", default=[], metavar="TEXT",
                   help="text to cut off the end of each response, e.g. the policy model's end-of-turn token "
                        "'<|im_end|>' (repeatable)")
    p.add_argument("--max-body-mb", type=float, default=MAX_BODY / (1 << 20), metavar="MB",
                   help=f"the largest request body (default {MAX_BODY >> 20}; larger: 413 before it is read)")
    p.add_argument("--max-samples", type=int, default=MAX_SAMPLES, metavar="N",
                   help=f"samples per request at most (default {MAX_SAMPLES}; more: 413)")
    p.add_argument("--body-timeout-s", type=float, default=BODY_TIMEOUT_S, metavar="SECONDS",
                   help=f"how long a request's body may take to arrive after its headers (default "
                        f"{BODY_TIMEOUT_S:g}; slower: 408)")
    p.add_argument("--grace-s", type=float, default=GRACE_S, metavar="SECONDS",
                   help=f"on Ctrl-C or SIGTERM, how long requests in flight may take to finish (default "
                        f"{GRACE_S:g}); a second Ctrl-C quits at once")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(run=cmd_serve)


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, made here so a taken port is a one-line error, not uvicorn's exit."""
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port} is not a port number (0-65535)")
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise UsageError(f"--host {host}: {exc.strerror}") from None
    sock = socket.socket(info[0], socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(info[4])
    except OSError as exc:
        sock.close()
        why = "the port is in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc)).lower()
        raise RbrError(f"cannot listen on {host}:{port}: {why}; pick another --port") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def cmd_serve(args) -> int:
    from .data import open_policy
    from .grader_args import (
        check_grader_options,
        load_failure,
        load_grader,
        model_files,
        model_path,
    )
    from .output import plain_warnings

    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise RbrError(f"rbrc serve needs starlette and uvicorn ({exc.name} is missing): "
                       "pip install 'rbrlang[serve]'") from None
    check_grader_options(args)
    if args.max_batch < 1:
        raise UsageError("--max-batch must be at least 1")
    if args.batch_window_ms < 0:
        raise UsageError("--batch-window-ms cannot be negative")
    if not args.max_body_mb > 0:
        raise UsageError("--max-body-mb must be more than 0")
    if args.max_samples < 1:
        raise UsageError("--max-samples must be at least 1")
    if not args.body_timeout_s > 0:
        raise UsageError("--body-timeout-s must be more than 0")
    if not args.grace_s >= 0:
        raise UsageError("--grace-s cannot be negative")
    # The reward served is the one trained on: fitted weights and calibration are read, and a
    # stale one is refused here, before the model loads, as `load_policy` refuses it.
    policy = open_policy(args.compiled, weights="check", calibration="check")
    if args.rm:
        model_path("--rm", args.rm, "reward model")
        model_files("--rm", args.rm, "reward model")
    sock = listen(args.host, args.port)
    # Warnings one line each, from loading to the last request (a grader's warning
    # about a request's answers comes while serving, on the grader's thread).
    with plain_warnings("serve"), contextlib.closing(sock):
        from ..integrations.reward_model import load_reward_model
        from ..rewards import RBRReward
        from ..serve import create_app, server

        try:  # the reward model first (a causal LM given as one is refused before the grader loads);
            # it runs here, on --device (auto with a backend that takes none)
            rm = load_reward_model(args.rm, device=args.device or "auto", dtype=args.dtype or "auto",
                                   allow_untrained_head=args.allow_untrained_head)
        except (OSError, ValueError, KeyError) as exc:
            if isinstance(exc, RbrError):
                raise
            raise load_failure("--rm", args.rm, "reward model", exc) from None
        grader = load_grader(args)
        app = create_app(RBRReward(policy, grader, rm), max_batch=args.max_batch,
                         batch_window_ms=args.batch_window_ms, strip_suffixes=args.strip_suffix,
                         max_body=int(args.max_body_mb * (1 << 20)), max_samples=args.max_samples,
                         body_timeout_s=args.body_timeout_s)
        srv = server(app, args.host, args.port, args.log_level, grace_s=args.grace_s, access_log=args.access_log)
        print(f"rbrc serve: policy {policy.name} at http://{args.host}:{sock.getsockname()[1]}/get_reward "
              f"(health: /health); Ctrl-C stops after the requests in flight (at most {args.grace_s:g} s)",
              file=sys.stderr)
        try:
            srv.run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn raises a captured SIGINT or SIGTERM again once it has stopped
            pass
    if srv.force_exit:
        # A second Ctrl-C: quit now, not after the batch the grader thread is still scoring.
        sys.stderr.flush()
        os._exit(130)
    # uvicorn raises the signal that stopped it again once it has stopped (for SIGTERM,
    # rbrc's handler: `Terminated`, caught above); where SIGINT is ignored (a background
    # job's) that does nothing. The exit code says which signal it was either way.
    return {signal.SIGINT: 130, signal.SIGTERM: EXIT_TERMINATED}.get(srv.stopped_by, EXIT_OK)
