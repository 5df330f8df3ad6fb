"""Conformance on data far from the origin: every reduction of translation-invariant formulas.

Medical and geographic coordinates live far from the origin (CT scans in millimetres,
positions in metres), where an engine that expands ``|x - y|^2 = |x|^2 - 2<x, y> + |y|^2``
cancels catastrophically (issue 21). :class:`FarFromOrigin` translates standard normal
clouds by 10^2 and 10^4 (float32) and 10^7 (float64), rounds them to the dtype (the data
the engine sees), and holds every reduction kind to the same tolerance as at the origin
(:data:`lazymat.testing.dense.RTOL`). The oracle is dense float64 numpy on the centred
data: the rounded points minus the offset (exact in float64), through formulas written
here, reduced by :func:`lazymat.testing.dense.dense_reduce`. The formulas depend on
``x - y`` only, so centring changes nothing in exact arithmetic.

:class:`lazymat.testing.BackendConformance` inherits the mixin, so every backend and
forced engine runs it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pytest

from lazymat.lazymatrix import LazyMatrix

from .dense import check_outputs

#: (dtype, offset) of the translated clouds
OFFSETS = (("float32", 1e2), ("float32", 1e4), ("float64", 1e7))
#: every reduction kind (their inputs: scalar formulas)
REDUCTIONS = (
    "sum",
    "lse",
    "min",
    "max",
    "argmin",
    "argmax",
    "min_argmin",
    "max_argmax",
    "kmin",
    "argkmin",
    "kmin_argkmin",
)
K = 3

_Builder = Callable[[LazyMatrix, LazyMatrix, LazyMatrix], LazyMatrix]
#: name -> (lazymat formula of X, Y, P; its dense float64 value from d = |x - y|^2 and p)
FORMULAS: dict[str, tuple[_Builder, Callable[[np.ndarray, float], np.ndarray]]] = {
    # a Gaussian of constant width: engines may fold the scale into a GEMM
    "gaussian": (lambda X, Y, P: (-X.sqdist(Y) * 2.0).exp(), lambda d, p: np.exp(-2.0 * d)),
    # a Gaussian of parametric width
    "gaussian_p": (lambda X, Y, P: (-X.sqdist(Y) * P).exp(), lambda d, p: np.exp(-p * d)),
    # the squared distance itself, and a rational function of it (the Cauchy kernel)
    "sqdist": (lambda X, Y, P: X.sqdist(Y), lambda d, p: d),
    "cauchy": (lambda X, Y, P: 1.0 / (X.sqdist(Y) * P + 1.0), lambda d, p: 1.0 / (p * d + 1.0)),
}
#: the formulas each reduction runs (kernels for sums and log-sum-exps, distances for the rest)
_PER_REDUCTION = {
    "sum": ("gaussian", "gaussian_p", "cauchy", "sqdist"),
    "lse": ("gaussian", "gaussian_p", "cauchy"),
}


class FarFromOrigin:
    """Every reduction kind on clouds far from the origin vs dense float64 on centred data."""

    if TYPE_CHECKING:  # provided by BackendConformance
        dtypes: ClassVar[tuple[str, ...]]

        def run(
            self, builder: _Builder, data: Sequence[np.ndarray], reduction: str, axis: int = 1, k: int = 0
        ) -> list[np.ndarray]: ...

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_far_from_origin(self, reduction: str) -> None:
        rng = np.random.default_rng(11)
        x, y, p = rng.standard_normal((37, 3)), rng.standard_normal((29, 3)), rng.random(1) + 0.5
        for dtype, offset in OFFSETS:
            if dtype not in self.dtypes:
                continue
            far_x, far_y, far_p = (x + offset).astype(dtype), (y + offset).astype(dtype), p.astype(dtype)
            # the points the engine sees, moved back exactly (float64 differences of floats
            # within a factor 2 of each other are exact)
            cx, cy = far_x.astype(np.float64) - offset, far_y.astype(np.float64) - offset
            d = ((cx[:, None, :] - cy[None, :, :]) ** 2).sum(-1)
            for name in _PER_REDUCTION.get(reduction, ("sqdist",)):
                builder, dense = FORMULAS[name]
                got = self.run(builder, [far_x, far_y, far_p], reduction, 1, K)
                values = dense(d, float(far_p[0]))[..., None]
                check_outputs(got, values, reduction, dtype, K, f"{name}, offset {offset:g}:")
