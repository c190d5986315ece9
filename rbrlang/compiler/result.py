"""The one result type of the compiler's entry points: a module of its own, so
that the entry points (`compiler/__init__.py`) and the stages that return it
directly (`yaml_import`) both import it without an import circle."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Mapping, Optional, TypeVar

from .. import diagnostics as dg
from ..errors import CompileError

T = TypeVar("T")


@dataclass(frozen=True)
class Result(Generic[T]):
    """What a compiler entry point gives back."""

    value: Optional[T]  # None when there are errors
    diagnostics: tuple[dg.Diagnostic, ...] = ()  # sorted; warnings too
    sources: Mapping[str, str] = field(default_factory=dict)  # display name -> text, for rendering

    @property
    def failed(self) -> bool:
        return self.value is None or dg.has_errors(self.diagnostics)

    def unwrap(self) -> T:
        """The value; a `CompileError` with every diagnostic when there are errors."""
        if self.failed:
            raise CompileError(self.diagnostics, self.sources)
        return self.value
