r"""Wasserstein barycenters of densities on a grid, by iterative Bregman projections in log domain.

Given K densities a_1, ..., a_K on one grid (masses of equal total) and weights lambda_k on
the simplex, the entropic barycenter (Benamou, Carlier, Cuturi, Nenna, Peyre 2015; Solomon
et al. 2015, "Convolutional Wasserstein distances") is

    bar = argmin_q sum_k lambda_k OT_eps(q, a_k),   C(x, y) = |x - y|^2 / 2,

with OT_eps the entropic transport cost whose plans are P_k = exp((f_k + g_k - C) / eps) (no
reference measure: POT's convention). Its Bregman projections alternate between the two
marginal constraints, written here with potentials f_k (barycenter side) and g_k (a_k side)
and the grid soft-min S(h) = -eps log sum_j exp(h_j - C_ij / eps) (:mod:`.separable`):

1. g_k = eps log a_k + S(f_k / eps)                     (P_k^T 1 = a_k);
2. L_k = -S(g_k / eps) / eps, log bar = sum_k lambda_k L_k   (the geometric mean of the
   plans' barycenter marginals exp(f_k / eps + L_k) ...);
3. f_k = eps (log bar - L_k)                             (... made equal to bar: P_k 1 = bar).

The debiased barycenter (Janati, Cuturi, Gramfort 2020) multiplies bar by exp(d / eps), where
d is the self-transport potential of bar, d / eps = log bar - log sum_j exp(d_j / eps - C_ij / eps),
updated once per iteration by an averaged (symmetric) step (Janati et al.'s algorithm; POT
runs ten such steps per iteration), at the final temperature only: with bar = e^(d / eps) B,
the equation reads K e^(d / eps) = B, a deconvolution that is ill-posed at the large
temperatures of the annealing. It converges slowly where bar has no mass.

The loop stops when every plan's barycenter marginal (before step 3) is within ``tol`` of
bar in L1 (and, debiased, bar's self-transport marginal too): POT's rule measures the same
disagreement (the spread of these marginals across k) every 10 iterations. The annealing
(``scaling``) runs one iteration per temperature of :func:`~.schedule.epsilon_schedule`
(diameter^2 down to blur^2) before iterating at blur^2: it reaches the fixed point faster at
small blur and does not change it. POT's ``ot.bregman.convolutional_barycenter2d(A, reg)``
on images of shape (w, h) is this barycenter with ``axes=(linspace(0, 1, w), linspace(0, 1, h))``
and eps = reg / 2 (its kernel is exp(-|x - y|^2 / reg)), i.e. blur = sqrt(reg / 2).

Differentiable in the densities and the weights by the array library's autodiff: through
every iteration (``backward_iterations=None``: exact derivative of the computed barycenter,
memory growing with the iterations), or, as GeomLoss's ``ImagesBarycenter``, through the
last ``backward_iterations`` iterations only, restarted from the converged potentials.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import array_api_compat

import lazymat

from .grid_measures import (
    GridLayout,
    GridMeasures,
    axes_diameter,
    axes_spacing,
    check_densities,
    check_grid_shape,
    grid_axes,
    is_interval,
)
from .grid_sinkhorn import GridSolution
from .measures import _concrete_bool, check_equal_masses
from .ot_result import OTResult
from .schedule import check_scales, epsilon_schedule
from .separable import flat_logsumexp
from .sinkhorn_loop import log_weights

logger = logging.getLogger(__name__)


@dataclass
class GridBarycenter(OTResult):
    """What :func:`barycenter_grid` returns: an :class:`~.ot_result.OTResult` of the K problems
    between the barycenter and the measures, in the user's layout (a leading B if batched), and
    the barycenter's own fields.

    ``value`` sum_k lambda_k (<P_k, C> + eps <P_k, log P_k - 1>), the entropic costs of the
    K plans P_k = exp((f_k + g_k - C) / eps) (POT's convention), read off the potentials as
    sum_k lambda_k (<P_k 1, f_k> + <P_k^T 1, g_k> - eps <P_k, 1>) with P_k 1 = bar and
    P_k^T 1 = a_k (at convergence; debiased, the plans' costs, not the debiased objective);
    potentials ``f`` (barycenter side) and ``g`` (measures' side) of the K plans,
    (K, n_1, ..., n_D); ``plan`` the K plans, one batched :class:`~.lazy_plan.TransportPlan`
    over B * K problems (marginals and ``marginal_errors`` of shape (B * K, ...)); ``n_iter``,
    ``converged`` (None when ``tol`` is None), ``eps``, ``schedule``. Own fields:
    ``barycenter`` (n_1, ..., n_D), ``d`` the debiasing potential (None unless debiased),
    ``error`` the last L1 marginal error (a float).
    """

    barycenter: Any
    d: Any
    error: float


@dataclass
class _Stack(GridLayout):
    """K densities per batch on one grid, flattened: masses (B, K, N), weights (B, K, 1)."""

    masses: Any
    weights: Any
    axes: tuple[Any, ...]
    batched: bool
    xp: Any


def _check_stack(measures: Any, weights: Any, dim: int | None, axes: Any) -> _Stack:
    """Check the densities (K, n_1, ..., n_D) or (B, K, ...) and the weights (K,) or (B, K)."""
    if dim is None and isinstance(axes, (tuple, list)) and not is_interval(axes):
        dim = len(axes)
    dims = check_grid_shape("measures", measures, dim, stacked=True)
    xp = array_api_compat.array_namespace(measures)
    batched = len(measures.shape) == dims + 2
    shape = tuple(int(n) for n in measures.shape[len(measures.shape) - dims :])
    k = int(measures.shape[-dims - 1])
    flat = xp.reshape(measures, (-1, k, math.prod(shape)))
    check_densities("measures", xp.reshape(flat, (-1, flat.shape[-1])), xp)
    for j in range(1, k):
        check_equal_masses(xp, flat[:, 0, :], flat[:, j, :])
    b = flat.shape[0]
    dtype, device = measures.dtype, array_api_compat.device(measures)
    if weights is None:
        w = xp.full((b, k), 1.0 / k, dtype=dtype, device=device)
    else:
        if not hasattr(weights, "shape"):
            weights = xp.asarray(weights, dtype=dtype, device=device)
        if tuple(weights.shape) not in ((k,), (b, k)):
            raise ValueError(
                f"weights must have shape ({k},) or ({b}, {k}) for {k} measures, got {tuple(weights.shape)}"
            )
        w = xp.broadcast_to(xp.astype(weights, dtype), (b, k))
        if _concrete_bool(xp.any(~xp.isfinite(w)) | xp.any(w < 0)):
            raise ValueError("weights must be finite and nonnegative")
        sums = xp.sum(w, axis=-1)
        if _concrete_bool(xp.any(xp.abs(sums - 1) > 1e-6)):
            raise ValueError(f"weights must sum to 1 (barycentric coordinates), got sums {sums}")
    return _Stack(flat, xp.reshape(w, (b, k, 1)), grid_axes(axes, shape, measures), batched, xp)


@dataclass
class _State:
    """The loop's potentials (B, K, N), the debiasing potential (B, 1, N), log bar and the error."""

    f: Any
    g: Any
    d: Any
    log_bar: Any = None
    error: Any = None


def _error(xp: Any, marginals: Any, target: Any) -> Any:
    """The largest L1 distance between marginals (B, K, N) and their target (B, 1, N)."""
    return xp.max(xp.sum(xp.abs(marginals - target), axis=-1))


def barycenter_grid(
    measures: Any,
    weights: Any = None,
    *,
    dim: int | None = None,
    axes: Any = None,
    blur: float | None = None,
    scaling: float | None = 0.5,
    diameter: float | None = None,
    debias: bool = False,
    tol: float | None = 1e-6,
    max_iter: int = 1000,
    backward_iterations: int | None = None,
    verbose: bool = False,
) -> GridBarycenter:
    """The entropic Wasserstein barycenter of K densities on a grid (see the module docstring).

    Args:
        measures: nonnegative masses (K, n_1, ..., n_D), or batches (B, K, n_1, ..., n_D),
            all of the same total mass (per batch).
        weights: barycentric weights lambda (K,) or (B, K) on the simplex (default: 1/K).
        dim: the grid's dimension D (default: ``len(axes)`` when axes lists the axes, else
            measures.ndim - 1: unbatched).
        axes: the cells' coordinates (``lazymat.solvers.grid_measures``; default [0, 1)^D).
        blur: eps = blur**2 (default: the smallest distance between neighbouring cells).
        scaling: anneal from the grid's diameter down to blur by this ratio, one iteration
            per temperature (None: every iteration at blur**2, as POT).
        diameter: the start of the annealing (default: the grid's bounding-box diagonal).
        debias: the debiased barycenter (Janati et al. 2020).
        tol: stop when the L1 marginal error is below ``tol`` (None: run ``max_iter``
            iterations exactly).
        max_iter: the most iterations in all (annealing included).
        backward_iterations: None: autodiff records every iteration; an integer n: the loop
            runs without autodiff, then n recorded iterations from its potentials.
        verbose: log the iterations' errors (logger ``lazymat.solvers.grid_barycenter``).
    """
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    if tol is not None and not tol > 0:
        raise ValueError(f"tol must be positive or None, got {tol!r}")
    if backward_iterations is not None and (
        not isinstance(backward_iterations, int) or backward_iterations < 1
    ):
        raise ValueError(
            f"backward_iterations must be None or a positive integer, got {backward_iterations!r}"
        )
    check_scales(1.0 if blur is None else blur, None, diameter, 0.5 if scaling is None else scaling)
    s = _check_stack(measures, weights, dim, axes)
    xp = s.xp
    if blur is None:
        blur = axes_spacing(xp, s.axes)
        if blur is None:
            raise ValueError("a grid of a single cell has no cell size: pass blur=...")
    eps = blur**2
    schedule = [eps]
    if scaling is not None:
        schedule = epsilon_schedule(2, diameter or axes_diameter(xp, s.axes) or blur, blur, scaling)
    if len(schedule) > max_iter:
        raise ValueError(f"max_iter={max_iter} is shorter than the annealing ({len(schedule)} temperatures)")

    stop = lazymat.backend_for(measures).stop_gradient
    live = backward_iterations is None

    def step(state: _State, eps: float, la: Any, w: Any, debiasing: bool) -> _State:
        """One Bregman projection on each side (steps 1-3 of the module docstring)."""
        f, d = state.f, state.d
        g = eps * la - eps * flat_logsumexp(f / eps, s.axes, s.axes, eps)
        logs = flat_logsumexp(g / eps, s.axes, s.axes, eps)
        log_bar = xp.sum(w * logs, axis=1, keepdims=True)
        errors = []
        if debiasing:  # bar = e^(d/eps) prod_k (K e^(g_k/eps))^lambda_k
            own = flat_logsumexp(d / eps, s.axes, s.axes, eps)
            log_bar = log_bar + d / eps
            errors.append(_error(xp, xp.exp(d / eps + own), xp.exp(log_bar)))
            d = 0.5 * (d + eps * (log_bar - own))
        errors.append(_error(xp, xp.exp(f / eps + logs), xp.exp(log_bar)))
        error = errors[0] if len(errors) == 1 else xp.maximum(errors[0], errors[1])
        return _State(eps * (log_bar - logs), g, d, log_bar, error)

    la, lam = log_weights(xp, s.masses), s.weights
    state = _State(xp.zeros_like(s.masses), None, xp.zeros_like(s.masses[:, :1, :]) if debias else None)
    converged: bool | None = None if tol is None else False
    n_iter = 0
    while n_iter < max_iter:
        e = schedule[min(n_iter, len(schedule) - 1)]
        debiasing = debias and n_iter >= len(schedule) - 1  # at the final eps
        state = step(state, e, la if live else stop(la), lam if live else stop(lam), debiasing)
        n_iter += 1
        if verbose or tol is not None:
            error = _concrete(stop(state.error))
            if verbose:
                logger.info("barycenter iteration %d: eps = %.3e, marginal error = %.3e", n_iter, e, error)
            if tol is not None and n_iter >= len(schedule) and error < tol:
                converged = True
                break
    if not live:  # restart from the potentials, recorded by autodiff
        state = _State(stop(state.f), None, None if state.d is None else stop(state.d))
        for _ in range(backward_iterations or 0):
            state = step(state, eps, la, lam, debias)
    bar = xp.exp(state.log_bar)  # (B, 1, N)
    return GridBarycenter(
        value=s.unbatch(_plans_cost(xp, state, bar, s.masses, lam, eps)),
        f=s.on_grid(state.f),
        g=s.on_grid(state.g),
        f_aa=None,
        g_bb=None,
        n_iter=n_iter,
        converged=converged,
        eps=eps,
        rho=None,
        schedule=schedule,
        _solution=_plans_solution(s, state, bar, eps),
        barycenter=s.on_grid(bar[:, 0, :]),
        d=None if state.d is None else s.on_grid(state.d[:, 0, :]),
        error=_concrete(stop(state.error)),
    )


def _plans_cost(xp: Any, state: _State, bar: Any, masses: Any, lam: Any, eps: float) -> Any:
    """sum_k lambda_k (<bar, f_k> + <a_k, g_k> - eps m): the K plans' entropic costs, (B,)."""
    costs = xp.sum(bar * state.f, axis=-1) + xp.sum(masses * state.g, axis=-1) - eps * xp.sum(masses, axis=-1)
    return xp.sum(lam[..., 0] * costs, axis=-1)


def _plans_solution(s: _Stack, state: _State, bar: Any, eps: float) -> GridSolution:
    """The K plans P_k = exp((f_k + g_k - C) / eps) as grid OT solutions between bar and a_k.

    GridSolution's plans are exp(log a + f' / eps + log b + g' / eps - C / eps): with
    f' = f - eps log bar and g' = g - eps log a_k (log 0 written LOG_ZERO on both sides, so
    that log a + f' / eps = f / eps wherever the mass is zero too) they are the P_k.
    """
    xp, stop = s.xp, lazymat.backend_for(bar).stop_gradient
    b, k, n = (int(v) for v in s.masses.shape)
    rows = xp.reshape(xp.broadcast_to(stop(bar), (b, k, n)), (b * k, n))
    cols = xp.reshape(stop(s.masses), (b * k, n))
    f = xp.reshape(stop(state.f), (b * k, n)) - eps * log_weights(xp, rows)
    g = xp.reshape(stop(state.g), (b * k, n)) - eps * log_weights(xp, cols)
    pairs = GridMeasures(rows, cols, s.axes, True, xp)
    return GridSolution(pairs, eps, (f, g), (b * k, *s.shape))


def _concrete(v: Any) -> float:
    """``float(v)``, with the message of a traced array (jax.jit) that has no value."""
    try:
        return float(v)
    except TypeError as err:  # jax's ConcretizationTypeError
        raise TypeError(
            "the barycenter's marginal error needs values, which traced arrays do not have (jax.jit?)"
        ) from err
