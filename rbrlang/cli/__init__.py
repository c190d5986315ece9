"""rbrc: thin commands over the library, one module per command group.

Exit codes: 0 fine, 1 the input has errors (a policy, a data file, a path),
2 the command line is wrong, 70 a bug in rbrc (please report it), 130
interrupted (Ctrl-C), 143 terminated (SIGTERM).

`rbrc --format json COMMAND …` (or `--format json` after the command) reports
every diagnostic and error of the run as one JSON array on stdout (see
`output`)."""
from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from typing import Sequence

from .._version import __version__
from ..errors import EXIT_INTERNAL, EXIT_OK, EXIT_TERMINATED, EXIT_USAGE, RbrError
from . import authoring, compiler, data, output, tiny

FORMATS = ("human", "json")


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors in the run's format too."""

    commands: dict = {}  # name -> the command's parser (set on the top one)

    def error(self, message):
        if not output.is_json():
            super().error(message)
        self.print_usage(sys.stderr)
        output.error(self.prog, RbrError(message))
        output.end()
        self.exit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rbrc", description="The rbrlang compiler: rule based rewards as a language.")
    parser.add_argument("--version", action="version", version=f"rbrc {__version__}")
    parser.add_argument("--format", choices=FORMATS, default="human",
                        help="how errors and diagnostics are reported: human text on stderr (default), "
                             "or one JSON array on stdout")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    compiler.register(sub)
    authoring.register(sub)  # rbrc test, rbrc diff
    data.register(sub)
    tiny.register(sub)
    from . import eval as eval_command  # rbrc eval (evaluate/)
    eval_command.register(sub)
    from . import fit as fit_command  # rbrc fit (fit/)
    fit_command.register(sub)
    from . import serve as serve_command; serve_command.register(sub)  # rbrc serve (serve/, OpenRLHF)
    from . import lsp as lsp_command; lsp_command.register(sub)  # rbrc lsp (lsp/, editors)
    from . import synth as synth_command; synth_command.register(sub)  # rbrc synth (synth/, generate/)
    for command in sub.choices.values():
        # The same flag after the command (`rbrc check FILE --format json`);
        # given there, it wins, else the global one stands.
        command.add_argument("--format", choices=FORMATS, default=argparse.SUPPRESS,
                             help="as `rbrc --format`: human (default) or json")
    parser.commands = sub.choices
    return parser


def _format_asked(argv: Sequence[str]) -> str:
    """The format the command line asks for, read before parsing it, so that a
    usage error is reported in that format too."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--format", default="human")
    found, _ = pre.parse_known_args(argv)
    return found.format


# What an error may name that no flag of the running command sets: the
# command that does it (a stale calibration is refitted by `rbrc eval`).
ELSEWHERE = {"calibrate=True": "rbrc eval COMPILED --gold FILE … --calibrate",
             "keep_going=False": "rbrc grade without --keep-going"}


def flags_of(parser: argparse.ArgumentParser) -> dict[str, str]:
    """How the command line says what an error names in the library's words
    (`output.in_flags`): each argument's destination -> its long flag (`gold`
    -> `--gold`), and an argument with a value -> the flag with it: a choice
    (`truncate=oldest_turns` -> `--truncate oldest-turns`), the metavar
    (`cache=PATH` -> `--cache PATH`), a switch (`calibrate=True` ->
    `--calibrate`), a `--no-X` switch (`cache=None` -> `--no-cache`)."""
    out = dict(ELSEWHERE)
    for action in parser._actions:  # argparse keeps them only here
        longs = [o for o in action.option_strings if o.startswith("--")]
        if not longs:
            continue
        flag, dest = longs[0], action.dest
        out.setdefault(dest, flag)
        for choice in action.choices or ():
            out[f"{dest}={str(choice).replace('-', '_')}"] = out[f"{dest}={choice}"] = f"{flag} {choice}"
        if isinstance(action.metavar, str):
            out[f"{dest}={action.metavar}"] = f"{flag} {action.metavar}"
        if action.nargs == 0 and action.const is not None:  # store_true and kin
            out[f"{dest}={action.const}"] = flag
            if flag.startswith("--no-"):
                out[f"{flag[5:].replace('-', '_')}=None"] = flag
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    output.begin(_format_asked(argv))
    try:
        args = parser.parse_args(argv)  # a usage error is reported (and the run ended) by `_Parser.error`
        output.begin(args.format)  # the flag after the command, if any, decides
        return _run(parser, args)
    finally:
        output.begin("human")  # however the run ended, the next one in this process starts afresh


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, as Ctrl-C is: every cleanup
    that undoes a half-done write on Ctrl-C (`except BaseException`, `finally`)
    undoes it on SIGTERM too, and the run ends with 143. Python's default for
    SIGTERM ends the process at once, leaving temporaries behind."""


def _terminate(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def _sigterm_as_exception():
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(parser: _Parser, args) -> int:
    output.use_flags(flags_of(parser.commands[args.command]))
    try:
        with _sigterm_as_exception():
            status = args.run(args)
    except Terminated:
        status = EXIT_TERMINATED
    except KeyboardInterrupt:
        status = 130
    except BrokenPipeError:  # `rbrc … | head`
        sys.stderr.close()
        return EXIT_OK
    except RbrError as exc:  # a mistake in the input, the command line or a path
        output.error(args.command, exc)
        status = exc.exit_code
    except Exception as exc:  # a bug in rbrc, never a mistake in the input
        import traceback
        traceback.print_exc()
        message = f"internal error ({type(exc).__name__}); please report it with the input"
        if output.is_json():
            output.error(args.command, RbrError(message))
        print(f"rbrc: {message}", file=sys.stderr)
        status = EXIT_INTERNAL
    output.end()
    return status
