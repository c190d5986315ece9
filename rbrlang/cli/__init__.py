"""rbrc: thin commands over the library, one module per command group.

Exit codes: 0 fine, 1 the input has errors (a policy, a data file, a path),
2 the command line is wrong, 70 a bug in rbrc (please report it)."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .. import __version__
from ..errors import EXIT_INTERNAL, EXIT_OK, RbrError
from . import compiler, data, tiny


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rbrc", description="The rbrlang compiler: rule based rewards as a language.")
    parser.add_argument("--version", action="version", version=f"rbrc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    compiler.register(sub)
    data.register(sub)
    tiny.register(sub)
    from . import eval as eval_command  # rbrc eval (evaluate/)
    eval_command.register(sub)
    from . import fit as fit_command  # rbrc fit (fit/)
    fit_command.register(sub)
    from . import serve as serve_command; serve_command.register(sub)  # rbrc serve (serve/, OpenRLHF)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `rbrc … | head`
        sys.stderr.close()
        return EXIT_OK
    except RbrError as exc:  # a mistake in the input, the command line or a path
        diagnostics = getattr(exc, "diagnostics", None)
        if diagnostics:
            from .output import report
            report(diagnostics, getattr(exc, "sources", {}))
        else:
            print(f"rbrc {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a bug in rbrc, never a mistake in the input
        import traceback
        traceback.print_exc()
        print(f"rbrc: internal error ({type(exc).__name__}); please report it with the input", file=sys.stderr)
        return EXIT_INTERNAL

