r"""Entropic optimal transport for a cost matrix the user already holds: ``solve(C, a, b, reg=...)``.

The problem (GeomLoss 0.3.1's ``geomloss.ot.solve``, POT's ``ot.sinkhorn2`` /
``ot.sinkhorn_unbalanced``) is, for a cost matrix C (N, M) (or a batch (B, N, M)) and
nonnegative weights a (N,), b (M,),

    OT(a, b) = min_{pi >= 0} <pi, C> + eps KL(pi | a x b) + D(pi 1 | a) + D(pi^T 1 | b),

eps = ``reg``, D a hard constraint (``unbalanced=None``), rho KL or rho TV with rho =
``unbalanced`` (see :mod:`.penalties`). It is solved by the loop of every other solver of
this package (:mod:`.sinkhorn_loop`: log-domain soft-mins, symmetric averaged updates,
eps-scaling from ``reg_start`` down to ``reg`` by factors ``scaling``, optional ``tol``),
with the soft-min taken on the rows and columns of C by blocks (:mod:`.matrix_plan`), then
one last Sinkhorn update. On C_ij = |x_i - y_j|^2 / 2 with ``reg = blur**2``,
``reg_start = diameter**2`` and ``scaling = s**2``, its iterates are those of
:func:`~lazymat.solvers.sinkhorn` on the clouds x, y (blur, diameter, scaling = s, no
debiasing): the same potentials.

The value is the dual objective at the returned potentials f, g (held constant),

    <a, psi(f)> + <b, psi(g)> - eps <a x b, exp((f + g - C) / eps)> + eps m_a m_b,

psi(f) = f (balanced, TV) or rho (1 - exp(-f / rho)) (KL), m_a = sum a, m_b = sum b: at
convergence (``tol``) it is OT(a, b) for any masses (the point-cloud solver's undebiased
value adds eps (m_a - m_a m_b) balanced; both are OT for probability measures). Written
with C, a and b live, its gradients (torch.autograd, jax.grad) are the envelope theorem's:
dOT/dC = pi, the plan; dOT/da_i = psi(f_i) - eps (pi 1)_i / a_i + eps m_b; likewise in b.
The gradient in C is an N-by-M array by nature (as C is): computing it keeps the blocks of
the last value's exponentials for the backward pass, about the size of C. The Sinkhorn
loop itself runs on arrays cut from autodiff and stores nothing of size N*M.

There is no debiased divergence here: OT(a, a) would need the costs between a's points,
which a single matrix C does not hold (use :func:`~lazymat.solvers.sinkhorn` on points).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import array_api_compat

import lazymat

from .conjugate_gradient import ConvergenceWarning
from .matrix_plan import MatrixPlan, exp, log_sum_exp, row_blocks, transposed
from .measures import _concrete_bool, _describe, _weights, check_equal_masses, check_finite
from .ot_result import OTResult, Solution
from .penalties import Balanced, KullbackLeibler, Penalty, make_penalty
from .schedule import check_scales, epsilon_schedule
from .sinkhorn_loop import log_weights, sinkhorn_loop


@dataclass
class MatrixTransport:
    """One entropic OT problem on a cost matrix C (B, N, M) with weights a (B, N), b (B, M).

    The loop's :class:`~.sinkhorn_loop.Problem`: the Sinkhorn steps read stop-gradient
    copies; :meth:`mass_term` reads the user's (live) C, a and b.
    """

    c: Any
    a: Any
    b: Any
    symmetric: bool = False

    def __post_init__(self) -> None:
        self.xp = array_api_compat.array_namespace(self.c)
        self.stop = lazymat.backend_for(self.c).stop_gradient
        self.c_loop = self.stop(self.c)
        self.log_a = log_weights(self.xp, self.stop(self.a))
        self.log_b = log_weights(self.xp, self.stop(self.b))

    def zeros(self) -> tuple[Any, ...]:
        return self.xp.zeros_like(self.log_a), self.xp.zeros_like(self.log_b)

    def sinkhorn_step(self, pots: tuple[Any, ...], eps: float, penalty: Penalty) -> tuple[Any, ...]:
        """The parallel Sinkhorn update of (f, g): soft-mins over the rows and the columns of C."""
        xp, c = self.xp, self.c_loop
        f, g = pots
        ft = -eps * log_sum_exp(xp, c, self.log_b + g / eps, 1.0 / eps)
        gt = -eps * log_sum_exp(xp, transposed(xp, c), self.log_a + f / eps, 1.0 / eps)
        return penalty.update(xp, ft, eps), penalty.update(xp, gt, eps)

    def mass_term(self, f: Any, g: Any, eps: float) -> Any:
        """eps <a x b, exp((f + g - C) / eps)> with f, g constant and C, a, b live: (B,).

        The weights multiply the exponentials (not through log a), so that the derivatives
        in a_i = 0 or b_j = 0 are those of the formula too.
        """
        xp, stop = self.xp, self.stop
        f, g = stop(f), stop(g)
        n, m = int(self.c.shape[1]), int(self.c.shape[2])
        total = 0
        for rows in row_blocks(n, m):
            z = (f[:, rows, None] + g[:, None, :] - self.c[:, rows, :]) / eps
            per_row = xp.sum(self.b[:, None, :] * exp(xp, z), axis=-1)
            total = total + xp.sum(self.a[:, rows] * per_row, axis=-1)
        return eps * total


def dual_value(problem: MatrixTransport, penalty: Penalty, eps: float, f: Any, g: Any) -> Any:
    """The dual objective of the module docstring at constant f, g, with C, a, b live: (B,)."""
    xp, stop = problem.xp, problem.stop
    a, b = problem.a, problem.b
    f, g = stop(f), stop(g)
    if isinstance(penalty, KullbackLeibler):
        rho = penalty.rho
        assert rho is not None
        psi_f, psi_g = rho * (1 - xp.exp(-f / rho)), rho * (1 - xp.exp(-g / rho))
    else:  # balanced, and TV (whose updates keep the potentials in [-rho, rho])
        psi_f, psi_g = f, g
    linear = xp.sum(a * psi_f, axis=-1) + xp.sum(b * psi_g, axis=-1)
    masses = eps * xp.sum(a, axis=-1) * xp.sum(b, axis=-1)
    return linear - problem.mass_term(f, g, eps) + masses


@dataclass
class MatrixSolution(Solution):
    """The state of a solve on a cost matrix: the problem, the final eps and potentials (B, N), (B, M)."""

    problem: MatrixTransport = field(repr=False)
    eps: float
    pots: tuple[Any, Any] = field(repr=False)
    batched: bool

    def plan(self) -> MatrixPlan:
        t, (f, g) = self.problem, self.pots
        u, w = t.log_a + t.stop(f) / self.eps, t.log_b + t.stop(g) / self.eps
        a_shape, b_shape = (tuple(_user(self.batched, v).shape) for v in (t.a, t.b))
        return MatrixPlan(t.c_loop, u, w, self.eps, a_shape, b_shape, self.batched)

    def weights(self) -> tuple[Any, Any]:
        t = self.problem
        return _user(self.batched, t.stop(t.a)), _user(self.batched, t.stop(t.b))

    def target_points(self) -> Any:
        raise NotImplementedError(
            "a solve on a cost matrix has no points, hence no barycentric map: compute "
            "(result.plan @ y) / a[:, None] with the points y of b's support"
        )

    def gradients(self) -> tuple[Any, Any]:
        raise NotImplementedError(
            "a solve on a cost matrix has no points to differentiate in: the gradient of the "
            "value in C is the plan (result.plan), or use the array library's autodiff on C, a, b"
        )


def _positive(v: Any) -> bool:
    """Whether ``v`` is a positive finite number."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _user(batched: bool, v: Any) -> Any:
    """``v`` (B, ...) in the user's layout: the batch axis dropped when C had none."""
    return v if batched else v[0, ...]


def _check_cost(c: Any) -> tuple[Any, bool]:
    """The cost matrix as a batch (B, N, M), and whether the user's had a batch axis."""
    if not hasattr(c, "shape") or not hasattr(c, "dtype"):
        raise TypeError(f"C must be an array of costs of shape (N, M) or (B, N, M), got {type(c)}")
    if len(c.shape) not in (2, 3):
        raise ValueError(f"C must be a cost matrix of shape (N, M) or a batch (B, N, M), got {_describe(c)}")
    if any(s == 0 for s in c.shape):
        raise ValueError(f"C is empty ({_describe(c)}): expected at least one row and one column")
    xp = array_api_compat.array_namespace(c)
    if not xp.isdtype(c.dtype, "real floating"):
        raise TypeError(f"C must hold real floating-point costs, got dtype {c.dtype}")
    check_finite(xp, "C", c, "costs")
    batched = len(c.shape) == 3
    return (c if batched else c[None, ...]), batched


def _cost_range(xp: Any, c: Any) -> float | None:
    """max C - min C (None under jax.jit, where C has no values yet)."""
    spread = xp.max(c) - xp.min(c)
    return float(spread) if _concrete_bool(spread > 0) is not None else None


def solve(
    C: Any,
    a: Any = None,
    b: Any = None,
    *,
    reg: float,
    unbalanced: float | None = None,
    unbalanced_type: str = "KL",
    reg_start: float | None = None,
    scaling: float = 0.25,
    max_iter: int | None = None,
    tol: float | None = None,
    verbose: bool = False,
    progress: bool = False,
) -> OTResult:
    """Entropic (unbalanced) optimal transport for a cost matrix ``C`` (see the module docstring).

    Args:
        C: costs of shape (N, M), or a batch (B, N, M), of any array library with a
            lazymat backend (float32 or float64); torch/jax arrays may require gradients.
        a, b: nonnegative weights (N,) and (M,) (batched: (B, N), (B, M)); uniform 1/N and
            1/M by default.
        reg: the temperature eps of the entropic term eps KL(pi | a x b).
        unbalanced: None for balanced transport (pi 1 = a, pi^T 1 = b; sum a = sum b), else
            the strength rho of the marginal penalty.
        unbalanced_type: "KL" (rho KL(pi 1 | a), as GeomLoss and POT) or "TV" (``rho |pi 1 - a|_1``).
        reg_start: the first temperature of the annealing (default: max C - min C, the
            cost's range; under jax.jit pass it).
        scaling: the ratio of two successive temperatures in (0, 1) (0.25: the point-cloud
            solver's blur ratio 0.5 at p = 2).
        max_iter, tol: as :func:`~lazymat.solvers.sinkhorn` (tol: iterate at ``reg`` until
            the potentials move by less than ``tol``, warning with a ConvergenceWarning if
            ``max_iter`` (default: the annealing + 1000) comes first; None: the annealing only).
        verbose, progress: log the iterations / show a progress bar (logger
            ``lazymat.solvers.sinkhorn_loop``).

    Returns:
        an :class:`~.ot_result.OTResult`: ``value`` (shape () or (B,)), potentials ``f`` (N,)
        and ``g`` (M,), ``plan`` a :class:`~.matrix_plan.MatrixPlan` (``@``, ``.T``,
        ``marginals()``, ``to_sparse``), ``marginal_errors``, ``n_iter``, ``schedule``;
        ``f_aa`` and ``g_bb`` are None (no debiasing on a matrix).
    """
    if not isinstance(unbalanced_type, str) or unbalanced_type.lower() not in ("kl", "tv"):
        raise ValueError(f"unbalanced_type must be 'KL' or 'TV', got {unbalanced_type!r}")
    for name, v in (("reg", reg), ("unbalanced", unbalanced), ("reg_start", reg_start)):
        if (v is not None or name == "reg") and not _positive(v):
            raise ValueError(f"{name} must be a positive finite number, got {v!r}")
    check_scales(1.0, None, None, scaling)
    if tol is not None and not tol > 0:
        raise ValueError(f"tol must be positive, got {tol!r}")
    if max_iter is not None and max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    c, batched = _check_cost(C)
    xp = array_api_compat.array_namespace(c)
    for name, w, axis in (("a", a, -2), ("b", b, -1)):
        if w is None:
            continue
        if not hasattr(w, "shape") or lazymat.backend_for(w).name != lazymat.backend_for(c).name:
            raise TypeError(
                f"C and {name} must be arrays of one array library, got {_describe(c)} and {type(w)}"
            )
        want = (*C.shape[:-2], C.shape[axis])
        if tuple(w.shape) != want:
            raise ValueError(
                f"{name} must have shape {want} for C of shape {tuple(C.shape)}, got {_describe(w)}"
            )
    lead_a = a if a is None or batched else a[None, ...]
    lead_b = b if b is None or batched else b[None, ...]
    wa = _weights("a", lead_a, c, xp)
    wb = _weights("b", lead_b, transposed(xp, c), xp)
    pen = make_penalty(unbalanced, 1, unbalanced_type.lower())
    if isinstance(pen, Balanced):
        check_equal_masses(xp, wa, wb)
    eps = float(reg)
    if reg_start is None:
        spread = _cost_range(xp, lazymat.backend_for(c).stop_gradient(c))
        if spread is None:
            raise TypeError("C has no values yet (jax.jit?): pass reg_start= to build the annealing schedule")
        reg_start = max(spread, eps)
    eps_list = epsilon_schedule(1, reg_start, eps, scaling)
    problem = MatrixTransport(c, wa, wb)
    outcome = sinkhorn_loop(
        [problem], eps_list, pen, tol=tol, max_iter=max_iter, verbose=verbose, progress=progress
    )
    if outcome.converged is False:
        warnings.warn(
            f"solve stopped after {outcome.n_iter} iterations before its tolerance tol={tol:g}: the "
            "potentials, value and plan are inexact (raise max_iter, reg or tol)",
            ConvergenceWarning,
            stacklevel=2,
        )
    f, g = problem.sinkhorn_step(outcome.potentials[0], eps, pen)
    value = dual_value(problem, pen, eps, f, g)

    return OTResult(
        value=_user(batched, value),
        f=_user(batched, f),
        g=_user(batched, g),
        f_aa=None,
        g_bb=None,
        n_iter=outcome.n_iter,
        converged=outcome.converged,
        eps=eps,
        rho=pen.rho,
        schedule=eps_list,
        _solution=MatrixSolution(problem, eps, (f, g), batched),
    )
