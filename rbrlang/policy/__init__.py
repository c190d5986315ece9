"""The artifact a trainer loads: a compiled policy folder, without the compiler.

Imports neither Lark nor dd (a test keeps it so); torch only when tensors are
asked for. `format.py` is the contract with the compiler; `compiled.py` holds
`CompiledPolicy`; `logic.py` the decision diagrams that give exact class
probabilities; `rendering.py` the sandboxed Jinja2 environment for prompts.
"""
from ..errors import ConversationError, PolicyError
from .compiled import CompiledPolicy, Proposition, ResponseType, from_document, load_policy

__all__ = ["CompiledPolicy", "ConversationError", "PolicyError", "Proposition", "ResponseType", "from_document",
           "load_policy"]
