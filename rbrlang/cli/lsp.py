"""`rbrc lsp`: the language server, on stdin and stdout (editors start it)."""
from __future__ import annotations

from .grader_args import needs_extra


def register(sub) -> None:
    p = sub.add_parser("lsp", help="run the language server for editors (LSP on stdin/stdout)",
                       description="A language server for .rbr files: the compiler's diagnostics as you type, "
                                   "hover, go to definition, references, rename, symbols, completion and "
                                   "formatting. Editors start it; it speaks LSP on stdin and stdout.")
    p.set_defaults(run=cmd_lsp)


def cmd_lsp(args) -> int:
    needs_extra("rbrc lsp", ("pygls", "lsprotocol"), "lsp")
    from ..lsp.server import serve_stdio

    serve_stdio()
    return 0
