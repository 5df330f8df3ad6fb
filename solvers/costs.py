"""Ground costs C(x_i, y_j) and kernels k(x_i, y_j) as symbolic matrices.

A cost is a callable ``cost(Vi(x), Vj(y)) -> LazyMatrix`` of inner dimension 1: the
built-in ones are GeomLoss's C = |x - y| (p=1) and C = |x - y|^2 / 2 (p=2); users pass
any formula, e.g. ``lambda x, y: 1 - (x | y)`` on the sphere.

The Euclidean norm is taken as sqrt(|x - y|^2 + 1e-30): its value differs from the norm
by at most 1e-15, and its gradient at coincident points (x_i = x_j, the diagonal of the
self-transport problems) is 0, as with KeOps' Norm2, instead of the NaN of sqrt'(0).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import array_api_compat

from lazymat import LazyMatrix, Pm

Cost = Callable[[LazyMatrix, LazyMatrix], LazyMatrix]

#: added under the square root of Euclidean norms (see the module docstring)
NORM_FLOOR = 1e-30


def distance(x: LazyMatrix, y: LazyMatrix) -> Any:
    """|x - y| with a zero gradient where x = y."""
    return (x.sqdist(y) + NORM_FLOOR).sqrt()


def half_sqdist(x: LazyMatrix, y: LazyMatrix) -> Any:
    """|x - y|^2 / 2."""
    return x.sqdist(y) / 2


def ground_cost(p: float, cost: Cost | None = None) -> Cost:
    """The user's ``cost`` if given, else the Euclidean cost |x - y|^p / p for p in {1, 2}."""
    if cost is not None:
        if isinstance(cost, str):
            raise TypeError(
                "cost must be a callable (Vi(x), Vj(y)) -> LazyMatrix, e.g. lambda x, y: x.sqdist(y) / 2; "
                f"KeOps formula strings such as {cost!r} are not supported"
            )
        if not callable(cost):
            raise TypeError(
                f"cost must be a callable (Vi(x), Vj(y)) -> LazyMatrix, got {type(cost).__name__}"
            )
        return cost
    if p == 1:
        return distance
    if p == 2:
        return half_sqdist
    raise ValueError(f"the built-in costs are |x - y| (p=1) and |x - y|^2 / 2 (p=2), got p={p!r}; pass cost=")


def evaluate_cost(cost: Cost, x: LazyMatrix, y: LazyMatrix) -> Any:
    """``cost(x, y)``, checked to be a scalar symbolic matrix."""
    c = cost(x, y)
    if not isinstance(c, LazyMatrix):
        raise TypeError(f"cost(x, y) must return a LazyMatrix, got {type(c).__name__}")
    if c.dim != 1:
        raise ValueError(f"cost(x, y) must be a scalar formula (inner dimension 1), got dimension {c.dim}")
    return c


def soft_c_exponent(h: LazyMatrix, cost: LazyMatrix, eps: float, like: Any) -> LazyMatrix:
    """h - C / eps: the exponent of every soft C-transform -eps log sum exp(h - C / eps) (the
    Sinkhorn updates and their gradients, the transport plan, the Hausdorff soft-mins, the
    grids' separable passes). 1 / eps is a parameter of ``like``'s dtype and device, so one
    formula (one compiled kernel) serves every eps of an annealing schedule."""
    xp = array_api_compat.array_namespace(like)
    inv_eps = xp.asarray([1.0 / eps], dtype=like.dtype, device=array_api_compat.device(like))
    result: LazyMatrix = h - cost * Pm(inv_eps)
    return result


def gaussian_kernel(x: LazyMatrix, y: LazyMatrix, blur: float) -> Any:
    """exp(-|x - y|^2 / (2 blur^2))."""
    return (-x.sqdist(y) / (2 * blur * blur)).exp()


def laplacian_kernel(x: LazyMatrix, y: LazyMatrix, blur: float) -> Any:
    """exp(-|x - y| / blur)."""
    return (-distance(x, y) / blur).exp()


def energy_kernel(x: LazyMatrix, y: LazyMatrix, blur: float) -> Any:
    """-|x - y| (the energy distance; blur plays no role)."""
    return -distance(x, y)


KERNELS: dict[str, Callable[[LazyMatrix, LazyMatrix, float], Any]] = {
    "gaussian": gaussian_kernel,
    "laplacian": laplacian_kernel,
    "energy": energy_kernel,
}
