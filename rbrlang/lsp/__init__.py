"""`rbrc lsp`: a language server for `.rbr` files (the `lsp` extra: pygls).

Diagnostics as you type are the checker's own (codes, related places, help);
hover, definition, references, rename, document symbols and completion read
the compiler's syntax tree; formatting is `rbrc fmt`'s. `analysis`, `hover`
and `complete` are plain functions over the compiler; only `server` imports
pygls.
"""
