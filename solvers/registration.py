"""LDDMM registration: the initial momentum whose geodesic carries a source onto a target.

    register(source, target, kernel, loss, gamma=...) minimises over p0

        E(p0) = gamma * H(q0, p0) + loss(q1(p0), target),   q0 = source,

where q1 is the geodesic shooting of :func:`lazymat.solvers.hamiltonian_flow.shoot` and H the
kernel Hamiltonian (the deformation's kinetic energy), with the backend-neutral L-BFGS of
:mod:`lazymat.solvers.lbfgs_minimizer`.

**Where the gradient comes from** (one of two, chosen by ``value_and_grad``):

- default (``value_and_grad=None``): symbolically, on every backend, numpy included.
  dH/dp0 = K_q0 p0 is a reduction; the shooting's gradient is the adjoint sweep of
  :func:`~lazymat.solvers.hamiltonian_flow.shoot_with_adjoint` (Hessian-vector products of H as
  reductions); the loss supplies its own gradient in the deformed points through a
  ``loss.value_and_grad(x, target) -> (value, dvalue/dx)`` method, as
  :class:`KernelNormLoss` does.
- ``value_and_grad=`` a library transform, e.g. ``jax.value_and_grad``, or any callable
  mapping f to ``x -> (f(x), grad f(x))``: the objective is differentiated by the backend's
  autodiff, through the shooting (differentiable end to end on torch and jax) and through
  any differentiable loss, e.g. a Sinkhorn divergence from :mod:`lazymat.solvers`. solvers
  never import torch; with torch, pass a three-line helper built on ``torch.autograd.grad``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lazymat
from lazymat.lazymatrix import Vi, Vj

from .hamiltonian_flow import (
    HamiltonianField,
    KernelLike,
    check_state,
    hamiltonian,
    shoot,
    shoot_with_adjoint,
)
from .lbfgs_minimizer import LBFGSInfo, lbfgs
from .measures import check_finite
from .row_reduction import RowReduction


class KernelNormLoss:
    """``1/2 |mu_x - mu_y|_k^2`` between uniform measures on two clouds (a maximum mean discrepancy).

        L(x, y) = 1/(2N^2) sum_ij k(x_i, x_j) - 1/(NM) sum_ij k(x_i, y_j) + 1/(2M^2) sum_ij k(y_i, y_j)

    ``value_and_grad`` gives dL/dx too, from two fused reductions (value and symbolic
    derivative together), on every backend; calling the object gives the value, which is
    differentiable on torch and jax.
    """

    def __init__(self, kernel: KernelLike) -> None:
        self.kernel = kernel

    def _parts(self, x: Any, y: Any) -> tuple[Any, Any, Any, Any]:
        xp = lazymat.backend_for(x).namespace(x)
        if len(x.shape) != len(y.shape) or x.shape[-1] != y.shape[-1]:
            raise ValueError(
                f"clouds of shapes {tuple(x.shape)} and {tuple(y.shape)}: expected (N, D) and (M, D)"
            )
        xx = RowReduction(self.kernel(Vi(x), Vj(x)), [x], wrt=[0], value=True)
        xy = RowReduction(self.kernel(Vi(x), Vj(y)), [x, y], wrt=[0], value=True)
        yy = RowReduction(self.kernel(Vi(y), Vj(y)), [y], wrt=[], value=True)
        return xp, xx(x), xy(x, y), yy(y)

    def value_and_grad(self, x: Any, y: Any) -> tuple[Any, Any]:
        """(L(x, y), dL/dx)."""
        xp, (sxx, gxx), (sxy, gxy), (syy,) = self._parts(x, y)
        n, m = x.shape[-2], y.shape[-2]
        value = xp.sum(sxx) / (2 * n * n) - xp.sum(sxy) / (n * m) + xp.sum(syy) / (2 * m * m)
        return value, gxx / (n * n) - gxy / (n * m)

    def __call__(self, x: Any, y: Any) -> Any:
        return self.value_and_grad(x, y)[0]


@dataclass
class RegistrationResult:
    """What :func:`register` returns."""

    #: the optimal initial momentum p0, shaped like the source
    momentum: Any
    #: the deformed source q1 = shoot(source, momentum).q
    points: Any
    #: the data term loss(q1, target) at the optimum, and before registration (p0 = 0)
    loss: float
    initial_loss: float
    #: gamma * H(q0, p0) at the optimum
    energy: float
    info: LBFGSInfo


def register(
    source: Any,
    target: Any,
    kernel: KernelLike,
    loss: Any,
    *,
    gamma: float = 0.1,
    steps: int = 10,
    method: str = "euler",
    p0: Any = None,
    maxiter: int = 50,
    gtol: float = 1e-6,
    value_and_grad: Callable[[Callable[[Any], Any]], Callable[[Any], tuple[Any, Any]]] | None = None,
    callback: Callable[[Any], None] | None = None,
    progress: bool = False,
) -> RegistrationResult:
    """Minimise gamma * H(q0, p0) + loss(shoot(q0, p0).q, target) over p0 (module doc).

    ``source`` (N, D) and ``target`` (M, D) are arrays of one library; ``p0`` starts the
    search (zeros by default). Without ``value_and_grad``, ``loss`` must have a
    ``value_and_grad(x, target)`` method (e.g. :class:`KernelNormLoss`). ``progress``: a
    progress bar (tqdm; else log lines) of the L-BFGS iterations with the objective, its
    gradient's norm and the time left (:func:`~lazymat.solvers.lbfgs`).
    """
    xp = lazymat.backend_for(source).namespace(source)
    start = xp.zeros_like(source) if p0 is None else p0
    check_state(source, start, steps)
    if (
        not hasattr(target, "shape")
        or len(target.shape) != len(source.shape)
        or target.shape[-1] != source.shape[-1]
    ):
        raise ValueError(
            f"target must be a cloud of points of dimension {source.shape[-1]} like the source "
            f"{tuple(source.shape)}, got shape {tuple(getattr(target, 'shape', ()))}"
        )
    check_finite(lazymat.backend_for(target).namespace(target), "target", target, "coordinates")
    if not gamma >= 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")

    if value_and_grad is not None:

        def objective(p: Any) -> Any:
            q1, _ = shoot(source, p, kernel, steps, method)
            return gamma * hamiltonian(source, p, kernel) + loss(q1, target)

        fun = value_and_grad(objective)
    elif hasattr(loss, "value_and_grad"):
        fun = lddmm_value_and_grad(source, target, kernel, loss, gamma, steps, method)
    else:
        raise TypeError(
            "register needs the loss's gradient: give a loss with a value_and_grad(x, target) method "
            "(e.g. KernelNormLoss) or a value_and_grad transform (e.g. jax.value_and_grad)"
        )
    backend = lazymat.backend_for(source)

    def number(v: Any) -> float:
        return float(backend.stop_gradient(v))

    initial = number(loss(source, target))
    p_opt, info = lbfgs(fun, start, maxiter=maxiter, gtol=gtol, callback=callback, progress=progress)
    q1, _ = shoot(source, p_opt, kernel, steps, method)
    return RegistrationResult(
        momentum=p_opt,
        points=q1,
        loss=number(loss(q1, target)),
        initial_loss=initial,
        energy=number(gamma * hamiltonian(source, p_opt, kernel)),
        info=info,
    )


def lddmm_value_and_grad(
    source: Any, target: Any, kernel: KernelLike, loss: Any, gamma: float, steps: int, method: str
) -> Callable[[Any], tuple[Any, Any]]:
    """p0 -> (E(p0), dE/dp0) for E = gamma * H(q0, p0) + loss(q1, target), symbolically.

    dH/dp0 = K_q0 p0 is a reduction; the shooting's gradient is its adjoint sweep; the loss
    gives dloss/dq1 through its ``value_and_grad`` method. Any backend.
    """
    xp = lazymat.backend_for(source).namespace(source)
    field = HamiltonianField(kernel, source, source)

    def fun(p: Any) -> tuple[Any, Any]:
        q1, _, vjp = shoot_with_adjoint(source, p, kernel, steps, method)
        value, dq1 = loss.value_and_grad(q1, target)
        _, velocity = field.gradients(source, p)  # dH/dp0 = K_q0 p0
        _, p_bar = vjp(dq1, xp.zeros_like(p))
        return gamma * 0.5 * xp.sum(p * velocity) + value, gamma * velocity + p_bar

    return fun
