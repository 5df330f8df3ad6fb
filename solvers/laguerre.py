r"""Laguerre (power) cells of prescribed volumes: semi-discrete optimal transport.

``laguerre_cells(seeds, volumes, density=...)`` finds dual weights f_i such that the cells

    Cell_i = {y : c(s_i, y) - f_i <= c(s_k, y) - f_k for all k}

of the seeds s_i hold the volumes v_i of a domain's measure mu (a density on a grid, or
weighted samples). f maximises the concave semi-discrete dual

    F(f) = sum_i f_i v_i + int min_i (c(s_i, y) - f_i) dmu(y),    grad F = v - Vol(f),

and is unique up to an additive constant. The cost is |s - y|^2 by default (power diagrams);
any formula ``cost(Vi(seeds), Vj(y)) -> LazyMatrix`` works, and per-seed parameters ride in
the seeds' columns, e.g. :func:`anisotropic_cost` |A_i (y - x_i)|^2.

Steps:

1. **Domain**: pixel centres and masses of the density (pixels split between cells,
   fractional volumes) or the samples (point masses); see :mod:`.laguerre_volumes` for what
   a volume, the volume Jacobian and a centroid are on each.
2. **Warm start** (entropic, eps-annealed; tried when no ``init`` weights are given or when
   they leave cells empty, unless ``warm_start=False``): the
   Sinkhorn loop of :mod:`.sinkhorn_loop` between (s, v) and (y, mu), one symmetric update
   per temperature from eps = c_max - c_min down to eps_end = 0.2 (c_max - c_min)
   (min_i v_i / mass)^(2/D); the start is f_i + eps_end log v_i (the soft cells' log-weights
   folded into the weights). Its hard cells are typically within tens of percent of their
   targets. On uneven densities it saves volume evaluations (a Gaussian blob, 256^2 pixels:
   15 -> 8 at 300 cells, 16 -> 12 at 1000) at the price of its own reductions (18 log-sum-
   exps at 1000 cells: about as much time as it saves); on uniform ones the Voronoi cells are
   as good a start (``warm_start=False``). Where it leaves a cell empty (a soft cell can
   hide a small hard one), Newton starts from zero weights (the Voronoi cells) instead, and
   fails with a clear error if these leave cells empty too.
3. **Damped Newton** (Kitagawa, Merigot & Thibert, "Convergence of a Newton algorithm for
   semi-discrete optimal transport", JEMS 2019): solve J d = v - Vol(f) by conjugate gradient
   (Jacobi preconditioned) with J the Laplacian of :mod:`.laguerre_volumes`, then try the steps
   t = 1, 1/2, 1/4, ... until every cell keeps at least half of min(min_i Vol_i(f_0),
   min_i v_i) and |v - Vol(f + t d)| <= (1 - t/2) |v - Vol(f)|. Stop when
   max_i |Vol_i - v_i| / v_i <= tol.

**The Newton model** is not an entropic Hessian at a small eps: it is the Jacobian of the
volumes being solved for (:mod:`.laguerre_volumes`), read off the same K-min reduction that
gives the volumes, so it costs no N x M reduction of its own; its products with vectors are
O(number of neighbouring cell pairs) segment sums, and CG needs no lazymat reduction at all.
On a grid J is the (windowed) Jacobian of the fractional volumes, a discretisation of the
semi-discrete Hessian (a boundary integral; tested against finite differences of exact power
cell areas): Newton converges quadratically, in 5-8 iterations from the Voronoi cells at
10^3-10^4 cells. Volumes of point samples are step functions of f, whose resolution is the
weight of a sample: there J is the same boundary integral estimated with boxes of side
``bandwidth`` around the samples, and the solver stops (with a :class:`ConvergenceWarning`)
when no step improves the volumes.
The computations are in float64 (sums of up to 10^6 weights to 1e-4 of a cell); no autodiff.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import array_api_compat

import lazymat
from lazymat import LazyMatrix, Vi, Vj

from .conjugate_gradient import ConvergenceWarning, cg
from .costs import Cost, evaluate_cost, ground_cost
from .laguerre_volumes import Cells, Domain, assign
from .measures import check_finite
from .ot_result import OTResult, Solution
from .penalties import Balanced
from .schedule import epsilon_schedule
from .sinkhorn_loop import Transport, sinkhorn_loop

logger = logging.getLogger("lazymat.solvers.laguerre")

#: soft cells of the warm start: eps_end = WARM_BLUR * max c * (min v / mass)^(2/D)
WARM_BLUR = 0.2
#: ratio of two successive temperatures of the warm start
WARM_SCALING = 0.25
#: the line search gives up below the step 2^-MAX_HALVINGS
MAX_HALVINGS = 12
#: relative residual of the inner conjugate gradient solves
CG_TOL = 1e-6


def squared_distance(x: LazyMatrix, y: LazyMatrix) -> Any:
    """``|x - y|^2``, the cost of power diagrams (and POT's ``"sqeuclidean"``)."""
    return x.sqdist(y)


def anisotropic_cost(dim: int) -> Cost:
    """The cost ``(y - x_i)^T M_i (y - x_i) = |A_i (y - x_i)|^2`` with ``M_i = A_i^T A_i``.

    Seeds are then rows [x_i, M_i] of length dim + dim^2 (M_i row-major).
    """
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")

    def cost(s: LazyMatrix, y: LazyMatrix) -> Any:
        return (y - s[0:dim]).weightedsqnorm(s[dim : dim + dim * dim])

    return cost


@dataclass
class LaguerreResult(OTResult):
    """What :func:`laguerre_cells` returns: an :class:`~.ot_result.OTResult` of the semi-discrete
    problem, and the cells' own fields.

    As every OT solve: ``value`` the semi-discrete dual sum_i f_i v_i + sum_j mu_j g_j at the
    returned weights, with ``f`` the dual weights (N,) and ``g`` (M,) their c-transform
    g_j = min_i c(s_i, y_j) - f_i on the domain's samples (pixel centres for a density; the
    dual's integral is taken at them); ``n_iter`` Newton iterations; ``converged`` whether
    ``errors[-1] <= tol``; ``eps`` 0 (unregularised) and ``schedule`` the warm start's
    temperatures (empty without it); ``marginal_errors`` (``sum_i |Vol_i - v_i|``, 0): every
    sample's mass goes to the cells. The plan (a partition of the domain) is not a lazy
    operator: read it with :meth:`labels`, ``volumes`` and ``centroids``.

    Own fields: ``weights`` (a property: ``f``), ``volumes`` their cells' volumes (N,), ``targets`` the
    prescribed ones, ``centroids`` (N, D); ``errors`` ``max_i |Vol_i - v_i| / v_i`` at the
    start of Newton and after each iteration; ``n_evaluations`` volume evaluations (line
    search included), ``warm_start_iter`` Sinkhorn iterations of the warm start.
    """

    volumes: Any
    targets: Any
    centroids: Any
    errors: list[float]
    n_evaluations: int
    warm_start_iter: int
    _seeds: Any = field(repr=False)
    _cost: Cost = field(repr=False)

    @property
    def weights(self) -> Any:
        """The dual weights f (N,) of the power diagram (the OT result's ``f``)."""
        return self.f

    @functools.cached_property
    def marginal_errors(self) -> tuple[Any, Any]:
        """``(sum_i |Vol_i - v_i|, 0)``: the cells' volumes against the targets; the domain is covered."""
        xp = array_api_compat.array_namespace(self.volumes)
        return xp.sum(xp.abs(self.volumes - self.targets)), xp.zeros((), dtype=self.volumes.dtype)

    def labels(self, points: Any) -> Any:
        """The cell of each point (P, D): argmin_i c(s_i, y) - f_i, as int64 indices (P,)."""
        xp = array_api_compat.array_namespace(points)
        return xp.reshape(_power_costs(self._seeds, self.weights, points, self._cost).argmin(axis=0), (-1,))


class _Partition(Solution):
    """Semi-discrete OT: the plan is a partition of the domain, not a lazy operator."""

    def plan(self) -> Any:
        raise NotImplementedError(
            "a semi-discrete plan is the partition of the domain into the cells: read it with "
            "result.labels(points), result.volumes and result.centroids"
        )


def _float64(name: str, v: Any) -> Any:
    if not hasattr(v, "shape") or not hasattr(v, "dtype"):
        raise TypeError(f"'{name}' must be an array, got {type(v).__name__}")
    xp = array_api_compat.array_namespace(v)
    if v.dtype != xp.float64:
        raise TypeError(
            f"'{name}' must be float64 (volumes are sums of up to 10^6 weights to 1e-4 of a cell), "
            f"got dtype {v.dtype}; cast it with astype(float64)"
        )
    check_finite(xp, name, v)
    return v


def grid_domain(density: Any, bounds: Sequence[tuple[float, float]] | None = None) -> Domain:
    """The pixels of a density on a regular grid: axis k of ``density`` spans ``bounds[k]``.

    ``density`` (n_1, ..., n_D), D in 1..3, nonnegative; ``bounds`` D pairs (low, high)
    (default: the unit cube). Pixel j has centre low + (index + 1/2) h and mass
    density * prod(h); pixels of zero density are left out.
    """
    density = _float64("density", density)
    xp = array_api_compat.array_namespace(density)
    shape = tuple(int(s) for s in density.shape)
    d = len(shape)
    if d not in (1, 2, 3):
        raise ValueError(f"density must be a 1-D, 2-D or 3-D grid, got shape {shape}")
    if bool(xp.any(density < 0)):
        raise ValueError(f"density must be nonnegative, got a minimum of {float(xp.min(density))}")
    if bounds is None:
        bounds = [(0.0, 1.0)] * d
    if len(bounds) != d or any(len(b) != 2 for b in bounds):
        raise ValueError(f"bounds must be {d} pairs (low, high), one per axis of the density, got {bounds!r}")
    if not all(math.isfinite(lo) and math.isfinite(hi) and hi > lo for lo, hi in bounds):
        raise ValueError(f"bounds must be finite pairs with low < high, got {bounds!r}")
    dev = array_api_compat.device(density)
    h = [(hi - lo) / n for (lo, hi), n in zip(bounds, shape, strict=True)]
    axes = [
        lo + (xp.arange(n, dtype=xp.float64, device=dev) + 0.5) * hk
        for (lo, _), n, hk in zip(bounds, shape, h, strict=True)
    ]
    coords = xp.meshgrid(*axes, indexing="ij")
    points = xp.stack([xp.reshape(c, (-1,)) for c in coords], axis=1)
    weights = xp.reshape(density, (-1,)) * math.prod(h)
    keep = xp.nonzero(weights > 0)[0]
    if int(keep.shape[0]) == 0:
        raise ValueError("density is zero everywhere: the domain has no mass to divide into cells")
    sides = xp.asarray(h, dtype=xp.float64, device=dev)
    return Domain(xp.take(points, keep, axis=0), xp.take(weights, keep), sides, fractional=True)


def sample_domain(samples: Any, weights: Any = None, bandwidth: float | None = None) -> Domain:
    """Point samples (M, D) with weights (M,) (uniform 1/M by default).

    ``bandwidth``: side of the boxes the volume Jacobian gives the samples (default: twice
    the mean spacing, 2 (bounding box volume / M)^(1/D)).
    """
    samples = _float64("samples", samples)
    xp = array_api_compat.array_namespace(samples)
    if len(samples.shape) != 2 or samples.shape[0] == 0:
        raise ValueError(f"samples must have shape (M, D) with M >= 1, got {tuple(samples.shape)}")
    m, d = (int(s) for s in samples.shape)
    if weights is None:
        weights = xp.ones((m,), dtype=xp.float64, device=array_api_compat.device(samples)) / m
    weights = _float64("sample_weights", weights)
    if tuple(weights.shape) != (m,):
        raise ValueError(f"sample_weights must have shape ({m},), got {tuple(weights.shape)}")
    if bool(xp.any(weights < 0)):
        raise ValueError(f"sample_weights must be nonnegative, got a minimum of {float(xp.min(weights))}")
    if bandwidth is None:
        extent = xp.max(samples, axis=0) - xp.min(samples, axis=0)
        span = [float(e) for e in extent if float(e) > 0] or [1.0]
        bandwidth = 2 * (math.prod(span) / m) ** (1 / len(span))
    if not (isinstance(bandwidth, (int, float)) and math.isfinite(bandwidth) and bandwidth > 0):
        raise ValueError(f"bandwidth must be a positive number, got {bandwidth!r}")
    keep = xp.nonzero(weights > 0)[0]
    if int(keep.shape[0]) == 0:
        raise ValueError("sample_weights are all zero: the domain has no mass to divide into cells")
    sides = xp.full((d,), float(bandwidth), dtype=xp.float64, device=array_api_compat.device(samples))
    return Domain(xp.take(samples, keep, axis=0), xp.take(weights, keep), sides, fractional=False)


def _targets(volumes: Any, n: int, domain: Domain) -> Any:
    xp = domain.xp
    mass = domain.mass
    if volumes is None:
        return xp.full((n,), mass / n, dtype=xp.float64, device=array_api_compat.device(domain.points))
    volumes = _float64("volumes", volumes)
    if tuple(volumes.shape) != (n,):
        raise ValueError(f"volumes must have shape ({n},), one per seed, got {tuple(volumes.shape)}")
    if bool(xp.any(volumes <= 0)):
        raise ValueError(f"volumes must be positive, got a minimum of {float(xp.min(volumes))}")
    total = float(xp.sum(volumes))
    if abs(total - mass) > 1e-6 * mass:
        raise ValueError(
            f"volumes sum to {total:.9g} but the domain's mass is {mass:.9g}: the cells partition the "
            "domain, so their volumes must add up to its mass (rescale them by mass / sum)"
        )
    return volumes


def _check_distinct(xp: Any, seeds: Any) -> None:
    """Two equal seeds (rows) have the same cell, whatever their weights: one would stay empty."""
    n = int(seeds.shape[0])
    if n < 2:
        return
    nearest = Vi(seeds).sqdist(Vj(seeds)).Kmin_argKmin(2, axis=1)  # self, then the nearest other
    twins = xp.nonzero(nearest[0][:, 1] == 0)[0]
    if int(twins.shape[0]) > 0:
        i = int(twins[0])
        raise ValueError(
            f"seeds {i} and {int(nearest[1][i, 1])} are equal: their cells would coincide and one "
            "of them stay empty whatever the weights; remove duplicate seeds"
        )


def _warm_start(domain: Domain, seeds: Any, targets: Any, cost: Cost) -> tuple[Any, list[float]]:
    """Step 2 of the module docstring: entropic weights, and the temperatures of its iterations."""
    xp = domain.xp
    c = evaluate_cost(cost, Vi(seeds), Vj(domain.points))
    c_max = float(xp.max(c.max(axis=1)))
    c_min = float(xp.min(c.min(axis=1)))
    scale = c_max - c_min
    if not scale > 0:
        raise ValueError("the cost is constant over seeds and domain: every partition has the same cost")
    eps_end = WARM_BLUR * scale * (float(xp.min(targets)) / domain.mass) ** (2 / domain.dim)
    eps_list = epsilon_schedule(1, scale, eps_end, WARM_SCALING)
    t = Transport(
        seeds[None, ...], domain.points[None, ...], targets[None, :], domain.weights[None, :], False, cost
    )
    out = sinkhorn_loop([t], eps_list, Balanced())
    f = out.potentials[0][0][0, :]
    return f + eps_end * xp.log(targets), eps_list[: out.n_iter]


def _relative_error(xp: Any, volumes: Any, targets: Any) -> float:
    return float(xp.max(xp.abs(volumes - targets) / targets))


def _newton_direction(cells: Cells, residual: Any) -> Any:
    """d with J d = residual, J the volume Jacobian (a Laplacian), by preconditioned CG."""
    xp = cells.xp
    edges = cells.jacobian()
    diag = edges.diagonal
    lonely = xp.nonzero(diag <= 0)[0]
    if int(lonely.shape[0]) > 0:
        ids = [int(i) for i in lonely[:10]]
        raise ValueError(
            f"cells {ids} share no boundary with another cell within the domain's support, so no "
            "change of weights moves their volumes: duplicate seeds, seeds whose cells lie where "
            "the density is zero, or cells smaller than a pixel (refine the grid)"
        )
    ridge = 1e-12 * float(xp.max(diag))

    def precond(r: Any) -> Any:
        return r / (diag[:, None] + ridge)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # an inexact direction: the line search checks it
        d, info = cg(
            edges.matvec, residual, alpha=ridge, tol=CG_TOL, maxiter=20 * cells.n + 100, precond=precond
        )
    logger.debug("cg: %d iterations, residual %.2e", info.iterations, info.residual_norms[-1])
    return d


def laguerre_cells(
    seeds: Any,
    volumes: Any = None,
    *,
    density: Any = None,
    bounds: Sequence[tuple[float, float]] | None = None,
    samples: Any = None,
    sample_weights: Any = None,
    bandwidth: float | None = None,
    cost: Cost | None = None,
    tol: float = 1e-4,
    max_iter: int = 20,
    init: Any = None,
    warm_start: bool = True,
) -> LaguerreResult:
    """Dual weights of the Laguerre cells of ``seeds`` with the given ``volumes`` (module docstring).

    Args:
        seeds: (N, F) float64: positions (F = D) for the default cost, or whatever rows
            ``cost`` reads (e.g. [x_i, M_i] for :func:`anisotropic_cost`).
        volumes: (N,) positive targets summing to the domain's mass; default equal volumes.
        density: a density on a regular grid (n_1, ..., n_D), D <= 3, over ``bounds``
            (D pairs (low, high); default the unit cube). Pixels are split between cells.
        samples, sample_weights: the domain as weighted points instead (M, D), (M,).
        bandwidth: samples only: the box side of the volume Jacobian (see
            ``lazymat.solvers.laguerre_volumes.sample_domain``).
        cost: ``cost(Vi(seeds), Vj(y)) -> LazyMatrix``; default ``|x - y|^2``.
        tol: target ``max_i |Vol_i - v_i| / v_i``.
        max_iter: most Newton iterations.
        init: starting dual weights (N,) (e.g. those of a previous, nearby problem).
        warm_start: start from the entropic warm start (step 2) when ``init`` is not given
            or leaves cells empty; else from zero weights (the Voronoi cells), the last resort
            of every start that leaves cells empty.

    Returns:
        a :class:`LaguerreResult`. Warns :class:`ConvergenceWarning` if ``tol`` is not reached.
    """
    if (density is None) == (samples is None):
        raise ValueError("give the domain either as density= (a grid) or as samples= (points), not both")
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"tol must be a positive number, got {tol!r}")
    if not (isinstance(max_iter, int) and max_iter >= 0):
        raise ValueError(f"max_iter must be a nonnegative integer, got {max_iter!r}")
    if density is not None:
        if bandwidth is not None:
            raise ValueError("bandwidth applies to samples only: a grid's pixels are its boxes")
        domain = grid_domain(density, bounds)
    else:
        if bounds is not None:
            raise ValueError("bounds applies to a density only: samples carry their positions")
        domain = sample_domain(samples, sample_weights, bandwidth)
    seeds = _float64("seeds", seeds)
    if len(seeds.shape) != 2 or seeds.shape[0] == 0:
        raise ValueError(f"seeds must have shape (N, F) with N >= 1, got {tuple(seeds.shape)}")
    if lazymat.backend_for(seeds).name != lazymat.backend_for(domain.points).name:
        raise TypeError("seeds and the domain come from different array libraries")
    if cost is None and seeds.shape[1] != domain.dim:
        raise ValueError(
            f"seeds have {seeds.shape[1]} coordinates but the domain is {domain.dim}-dimensional; "
            "the default cost |x - y|^2 needs seeds in the domain's space"
        )
    cost = ground_cost(2, cost if cost is not None else squared_distance)
    xp = domain.xp
    n = int(seeds.shape[0])
    _check_distinct(xp, seeds)
    targets = _targets(volumes, n, domain)
    starts: list[
        tuple[str, Callable[[], tuple[Any, list[float]]]]
    ] = []  # the starting weights to try, in order: the first without empty cells wins
    if init is not None:
        init = _float64("init", init)
        if tuple(init.shape) != (n,):
            raise ValueError(f"init must have shape ({n},), one weight per seed, got {tuple(init.shape)}")
        starts.append(("init", lambda: (init, [])))
    if warm_start:
        starts.append(("the warm start", lambda: _warm_start(domain, seeds, targets, cost)))
    starts.append(("zero weights", lambda: (xp.zeros_like(targets), [])))
    evaluations, schedule = 0, []
    for name, start in starts:
        f, temperatures = start()
        schedule += temperatures
        cells = assign(domain, seeds, f, cost)
        evaluations += 1
        if not bool(xp.any(cells.volumes <= 0)):
            break
        logger.info("laguerre: %s leaves cells empty", name)
    else:
        ids = [int(i) for i in xp.nonzero(cells.volumes <= 0)[0][:10]]
        raise ValueError(
            f"cells {ids} are empty at every start (even with zero weights, the Voronoi cells): their seeds "
            "lie where other seeds' cells leave them no room (outside the density's support?); move or "
            "remove them"
        )
    floor = 0.5 * min(float(xp.min(cells.volumes)), float(xp.min(targets)))
    errors = [_relative_error(xp, cells.volumes, targets)]
    logger.info(
        "laguerre: %d cells, start error %.3e (warm start: %d iterations)", n, errors[0], len(schedule)
    )
    n_iter = 0
    stalled = False
    while errors[-1] > tol and n_iter < max_iter:
        residual = targets - cells.volumes
        norm = float(xp.sqrt(xp.sum(residual * residual)))
        d = _newton_direction(cells, residual)
        step = 1.0
        for _ in range(MAX_HALVINGS + 1):
            trial = assign(domain, seeds, f + step * d, cost)
            evaluations += 1
            r = targets - trial.volumes
            if (
                float(xp.min(trial.volumes)) >= floor
                and float(xp.sqrt(xp.sum(r * r))) <= (1 - step / 2) * norm
            ):
                break
            step /= 2
        else:
            stalled = True
            break
        f, cells = f + step * d, trial
        n_iter += 1
        errors.append(_relative_error(xp, cells.volumes, targets))
        logger.info("laguerre: Newton iteration %d, step %g, error %.3e", n_iter, step, errors[-1])
    converged = errors[-1] <= tol
    if not converged:
        why = (
            "no step along the Newton direction improves the volumes"
            + (
                " (sample volumes are step functions: their resolution is the weight of a sample)"
                if not domain.fractional
                else ""
            )
            if stalled
            else f"max_iter={max_iter} Newton iterations ran"
        )
        warnings.warn(
            f"laguerre_cells stopped at a relative volume error of {errors[-1]:.3g} > tol={tol:g}: {why}",
            ConvergenceWarning,
            stacklevel=2,
        )
    g = _c_transform(seeds, f, domain.points, cost)
    return LaguerreResult(
        value=xp.sum(f * targets) + xp.sum(domain.weights * g),
        f=f,
        g=g,
        f_aa=None,
        g_bb=None,
        n_iter=n_iter,
        converged=converged,
        eps=0.0,
        rho=None,
        schedule=schedule,
        _solution=_Partition(),
        volumes=cells.volumes,
        targets=targets,
        centroids=cells.centroids(),
        errors=errors,
        n_evaluations=evaluations,
        warm_start_iter=len(schedule),
        _seeds=seeds,
        _cost=cost,
    )


def _power_costs(seeds: Any, f: Any, points: Any, cost: Cost) -> LazyMatrix:
    """c(s_i, y_j) - f_i, seeds on i and points on j."""
    xp = array_api_compat.array_namespace(points)
    result: LazyMatrix = evaluate_cost(cost, Vi(seeds), Vj(points)) - Vi(xp.reshape(f, (-1, 1)))
    return result


def _c_transform(seeds: Any, f: Any, points: Any, cost: Cost) -> Any:
    """g_j = min_i c(s_i, y_j) - f_i, a min reduction over the seeds: (M,)."""
    xp = array_api_compat.array_namespace(points)
    return xp.reshape(_power_costs(seeds, f, points, cost).min(axis=0), (-1,))
