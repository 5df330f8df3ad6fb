"""Kernel norms (maximum mean discrepancies) between weighted point clouds, as in GeomLoss.

    Loss(a, b) = 1/2 |a - b|_k^2
               = 1/2 <a, K_xx a> + 1/2 <b, K_yy b> - <a, K_xy b>,

with k(x, y) = exp(-|x - y|^2 / (2 blur^2)) ("gaussian"), exp(-|x - y| / blur)
("laplacian"), -|x - y| ("energy" distance), or any symmetric kernel given as a callable
(Vi(x), Vj(y)) -> LazyMatrix. Each matrix-vector product is a sum reduction of a
LazyMatrix; the gradients (with respect to the points and the weights, in both slots of
K_xx and K_yy) come from the backend's autodiff through the reductions, or, without
autodiff (numpy, cupy), from :func:`kernel_loss_gradients`: dL/da = K_xx a - K_xy b,
dL/db = K_yy b - K_yx a, and the points' gradients as symbolic VJPs of the same reductions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lazymat
from lazymat import LazyMatrix, Vi, Vj

from .costs import KERNELS, NORM_FLOOR
from .measures import Measures
from .stacked_softmins import stacked_kernel_products, stacked_reduction
from .tile_transports import dense_sqdist, fits_tile_budget

Kernel = Callable[[LazyMatrix, LazyMatrix], LazyMatrix]

#: GeomLoss's kernels as functions of the squared distances (namespace, |x - y|^2, blur),
#: for the dense tiles of small problems (the same formulas as :data:`.costs.KERNELS`)
DENSE_KERNELS: dict[str, Callable[[Any, Any, float], Any]] = {
    "gaussian": lambda xp, sq, blur: xp.exp(-sq / (2 * blur * blur)),
    "laplacian": lambda xp, sq, blur: xp.exp(-xp.sqrt(sq + NORM_FLOOR) / blur),
    "energy": lambda xp, sq, blur: -xp.sqrt(sq + NORM_FLOOR),
}


@dataclass(frozen=True)
class NamedKernel:
    """GeomLoss's kernel ``name`` at scale ``blur``: a LazyMatrix of (Vi(x), Vj(y)), or a
    dense array of the squared distances (:meth:`dense`, small problems)."""

    name: str
    blur: float

    def __call__(self, x: LazyMatrix, y: LazyMatrix) -> LazyMatrix:
        k: LazyMatrix = KERNELS[self.name](x, y, self.blur)
        return k

    def dense(self, xp: Any, sq: Any) -> Any:
        return DENSE_KERNELS[self.name](xp, sq, self.blur)


def make_kernel(name: str, blur: float, kernel: Kernel | None = None) -> Kernel:
    """The user's ``kernel``, or GeomLoss's kernel ``name`` at scale ``blur``."""
    if kernel is not None:
        if not callable(kernel):
            raise TypeError(
                f"kernel must be a callable (Vi(x), Vj(y)) -> LazyMatrix, got {type(kernel).__name__}"
            )
        return kernel
    if name not in KERNELS:
        raise ValueError(f"unknown kernel {name!r}: expected one of {sorted(KERNELS)}")
    return NamedKernel(name, blur)


def _product(xp: Any, kernel: Kernel, x: Any, y: Any, w: Any) -> LazyMatrix:
    """k(x_i, y_j) w_j as a LazyMatrix, for clouds (B, N, D), (B, M, D) and weights (B, M)."""
    k = kernel(Vi(x), Vj(y))
    if not isinstance(k, LazyMatrix) or k.dim != 1:
        raise TypeError("kernel(x, y) must return a scalar LazyMatrix (inner dimension 1)")
    return k * Vj(xp.reshape(w, (*w.shape, 1)))


def _apply(xp: Any, kernel: Kernel, x: Any, y: Any, w: Any) -> Any:
    """sum_j k(x_i, y_j) w_j: (B, N)."""
    out = _product(xp, kernel, x, y, w).sum(axis=1)
    return xp.reshape(out, tuple(out.shape[:-1]))


def _points_vjp(xp: Any, kernel: Kernel, x: Any, y: Any, w: Any, cot: Any) -> tuple[Any, ...]:
    """Gradients of sum_i cot_i sum_j k(x_i, y_j) w_j in x and y (one array: in x, both slots)."""
    col = xp.reshape(cot, (*cot.shape, 1))
    wrt = [x] if x is y else [x, y]
    return lazymat.vjp(_product(xp, kernel, x, y, w), col, reduction="sum", axis=1, wrt=wrt)


def kernel_loss(m: Measures, kernel: Kernel, potentials: bool = False, *, stack: bool = False) -> Any:
    """The kernel norm of the module docstring, shape (B,); or the potentials.

    With ``potentials=True``: (F, G) = (K_xx a - K_xy b, K_yy b - K_yx a), the
    gradients of the loss with respect to a and b, shapes (B, N) and (B, M).
    ``stack``: the products as one batched reduction (:mod:`.stacked_softmins`), for
    kernels finite everywhere (GeomLoss's: padded columns meet a zero weight); for
    GeomLoss's kernels (:class:`NamedKernel`), as one dense tile when it fits the tile
    budget (:func:`.tile_transports.fits_tile_budget`), differentiated by the backend.
    """
    xp = m.xp
    blocks = [(m.x, m.x, m.a, 0.0), (m.y, m.y, m.b, 0.0), (m.x, m.y, m.b, 0.0)]
    if potentials:
        blocks.append((m.y, m.x, m.a, 0.0))
    batch, size = m.x.shape[0] * len(blocks), max(m.x.shape[1], m.y.shape[1])
    if stack and isinstance(kernel, NamedKernel) and fits_tile_budget(m.x, batch, size):

        def dense_products(rows: Any, cols: Any, w: Any) -> Any:
            return xp.sum(kernel.dense(xp, dense_sqdist(xp, rows, cols)) * w[:, None, :], axis=-1)

        products = stacked_reduction(xp, blocks, dense_products)
    elif stack:
        products = stacked_kernel_products(xp, kernel, blocks)
    else:
        products = [_apply(xp, kernel, x, y, w) for x, y, w, _ in blocks]
    a_x, b_y, b_x = products[:3]
    if potentials:
        return a_x - b_x, b_y - products[3]
    return 0.5 * xp.sum(m.a * a_x, axis=-1) + 0.5 * xp.sum(m.b * b_y, axis=-1) - xp.sum(m.a * b_x, axis=-1)


def kernel_loss_gradients(m: Measures, kernel: Kernel) -> tuple[Any, Any, Any, Any, Any]:
    """(L, dL/da, dL/dx, dL/db, dL/dy) without autodiff (any backend), batched layout."""
    xp = m.xp
    stop = lazymat.backend_for(m.x).stop_gradient
    x, y, a, b = (stop(v) for v in (m.x, m.y, m.a, m.b))
    y_other = xp.asarray(y, copy=True)  # the cross term's y, a distinct array for the VJP
    a_x, b_y = _apply(xp, kernel, x, x, a), _apply(xp, kernel, y, y, b)
    b_x, a_y = _apply(xp, kernel, x, y, b), _apply(xp, kernel, y, x, a)
    value = 0.5 * xp.sum(a * a_x, axis=-1) + 0.5 * xp.sum(b * b_y, axis=-1) - xp.sum(a * b_x, axis=-1)
    (gx,) = _points_vjp(xp, kernel, x, x, a, 0.5 * a)
    (gy,) = _points_vjp(xp, kernel, y, y, b, 0.5 * b)
    cross_x, cross_y = _points_vjp(xp, kernel, x, y_other, b, -a)
    return value, a_x - b_x, gx + cross_x, b_y - a_y, gy + cross_y
