"""The conformance suite's oracle: dense float64 numpy, independent of every engine.

Forward values come from :func:`lazymat.testing.dense.dense_reduction`: the formula
evaluated on the whole ``(*batch, N, M)`` grid with each operation's numpy twin
(``Node.dense``), reduced by numpy/SciPy with lazymat's semantics. No tile, no online
merge, no engine code runs, so an engine (the reference engine included) is compared with
something it shares nothing with but the formula.

Gradients are the core's symbolic derivatives (``lazymat.vjp``) with *their* reductions
computed the same dense way: :class:`DenseOracleEngine` runs any float64 numpy request
densely and is registered only inside :func:`dense_oracle` (then removed again, so that
no other code ever sees it). The derivative formulas themselves are checked against
central finite differences of the dense forward values (:func:`finite_difference_vjp`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from lazymat.engine import Engine
from lazymat.plugin_manager import get_registry
from lazymat.request import ReductionRequest

from .dense import dense_reduction

ORACLE = "dense-float64-oracle"


class DenseOracleEngine(Engine):
    """Every float64 numpy request, dense (O(N M) memory: tests only)."""

    name = ORACLE
    priority = -(10**6)  # never chosen unless forced

    def supports(self, request: ReductionRequest) -> bool:
        return request.backend.name == "numpy" and str(request.dtype) == "float64"

    def why_not(self, request: ReductionRequest) -> str:
        return "the dense oracle runs float64 numpy requests only"

    def run(self, request: ReductionRequest) -> tuple[Any, ...]:
        return dense_reduction(request.spec, request.args)


@contextlib.contextmanager
def dense_oracle() -> Iterator[str]:
    """Register the oracle engine for the block; yields its name."""
    registry = get_registry()
    with registry.owned_by("lazymat.testing"):
        registry.add_engine(DenseOracleEngine())
    try:
        yield ORACLE
    finally:
        registry.remove_engine(ORACLE)


def finite_difference_vjp(
    value: Callable[[Sequence[np.ndarray]], np.ndarray],
    arrays: Sequence[np.ndarray],
    cotangent: np.ndarray,
    step: float = 1e-6,
) -> list[np.ndarray]:
    """Central differences of <cotangent, value(arrays)> in every entry of every array."""
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    grads = []
    for a in arrays:
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            h = step * max(1.0, abs(float(a[idx])))
            saved = a[idx]
            a[idx] = saved + h
            up = float(np.sum(cotangent * value(arrays)))
            a[idx] = saved - h
            down = float(np.sum(cotangent * value(arrays)))
            a[idx] = saved
            g[idx] = (up - down) / (2 * h)
        grads.append(g)
    return grads
