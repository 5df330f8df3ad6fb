"""The symmetric Sinkhorn loop with epsilon-scaling, in the log domain, on symbolic matrices.

This is Algorithm 3.5 of J. Feydy's thesis ("Geometric data analysis, beyond
convolutions", 2020), the loop GeomLoss runs on point clouds:

1. initialise every potential with one soft-min step at eps = diameter**p;
2. for each eps of the schedule (see :mod:`.schedule`), compute the Sinkhorn updates of
   all the potentials *in parallel* and average them with the old ones
   ("symmetric" updates: f <- (f + ft) / 2, g <- (g + gt) / 2);
3. optionally (``tol``), keep iterating at the final eps until the potentials move by
   less than ``tol``, the updates weighted by ``RELAXATION`` = 3/4 instead of 1/2:
   f <- (1 - w) f + w ft. The parallel update is nonexpansive in the sup norm, so any
   weight in (0, 1) converges (Krasnosel'skii-Mann); near the fixed point its eigenvalues
   mu lie in [-1, 1) (-1: a constant added to f and g, the mode averaging exists to damp)
   and the weight maps them to 1 - w + w mu. With lambda < 1 the largest, the rate is
   max(|1 - 2 w|, 1 - w (1 - lambda)): for 3/4, max(1/2, 1/4 + 3/4 lambda), never above
   the average's (1 + lambda) / 2, and 1.5 times faster in the slow modes (lambda near 1).
   A larger weight is faster on slow problems but not on fast ones (0.9: |1 - 2 w| = 0.8
   per iteration, 52 -> 79 iterations on a problem at blur 0.5). The change tested against
   ``tol`` is w |ft - f|: a solve stops with a residual |ft - f| below tol / 0.75 (2 tol
   with the average), closer to the fixed point;
4. one last, differentiable extrapolation (:meth:`Transport.extrapolate`).

Steps 1-3 run on arrays cut from the autodiff graph (``stop_gradient``): by the envelope
theorem the gradient of the OT value only needs the optimal potentials, not their
history, so nothing of the loop is recorded. Step 4 recomputes each potential once from
the others (held constant), with the cost matrix rebuilt from the *original* points on
the side the potential lives on: the value computed from these potentials has the
gradient of the OT value (Feydy's thesis, eq. 3.226-3.227).

The soft-min (C-transform) is a log-sum-exp reduction of a LazyMatrix,
    ft_i = -eps log sum_j exp(h_j - C_ij / eps),   h_j = log b_j + g_j / eps,
with 1/eps passed as a parameter ``Pm`` so that every iteration reuses one formula
(engines that compile kernels compile it once).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

import array_api_compat

import lazymat
from lazymat import LazyMatrix, Vi, Vj
from lazymat.block_sparse import BlockSparsity
from lazymat.progress import Progress, geometric_total

from .costs import Cost, evaluate_cost, soft_c_exponent
from .penalties import Penalty

logger = logging.getLogger(__name__)

#: the weight of the new potentials in the iterations at the final eps (step 3)
RELAXATION = 0.75
#: log-weight standing for log(0), as in GeomLoss: exp(-1e5) underflows to 0 in every dtype
LOG_ZERO = -100000.0


def log_weights(xp: Any, w: Any) -> Any:
    """log(w), with LOG_ZERO where w = 0 (and a zero, not NaN, gradient there)."""
    positive = w > 0
    return xp.where(positive, xp.log(xp.where(positive, w, xp.ones_like(w))), xp.full_like(w, LOG_ZERO))


def pad(xp: Any, v: Any, size: int, fill: float, *, after_first: bool = False) -> Any:
    """``v`` (B, n, ...) padded along axis 1 to ``size`` with ``fill``, or (``after_first``)
    with its first entry plus ``fill`` (the clouds of several problems stacked into one
    batch: :mod:`.stacked_softmins`, :mod:`.tile_transports`)."""
    n = v.shape[1]
    if n == size:
        return v
    shape = (v.shape[0], size - n, *v.shape[2:])
    if after_first:
        tail = xp.broadcast_to(v[:, :1, ...], shape) + fill
    else:
        tail = xp.full(shape, fill, dtype=v.dtype, device=array_api_compat.device(v))
    return xp.concat((v, tail), axis=1)


def softmin(
    xp: Any, cost: LazyMatrix, h: Any, eps: float, axis: int, ranges: BlockSparsity | None = None
) -> Any:
    """-eps log sum exp(h - C / eps), reduced over j (axis=1, h on j) or over i (axis=0, h on i).

    ``h`` has shape (B, M) (or (B, N) for axis=0); the result (B, N) (or (B, M)).
    ``ranges`` (for the N-by-M matrix) restricts the sum to block pairs (kernel truncation).
    """
    wrap = Vj if axis == 1 else Vi
    exponent = soft_c_exponent(wrap(xp.reshape(h, (*h.shape, 1))), cost, eps, h)
    lse = exponent.logsumexp(axis=axis, ranges=ranges)
    return -eps * xp.reshape(lse, tuple(lse.shape[:-1]))


class Problem(Protocol):
    """What the loop (and the value of :mod:`.sinkhorn_divergence`) needs of one OT problem: weights
    (B, N) and the updates. :class:`Transport` (point clouds) and the grids' problems
    (:mod:`.grid_sinkhorn`) are two."""

    xp: Any
    a: Any
    b: Any
    symmetric: bool
    stop: Callable[[Any], Any]

    def zeros(self) -> tuple[Any, ...]: ...

    def sinkhorn_step(self, pots: tuple[Any, ...], eps: float, penalty: Penalty) -> tuple[Any, ...]: ...

    def mass_term(self, f: Any, g: Any, eps: float) -> Any: ...


@dataclass
class Transport:
    """One entropic OT problem between weighted clouds (x, a) on the i side and (y, b) on j.

    ``symmetric`` problems (a cloud with itself: OT(a, a)) have a single potential.
    Points and weights are the user's arrays (B, N, D), (B, N); the loop works on their
    ``stop_gradient`` copies. ``ranges`` (None: dense) truncates the kernel to block pairs
    of points sorted by cluster (multiscale Sinkhorn, :mod:`.multiscale`).
    """

    x: Any
    y: Any
    a: Any
    b: Any
    symmetric: bool
    cost: Cost
    ranges: BlockSparsity | None = None

    def __post_init__(self) -> None:
        self.xp = array_api_compat.array_namespace(self.x)
        backend = lazymat.backend_for(self.x)
        stop = self.stop = backend.stop_gradient
        self.materialize = backend.materialize
        log_a = log_weights(self.xp, stop(self.a))
        log_b = log_a if self.symmetric else log_weights(self.xp, stop(self.b))
        # the loop's constants hold their values: a lazy library (dask) computes them once,
        # not again in every iteration's graph
        self.log_a, self.log_b = self.materialize(log_a, log_b)

    @cached_property
    def matrix(self) -> LazyMatrix:
        """The cost matrix of the loop, on the stopped points (built on first use, its points
        holding their values: see ``log_a``)."""
        xs = self.stop(self.x)
        xs, ys = self.materialize(xs, xs if self.symmetric else self.stop(self.y))
        return evaluate_cost(self.cost, Vi(xs), Vj(ys))

    def zeros(self) -> tuple[Any, ...]:
        za = self.xp.zeros_like(self.log_a)
        return (za,) if self.symmetric else (za, self.xp.zeros_like(self.log_b))

    def sinkhorn_step(self, pots: tuple[Any, ...], eps: float, penalty: Penalty) -> tuple[Any, ...]:
        """The parallel Sinkhorn update of the potentials (f, g), or (f,) if symmetric."""
        xp = self.xp
        f = pots[0]
        g = f if self.symmetric else pots[1]
        r = self.ranges
        ft = penalty.update(xp, softmin(xp, self.matrix, self.log_b + g / eps, eps, 1, r), eps)
        if self.symmetric:
            return (ft,)
        gt = penalty.update(xp, softmin(xp, self.matrix, self.log_a + f / eps, eps, 0, r), eps)
        return ft, gt

    def mass_term(self, f: Any, g: Any, eps: float) -> Any:
        """eps <a x b, exp((f + g - C)/eps)> with f, g constant and a, b, x, y live: (B,)."""
        xp, stop = self.xp, self.stop
        log_a, log_b = log_weights(xp, self.a), log_weights(xp, self.b)
        y = self.x if self.symmetric else self.y
        u = log_a + stop(f) / eps
        v = log_b + stop(g) / eps
        c = evaluate_cost(self.cost, Vi(self.x), Vj(y))
        lse = -softmin(xp, c, v, eps, axis=1, ranges=self.ranges) / eps  # log sum_j exp(v_j - C_ij / eps)
        return eps * xp.sum(xp.exp(u + lse), axis=-1)

    def extrapolate(self, pots: tuple[Any, ...], eps: float, penalty: Penalty) -> tuple[Any, ...]:
        """One last update, differentiable with respect to the points and nothing else.

        f_i is recomputed from C(x_i, y_j) with x_i the user's (differentiable) array and
        y_j, g_j, log b_j held constant; g_j likewise from C(x_i, y_j) with y_j live.
        """
        xp, stop = self.xp, self.stop
        f = pots[0]
        g = f if self.symmetric else pots[1]
        ys = stop(self.x) if self.symmetric else stop(self.y)
        c_f = evaluate_cost(self.cost, Vi(self.x), Vj(ys))
        r = self.ranges
        f_new = penalty.update(xp, softmin(xp, c_f, stop(self.log_b + g / eps), eps, 1, r), eps)
        if self.symmetric:
            return (f_new,)
        c_g = evaluate_cost(self.cost, Vi(stop(self.x)), Vj(self.y))
        g_new = penalty.update(xp, softmin(xp, c_g, stop(self.log_a + f / eps), eps, 0, r), eps)
        return f_new, g_new


@dataclass
class LoopOutcome:
    """Potentials after the loop (cut from autodiff), per problem, and the iteration count."""

    potentials: list[tuple[Any, ...]]
    n_iter: int
    converged: bool | None


def _largest_change(xp: Any, old: list[tuple[Any, ...]], new: list[tuple[Any, ...]]) -> float:
    """Sup norm of the potentials' update (needs values: not under jax.jit)."""
    try:
        return _sup_change(xp, old, new)
    except TypeError as err:  # jax's ConcretizationTypeError
        raise TypeError(
            "tol= stops the loop on the potentials' values, which traced arrays do not have "
            "(jax.jit?): pass tol=None for GeomLoss's fixed schedule"
        ) from err


def _sup_change(xp: Any, old: list[tuple[Any, ...]], new: list[tuple[Any, ...]]) -> float:
    """The largest change of any potential, read as one number: one host synchronisation
    per iteration however many potentials (on dask, one scheduler round trip, not one per
    potential; on a GPU, one device-to-host copy)."""
    changes = [
        xp.max(xp.abs(n - o)) for po, pn in zip(old, new, strict=True) for o, n in zip(po, pn, strict=True)
    ]
    return float(xp.max(xp.stack(changes)))


def sinkhorn_loop(
    problems: Sequence[Problem],
    eps_list: list[float],
    penalty: Penalty,
    *,
    tol: float | None = None,
    max_iter: int | None = None,
    verbose: bool = False,
    progress: bool = False,
    initial: list[tuple[Any, ...]] | None = None,
    report: Progress | None = None,
) -> LoopOutcome:
    """Steps 1-3 of the module docstring for several problems at once (same schedule).

    ``initial`` potentials (from a coarser scale, multiscale Sinkhorn; from an earlier solve,
    ``sinkhorn(init=...)``) replace step 1. Each iteration is a step of ``report``, the
    :class:`~lazymat.progress.Progress` of a longer run the loop is part of (the levels of
    multiscale Sinkhorn), or of the loop's own (logger
    ``lazymat.solvers.sinkhorn_loop``; ``verbose``: every iteration at INFO; ``progress``: a
    progress bar), with its eps and, with ``tol``, the potentials' largest change.
    """
    if report is None:
        with Progress(logger, "sinkhorn", len(eps_list), progress=progress, verbose=verbose) as own:
            return sinkhorn_loop(
                problems, eps_list, penalty, tol=tol, max_iter=max_iter, initial=initial, report=own
            )
    xp = problems[0].xp
    materialize = lazymat.backend_for(problems[0].a).materialize  # each iteration's potentials
    eps0 = eps_list[0]
    pots = [t.sinkhorn_step(t.zeros(), eps0, penalty) for t in problems] if initial is None else initial

    def averaged_step(eps: float, w: float = 0.5) -> list[tuple[Any, ...]]:
        updates = [t.sinkhorn_step(p, eps, penalty) for t, p in zip(problems, pots, strict=True)]
        return [
            materialize(*((1 - w) * o + w * n for o, n in zip(p, u, strict=True)))
            for p, u in zip(pots, updates, strict=True)
        ]

    for eps in eps_list:
        pots = averaged_step(eps)
        report.step(eps=eps)
    n_iter = len(eps_list)
    converged: bool | None = None
    if tol is not None:
        converged = False
        limit = max_iter if max_iter is not None else n_iter + 1000
        first = None
        while n_iter < limit:
            new = averaged_step(eps_list[-1], RELAXATION)
            change = _largest_change(xp, pots, new)
            pots = new
            n_iter += 1
            first = first or change
            extra = n_iter - len(eps_list)  # iterations at the final eps, the first one measured
            needed = geometric_total(extra - 1, first, change, tol, limit - len(eps_list))
            total = None if needed is None else report.done + 1 + needed - (extra - 1)
            report.step(eps=eps_list[-1], change=change, total=total)
            if change < tol:
                converged = True
                break
    return LoopOutcome(potentials=pots, n_iter=n_iter, converged=converged)
