"""Base class of the engines that run kernels generated from the formula (``lazymat.codegen``).

The native CPU engine and lazymat-cupy's NVRTC engine decline requests for the same kind
of reasons (arrays, dtypes, sizes, and what the code generator says about the formula),
and must say why. Both write one check, :meth:`GeneratedKernelEngine.problem`, which gives
``supports`` and ``why_not`` (so that the two never disagree); the generator's verdict on
a formula (an unknown node type, more than ``max_scalars`` scalar temporaries) is computed
once per formula by :meth:`GeneratedKernelEngine.formula_problem`.
"""

from __future__ import annotations

from ..codegen.expr import formula_problem
from ..engine import Engine
from ..ir.node import Node
from ..request import ReductionRequest

__all__ = ["GeneratedKernelEngine"]


class GeneratedKernelEngine(Engine):
    """An engine of generated kernels: subclasses set ``max_scalars`` and write ``problem``."""

    #: largest formula (scalar temporaries) the engine compiles as straight-line code
    max_scalars: int = 0

    def __init__(self) -> None:
        self._formulas: dict[Node, str | None] = {}

    def problem(self, request: ReductionRequest) -> str | None:
        """Why this engine cannot run ``request`` (a sentence naming it), or None when it can."""
        raise NotImplementedError

    def supports(self, request: ReductionRequest) -> bool:
        return self.problem(request) is None

    def why_not(self, request: ReductionRequest) -> str:
        return self.problem(request) or super().why_not(request)

    def formula_problem(self, formula: Node) -> str | None:
        """Why the code generator cannot compile ``formula`` for this engine, or None (cached)."""
        if formula not in self._formulas:
            self._formulas[formula] = formula_problem(formula, self.name, self.max_scalars)
        return self._formulas[formula]
