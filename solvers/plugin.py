"""The solvers' registration with the core (entry point ``solvers`` of group ``lazymat``).

The core never imports ``lazymat.solvers``: ``LazyMatrix.solve`` asks the registry for the
linear solver, which this hook provides (conjugate gradient, ``lazymat.solvers.cg``).
"""

from __future__ import annotations

from typing import Any

from lazymat.plugin import Registry, hookimpl


def _linear_solve(matrix: Any, b: Any, alpha: Any = 0.0, **options: Any) -> Any:
    """x with (alpha I + K) x = b (``lazymat.solvers.cg``'s solution)."""
    from .conjugate_gradient import cg

    return cg(matrix, b, alpha=alpha, **options)[0]


@hookimpl
def lazymat_register_solvers(registry: Registry) -> None:
    registry.add_solver("linear", _linear_solve)
