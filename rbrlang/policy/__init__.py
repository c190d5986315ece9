"""The artifact a trainer loads: a compiled policy folder, without the compiler.

Imports neither Lark nor dd (a test keeps it so); torch only when tensors are
asked for. `format.py` is the contract with the compiler (the rows of
`policy.json`); `compiled.py` holds `CompiledPolicy`; `loading.py` reads a
folder with its fitted files (`weights.py`, `calibration.py`); `logic.py` the
decision diagrams that give exact class probabilities; `rendering.py` the
sandboxed Jinja2 environment for prompts.
"""
from ..errors import ConversationError, PolicyError
from .compiled import CompiledPolicy, Proposition, ResponseType, from_document
from .loading import load_policy

__all__ = ["CompiledPolicy", "ConversationError", "PolicyError", "Proposition", "ResponseType", "from_document",
           "load_policy"]
