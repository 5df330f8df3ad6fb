r"""Entropic OT and Sinkhorn divergences between densities on 1-D, 2-D and 3-D grids.

``solve_grid(a, b)`` is :func:`~.sinkhorn.sinkhorn` for two measures whose masses sit on
the cells of one Cartesian grid (images, volumes; see :mod:`.grid_measures` for the
coordinates), with the cost C(x, y) = |x - y|^2 / 2. It runs the same loop
(:mod:`.sinkhorn_loop`: GeomLoss's schedule, symmetric averaged updates, debiasing, the
balanced, KL and TV penalties, the same value formulas of :mod:`.sinkhorn_divergence`), step for step,
so that it returns the numbers the point-cloud solver gives on the grid's points. Only the
soft-min differs: on a grid it is separable (:mod:`.separable`), D one-dimensional
log-sum-exp passes of N * n terms each instead of one N^2 reduction.

With ``multiscale=True`` the annealing starts on a pyramid of coarser grids (every axis
halved per level, masses summed over pairs of cells; :func:`~.grid_measures.coarsen`): a
level of cell size s is left after the iteration that GeomLoss's rule names
(:func:`~.multiscale.jump_index`: the first eps below s^2), and its potentials are carried
to the next finer grid by one Sinkhorn update from the coarse grid to the fine one (a
C-transform, at the same eps). The fixed point is the same; the path, hence the result
at GeomLoss's short schedule, differs slightly (pass ``tol`` to converge).

The potentials are computed without autodiff; the value's gradients in the densities a and
b (torch.autograd, jax.grad) come from the value formulas, at convergence the envelope
theorem's f - f_aa and g - g_bb (balanced). The grid's points are fixed: there is no
gradient in them. The result is an :class:`~.ot_result.OTResult`: potentials shaped like
a, the plan a :class:`~.lazy_plan.TransportPlan` over the flattened grids whose products
``plan @ v`` (marginals, barycentric map) are separable too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import array_api_compat

import lazymat

from .costs import half_sqdist
from .grid_measures import GridMeasures, check_grid_measures, coarsen
from .lazy_plan import TransportPlan
from .multiscale import jump_index
from .ot_result import OTResult, Solution
from .penalties import Balanced, Penalty, make_penalty
from .schedule import check_scales, epsilon_schedule
from .separable import flat_logsumexp
from .sinkhorn_divergence import ot_value
from .sinkhorn_loop import LoopOutcome, log_weights, sinkhorn_loop
from .transport_plan import log_transport_plan

logger = logging.getLogger(__name__)


@dataclass
class GridTransport:
    """One entropic OT problem between masses a (B, N) on the grid ``x_axes`` and b on ``y_axes``.

    The grid counterpart of :class:`~.sinkhorn_loop.Transport` (the loop's
    :class:`~.sinkhorn_loop.Problem`): ``symmetric`` problems (OT(a, a)) have one potential.
    """

    a: Any
    b: Any
    x_axes: tuple[Any, ...]
    y_axes: tuple[Any, ...]
    symmetric: bool

    def __post_init__(self) -> None:
        self.xp = array_api_compat.array_namespace(self.a)
        self.stop = lazymat.backend_for(self.a).stop_gradient
        self.log_a = log_weights(self.xp, self.stop(self.a))
        self.log_b = self.log_a if self.symmetric else log_weights(self.xp, self.stop(self.b))

    def zeros(self) -> tuple[Any, ...]:
        za = self.xp.zeros_like(self.log_a)
        return (za,) if self.symmetric else (za, self.xp.zeros_like(self.log_b))

    def sinkhorn_step(self, pots: tuple[Any, ...], eps: float, penalty: Penalty) -> tuple[Any, ...]:
        """The parallel Sinkhorn update of (f, g), or (f,) if symmetric."""
        return self.update_onto(self, pots, eps, penalty)

    def update_onto(
        self, target: GridTransport, pots: tuple[Any, ...], eps: float, penalty: Penalty
    ) -> tuple[Any, ...]:
        """A Sinkhorn update of this problem's potentials evaluated on ``target``'s grids.

        With ``target`` this problem, the Sinkhorn step; with a finer grid, the C-transform
        that carries a pyramid level's potentials to the next level.
        """
        f = pots[0]
        g = f if self.symmetric else pots[1]
        ft = -eps * flat_logsumexp(self.log_b + g / eps, target.x_axes, self.y_axes, eps)
        ft = penalty.update(self.xp, ft, eps)
        if self.symmetric:
            return (ft,)
        gt = -eps * flat_logsumexp(self.log_a + f / eps, target.y_axes, self.x_axes, eps)
        return ft, penalty.update(self.xp, gt, eps)

    def mass_term(self, f: Any, g: Any, eps: float) -> Any:
        """eps <a x b, exp((f + g - C)/eps)> with f, g constant and a, b live: (B,)."""
        xp, stop = self.xp, self.stop
        b = self.a if self.symmetric else self.b
        u = log_weights(xp, self.a) + stop(f) / eps
        lse = flat_logsumexp(log_weights(xp, b) + stop(g) / eps, self.x_axes, self.y_axes, eps)
        return eps * xp.sum(xp.exp(u + lse), axis=-1)


def grid_problems(m: GridMeasures, debias: bool) -> list[GridTransport]:
    """OT(a, b), and OT(a, a), OT(b, b) for the debiased divergence."""
    problems = [GridTransport(m.a, m.b, m.axes, m.axes, False)]
    if debias:
        problems += [
            GridTransport(m.a, m.a, m.axes, m.axes, True),
            GridTransport(m.b, m.b, m.axes, m.axes, True),
        ]
    return problems


def pyramid_jumps(m: GridMeasures, eps_list: list[float]) -> list[tuple[GridMeasures, int]]:
    """The coarse levels the annealing visits (coarsest first) and the iteration that leaves each.

    Levels halve every axis until none has more than two cells; a level is kept if it
    iterates at least once (its jump, :func:`~.multiscale.jump_index`, comes after the
    previous level's) and leaves before the last eps, which belongs to the full grid.
    """
    levels = [m]
    while any(n > 2 for n in levels[-1].shape):
        levels.append(coarsen(levels[-1]))
    last = len(eps_list) - 1
    kept: list[tuple[GridMeasures, int]] = []
    for level in reversed(levels[1:]):
        scale = level.scale()
        if scale is None:
            continue
        jump = jump_index(eps_list, scale, 2)
        if jump < last and (not kept or jump > kept[-1][1]):
            kept.append((level, jump))
    return kept


def multiscale_loop(
    m: GridMeasures,
    debias: bool,
    eps_list: list[float],
    penalty: Penalty,
    tol: float | None,
    max_iter: int | None,
    verbose: bool,
) -> tuple[list[GridTransport], LoopOutcome]:
    """The loop on the pyramid of :func:`pyramid_jumps`, then on the grid itself."""
    levels = pyramid_jumps(m, eps_list)
    finer = [level for level, _ in levels[1:]] + [m]
    problems = grid_problems(m, debias)
    pots = None
    start = 0
    for (level, jump), target in zip(levels, finer, strict=True):
        coarse, problems = grid_problems(level, debias), grid_problems(target, debias)
        if verbose:
            logger.info("grid %s: iterations %d to %d", level.shape, start + 1, jump + 1)
        outcome = sinkhorn_loop(coarse, eps_list[start : jump + 1], penalty, verbose=verbose, initial=pots)
        pots = [
            t.update_onto(u, q, eps_list[jump], penalty)
            for t, u, q in zip(coarse, problems, outcome.potentials, strict=True)
        ]
        start = jump + 1
    remaining = None if max_iter is None else max(1, max_iter - start)
    outcome = sinkhorn_loop(
        problems,
        eps_list[start:],
        penalty,
        tol=tol,
        max_iter=remaining,
        verbose=verbose,
        initial=pots,
    )
    outcome.n_iter += start
    return problems, outcome


@dataclass
class GridSolution(Solution):
    """The state of a grid solve: measures, final eps, potentials (f, g) of OT(a, b), flat (B, N)."""

    measures: GridMeasures
    eps: float
    pots: tuple[Any, Any] = field(repr=False)
    #: the shape of the user's a (and b)
    user_shape: tuple[int, ...] = ()

    def _log_scalings(self) -> tuple[Any, Any]:
        """log a + f / eps and log b + g / eps: the plan is exp(u_i + w_j - C_ij / eps)."""
        m, (f, g) = self.measures, self.pots
        return log_weights(m.xp, m.a) + f / self.eps, log_weights(m.xp, m.b) + g / self.eps

    def _product(self, transposed: bool) -> Any:
        u, w = self._log_scalings()
        if transposed:
            u, w = w, u
        axes, eps = self.measures.axes, self.eps
        xp = self.measures.xp

        def product(v: Any) -> Any:  # v (B', M, E) -> (B, N, E)
            vt = xp.permute_dims(v, (0, 2, 1))  # (B', E, M)
            out = 0
            for sign, part in ((1.0, xp.maximum(vt, 0.0)), (-1.0, xp.maximum(-vt, 0.0))):
                h = w[:, None, :] + log_weights(xp, part)
                out = out + sign * xp.exp(u[:, None, :] + flat_logsumexp(h, axes, axes, eps))
            return xp.permute_dims(out, (0, 2, 1))

        return product

    def plan(self) -> TransportPlan:
        m = self.measures
        xp = m.xp
        pts = m.points()
        f, g = (m.unbatch(v) for v in self.pots)
        la, lb = (m.unbatch(log_weights(xp, v)) for v in (m.a, m.b))
        log_plan = log_transport_plan(pts, pts, la, lb, f, g, self.eps, half_sqdist)
        return TransportPlan.build(
            log_plan, self.user_shape, self.user_shape, m.batched, self._product(False), self._product(True)
        )

    def weights(self) -> tuple[Any, Any]:
        return self.measures.on_grid(self.measures.a), self.measures.on_grid(self.measures.b)

    def target_points(self) -> Any:
        pts = self.measures.points()
        return self.measures.xp.reshape(pts, (1, *pts.shape))

    def map_shape(self, d: int) -> tuple[int, ...]:
        return (*self.user_shape, d)


def solve_grid(
    a: Any,
    b: Any,
    *,
    dim: int | None = None,
    axes: Any = None,
    p: float = 2,
    blur: float | None = None,
    reach: float | None = None,
    diameter: float | None = None,
    scaling: float = 0.5,
    debias: bool = True,
    penalty: str = "kl",
    max_iter: int | None = None,
    tol: float | None = None,
    multiscale: bool = False,
    verbose: bool = False,
) -> OTResult:
    """Sinkhorn divergence (or entropic OT) between two densities on one 1-D, 2-D or 3-D grid.

    Args:
        a, b: nonnegative masses of shape (n_1, ..., n_D), or batches (B, n_1, ..., n_D),
            of any array library with a lazymat backend (float32 or float64).
        dim: the grid's dimension D (default: ``len(axes)`` when axes lists the axes, else
            a.ndim: unbatched grids). Pass it for batches: ``dim=2`` with a of shape (B, n, n).
        axes: the cells' coordinates (``lazymat.solvers.grid_measures``): None for [0, 1)^D, a pair
            (lo, hi) for every axis, or one pair or coordinate array per axis.
        p: the cost's exponent: 2 only (``|x - y|^2 / 2``, the separable cost).
        blur: the target temperature's length scale, eps = blur**2 (default: the smallest
            distance between neighbouring cells).
        reach, penalty: unbalanced transport, as :func:`~lazymat.solvers.sinkhorn` (rho = reach**2,
            "kl" or "tv"); None: balanced.
        diameter: start of the annealing (default: the grid's bounding-box diagonal, the
            point-cloud solver's default on the grid's points).
        scaling, max_iter, tol, debias: as :func:`~lazymat.solvers.sinkhorn`.
        multiscale: anneal on a pyramid of coarser grids first (see the module docstring).
        verbose: log the grids (logger ``lazymat.solvers.grid_sinkhorn``) and the iterations
            (``lazymat.solvers.sinkhorn_loop``) at INFO.

    Returns:
        an :class:`~.ot_result.OTResult`; its potentials are shaped like a.
    """
    if p != 2:
        raise ValueError(f"solve_grid's cost is |x - y|^2 / 2 (p=2, separable on a grid), got p={p!r}")
    if tol is not None and not tol > 0:
        raise ValueError(f"tol must be positive, got {tol!r}")
    if max_iter is not None and max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    check_scales(1.0 if blur is None else blur, reach, diameter, scaling)
    pen = make_penalty(reach, 2, penalty)
    m = check_grid_measures(a, b, dim=dim, axes=axes, balanced=isinstance(pen, Balanced))
    if blur is None:
        blur = m.spacing()
        if blur is None:
            raise ValueError("a grid of a single cell has no cell size: pass blur=...")
    if diameter is None:
        diameter = m.diameter() or blur
    eps_list = epsilon_schedule(2, diameter, blur, scaling)
    eps = blur**2
    if multiscale:
        problems, outcome = multiscale_loop(m, debias, eps_list, pen, tol, max_iter, verbose)
    else:
        problems = grid_problems(m, debias)
        outcome = sinkhorn_loop(problems, eps_list, pen, tol=tol, max_iter=max_iter, verbose=verbose)
    pots = [t.sinkhorn_step(q, eps, pen) for t, q in zip(problems, outcome.potentials, strict=True)]
    value = ot_value(m.xp, pen, eps, m.a, m.b, problems, pots, debias)
    f, g = pots[0]
    return OTResult(
        value=m.unbatch(value),
        f=m.on_grid(f),
        g=m.on_grid(g),
        f_aa=m.on_grid(pots[1][0]) if debias else None,
        g_bb=m.on_grid(pots[2][0]) if debias else None,
        n_iter=outcome.n_iter,
        converged=outcome.converged,
        eps=eps,
        rho=pen.rho,
        schedule=eps_list,
        _solution=GridSolution(m, eps, (f, g), tuple(a.shape)),
    )
