"""Hyperbolic distances as formulas, stable near the boundary: Poincare ball, Lorentz model, half-space.

Each model's distance is arcosh(1 + z) for an argument z >= 0 that is cheap and accurate:

- Poincare ball (|x| < 1):  z = 2 |x - y|^2 / ((1 - |x|^2) (1 - |y|^2)),
- Lorentz model (-x_0^2 + |x_1:|^2 = -1, x_0 > 0):  z = -<x, y>_L - 1 = (|x_1: - y_1:|^2 - (x_0 - y_0)^2) / 2,
- upper half-space (x_0 > 0):  z = |x - y|^2 / (2 x_0 y_0)  (the seed's ``D_ij / (x_i[0] * x_j[0])``).

Written this way, z is a sum of squared differences divided by per-point factors, with no
cancellation between pairs: close points keep a relative accuracy of a few ulps (the naive
Lorentz form x_0 y_0 - <x_1:, y_1:> - 1 loses every digit there), and the conformal factors
1 - |x|^2 of the ball are computed once per point, not once per pair. arcosh(1 + z) is
evaluated as log1p(z + sqrt(z (z + 2))): arccosh of a number near 1 would lose half of the
digits of small distances. The formula IR has no log1p, so :func:`arcosh1p` writes it
with Goldberg's exact trick, u = 1 + w, log1p(w) = w log(u) / (u - 1) (w where u = 1).

Points outside the ball, off the hyperboloid or not in the half-space raise ValueError.
Near the boundary of the ball the distance is as accurate as float64 allows for points
given in float64 (tested at |x| = 1 - 1e-6 against mpmath); float32 cannot represent
such points usefully (1 - |x|^2 is then below its resolution), so use float64 there.

k-NN searches run on z (a monotone key) and apply arcosh only to the K selected entries.
"""

from __future__ import annotations

from typing import Any

import lazymat
from lazymat.lazymatrix import LazyMatrix

from .metrics import Metric


def arcosh1p(z: LazyMatrix) -> LazyMatrix:
    """arcosh(1 + z) for z >= 0, as a formula accurate for small z too."""
    w = z + (z * (z + 2.0)).sqrt()
    u = 1.0 + w
    gap = u - 1.0
    exact = 1.0 - gap.sign()  # 1 where u rounds to 1 (then log1p(w) = w), else 0
    return w * (u.log() + exact) / (gap + exact)


def _arcosh1p(xp: Any, z: Any) -> Any:
    z = xp.where(z > 0, z, xp.zeros_like(z))  # rounding can leave the Lorentz z slightly below 0
    return xp.log1p(z + xp.sqrt(z * (z + 2.0)))


def _poincare_prepare(xp: Any, x: Any, name: str = "X") -> Any:
    """[x, 1 - |x|^2]: the conformal factor computed once per point."""
    sq = xp.sum(x * x, axis=1, keepdims=True)
    factor = 1.0 - sq
    if not bool(xp.all(factor > 0)):
        i = int(lazymat.backend_for(x).to_numpy(xp.argmin(factor[:, 0])))
        norm = float(lazymat.backend_for(x).to_numpy(xp.sqrt(sq[i, 0])))
        raise ValueError(
            f"{name} has points outside the open Poincare ball (|x| must be < 1): "
            f"point {i} has |x| = {norm!r}"
        )
    return xp.concat([x, factor], axis=1)


def _poincare_key(x: LazyMatrix, y: LazyMatrix) -> LazyMatrix:
    return 2.0 * x[:-1].sqdist(y[:-1]) / (x[-1] * y[-1])


def _lorentz_prepare(xp: Any, x: Any, name: str = "X") -> Any:
    if x.shape[1] < 2:
        raise ValueError(f"{name}: points of the Lorentz model have D + 1 >= 2 coordinates, got {x.shape[1]}")
    t, s = x[:, 0], xp.sum(x[:, 1:] ** 2, axis=1)
    eps = float(xp.finfo(x.dtype).eps)
    off = xp.abs(s - t * t + 1.0) > 1e3 * eps * (1.0 + t * t)
    if not bool(xp.all(t > 0)) or bool(xp.any(off)):
        bad = xp.logical_or(t <= 0, off)
        i = int(lazymat.backend_for(x).to_numpy(xp.argmax(xp.astype(bad, xp.int8))))
        raise ValueError(
            f"{name} has points off the hyperboloid -x_0^2 + |x_1:|^2 = -1, x_0 > 0 (first: point {i}); "
            "lift points u of R^D with x = (sqrt(1 + |u|^2), u)"
        )
    return x


def _lorentz_key(x: LazyMatrix, y: LazyMatrix) -> LazyMatrix:
    return 0.5 * (x[1:].sqdist(y[1:]) - x[0].sqdist(y[0]))


def _lorentz_centroid(xp: Any, mean: Any) -> Any:
    """The Lorentzian centroid: the mean rescaled onto the hyperboloid (Law et al., 2019)."""
    scale = xp.sqrt(mean[:, :1] ** 2 - xp.sum(mean[:, 1:] ** 2, axis=1, keepdims=True))
    return mean / scale


def _halfspace_prepare(xp: Any, x: Any, name: str = "X") -> Any:
    if not bool(xp.all(x[:, 0] > 0)):
        raise ValueError(f"{name} has points outside the upper half-space: the first coordinate must be > 0")
    return x


def _halfspace_key(x: LazyMatrix, y: LazyMatrix) -> LazyMatrix:
    return x.sqdist(y) / (2.0 * (x[0] * y[0]))


def _metric(name: str, prepare: Any, key: Any, centroid: Any = None) -> Metric:
    extra = {} if centroid is None else {"centroid": centroid}
    return Metric(
        name,
        key=key,
        formula=lambda x, y: arcosh1p(key(x, y)),
        to_distance=_arcosh1p,
        prepare=prepare,
        **extra,
    )


HYPERBOLIC_METRICS: dict[str, Metric] = {
    "poincare": _metric("poincare", _poincare_prepare, _poincare_key),
    "lorentz": _metric("lorentz", _lorentz_prepare, _lorentz_key, _lorentz_centroid),
    "halfspace": _metric("halfspace", _halfspace_prepare, _halfspace_key),
}


def poincare_distance(x: Any, y: Any | None = None) -> LazyMatrix:
    """Symbolic Poincare-ball distances between points ``x`` and ``y`` (``|x|, |y| < 1``)."""
    return HYPERBOLIC_METRICS["poincare"].pairwise(x, y)


def lorentz_distance(x: Any, y: Any | None = None) -> LazyMatrix:
    """Symbolic distances between points of the hyperboloid ``-x_0^2 + |x_1:|^2 = -1, x_0 > 0``."""
    return HYPERBOLIC_METRICS["lorentz"].pairwise(x, y)


def halfspace_distance(x: Any, y: Any | None = None) -> LazyMatrix:
    """Symbolic distances in the upper half-space model (first coordinate > 0)."""
    return HYPERBOLIC_METRICS["halfspace"].pairwise(x, y)


def poincare_to_lorentz(x: Any) -> Any:
    """Points of the Poincare ball mapped onto the hyperboloid: ``(1 + |x|^2, 2 x) / (1 - |x|^2)``."""
    xp = lazymat.backend_for(x).namespace(x)
    p = _poincare_prepare(xp, x, "x")
    factor = p[:, -1:]
    return xp.concat([(2.0 - factor) / factor, 2.0 * x / factor], axis=1)


def lorentz_to_poincare(x: Any) -> Any:
    """Points of the hyperboloid mapped into the Poincare ball: x_1: / (1 + x_0)."""
    xp = lazymat.backend_for(x).namespace(x)
    x = _lorentz_prepare(xp, x, "x")
    return x[:, 1:] / (1.0 + x[:, :1])
