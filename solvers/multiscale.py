r"""Multiscale Sinkhorn: epsilon-scaling on cluster centroids, then kernel truncation.

Bruteforce Sinkhorn costs N*M per iteration. While eps is large, the transport plan is
blurry at the scale eps**(1/p) and the clouds can be replaced by grid clusters of that
size: the loop of :mod:`.sinkhorn_loop` runs on the clusters' centroids with summed
weights. When eps falls below s**p (s the cluster scale; GeomLoss's jump rule, step for
step) the loop moves to the next finer level:

1. kernel truncation (:func:`~.multiscale_clusters.kept_pairs`): from the level's
   potentials, keep the cluster pairs (I, J) with f_I + g_J - C_low(I, J) > -truncate*eps
   (C_low: the smallest cost between the two clusters); the plan elsewhere is below
   exp(-truncate) relative to its scale, and is dropped;
2. extrapolation: each potential of the finer level is one soft-min (the Sinkhorn update)
   over the coarse points of the kept pairs, at the same eps;
3. the finer level iterates with reductions restricted to the kept block pairs (a
   :class:`~lazymat.block_sparse.BlockSparsity` over points sorted by cluster).

Levels are nested grids of voxel sizes s, s/2, s/4, ... (:func:`level_scales`), the last
one the points themselves; with two (GeomLoss's case) the cost is about
N*M / (number of clusters) plus one dense N-by-clusters extrapolation. The last,
differentiable extrapolation (:meth:`~.sinkhorn_loop.Transport.extrapolate`) runs on the
points with the truncated structure, so gradients follow the envelope theorem as in the
dense solver. The points are sorted by cluster inside; results come back in the
caller's order (the sort is a differentiable gather).

Without ``tol``, :data:`POLISH` more iterations at the final eps follow the annealing
(:func:`_polish`), also when no level iterates (blur above the cluster scale): the annealing
alone leaves the potentials a few percent off the fixed point where the last levels jumped
late or the clouds are far apart, and GeomLoss's multiscale (which stops there) is then
closer to the exact value by luck of the truncation; with them ours is closer on every
configuration of tests/test_geomloss_multiscale.py.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import partial
from typing import Any

import array_api_compat
import numpy as np

import lazymat
from lazymat import Vi, Vj
from lazymat.block_sparse import grid_cluster
from lazymat.progress import Progress, visible

from .costs import Cost, evaluate_cost
from .measures import Measures
from .multiscale_clusters import (
    CloudHierarchy,
    Level,
    block_structure,
    candidate_pairs,
    cloud_hierarchy,
    kept_pairs,
    pair_chunks,
)
from .penalties import Penalty
from .sinkhorn_loop import LoopOutcome, Transport, sinkhorn_loop, softmin

#: the default coarsest scale gives about this many clusters in a cube (GeomLoss's rule) ...
DEFAULT_CLUSTERS = 2000
#: ... or fewer, so that they hold this many points on average (small clouds)
POINTS_PER_DEFAULT_CLUSTER = 16
#: truncation threshold (GeomLoss's default): pairs below exp(-5) ~ 0.7% of the scale go
DEFAULT_TRUNCATE = 5.0
#: an automatic finer level is added while clusters hold this many points on average
MIN_POINTS_PER_CLUSTER = 8
#: Sinkhorn iterations at the final eps after the annealing (:func:`_polish`; not with ``tol``)
POLISH = 20
#: refinement levels stop before the truncation is predicted to keep more block pairs (memory)
MAX_BLOCK_PAIRS = 2e7

logger = logging.getLogger(__name__)


def _info(message: str) -> None:
    """A ``verbose`` record: INFO on the module's logger, shown even if logging is not configured."""
    with visible(logger):
        logger.info(message)


def positive_scalar(name: str, v: Any, zero: bool = False) -> float | None:
    """``v`` as a float: a Python number, or a 0-d (or one-element) real array or tensor of
    any library (GeomLoss's examples pass ``cluster_scale`` as a 0-d torch tensor); None stays None.
    ``zero``: 0 is allowed too."""
    if v is None:
        return None
    number: float | None = None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        number = float(v)
    elif (
        hasattr(v, "shape")
        and math.prod(v.shape) == 1
        and not any(kind in str(getattr(v, "dtype", "complex")) for kind in ("complex", "bool"))
    ):
        try:
            number = float(_detached(v).reshape(()))
        except TypeError as err:  # jax's ConcretizationTypeError
            raise TypeError(f"{name} must have a value before the computation (jax.jit?)") from err
    if number is None or not math.isfinite(number) or number < 0 or (number == 0 and not zero):
        kind = "non-negative" if zero else "positive"
        raise ValueError(
            f"{name} must be a {kind} finite number (or a 0-d real array / tensor) or None, got {v!r}"
        )
    return number


def cluster_scale_value(v: Any) -> float | None:
    """The ``cluster_scale`` option as a float (None: the default). 0 is allowed, as in GeomLoss
    (its cluster example on a CPU passes the spread of one-point clusters, 0): no cluster
    level then iterates before the last eps, and the solve runs on the points (the dense
    result; with labels, GeomLoss iterates on the labelled clusters, each one point there)."""
    return positive_scalar("cluster_scale", v, zero=True)


def host_labels(side: str, labels: Any, points: np.ndarray) -> np.ndarray | None:
    """The cluster labels of cloud ``side`` as a numpy int array (N,): any library's
    integer array of shape (N,) or (N, 1), or None."""
    if labels is None:
        return None
    n = points.shape[0]
    if not hasattr(labels, "shape") or tuple(labels.shape) not in ((n,), (n, 1)):
        raise ValueError(
            f"the cluster labels of {side} must be an integer array of shape ({n},) or ({n}, 1), one "
            f"per point, got {type(labels).__name__} of shape {getattr(labels, 'shape', None)}"
        )
    try:
        host = np.asarray(lazymat.backend_for(labels).to_numpy(labels))
    except TypeError:  # an array of a library without a lazymat backend: numpy's view of it
        host = np.asarray(labels)
    if not np.issubdtype(host.dtype, np.integer):
        raise TypeError(f"the cluster labels of {side} must be integers, got dtype {labels.dtype}")
    return host.reshape(n).astype(np.int64)


def _detached(v: Any) -> Any:
    try:
        return lazymat.backend_for(v).stop_gradient(v)
    except TypeError:  # numpy scalars: no backend, and no gradient either
        return v


def check_multiscale_options(
    cluster_scale: Any, truncate: Any, cluster_levels: int | None, cost: Cost | None
) -> None:
    """Clear errors for options that define no multiscale scheme."""
    cluster_scale_value(cluster_scale)
    positive_scalar("truncate", truncate)
    if cluster_levels is not None and (
        not isinstance(cluster_levels, int) or isinstance(cluster_levels, bool) or cluster_levels < 1
    ):
        raise ValueError(f"cluster_levels must be a positive integer or None, got {cluster_levels!r}")
    if cost is not None:
        raise ValueError(
            "multiscale Sinkhorn bounds the cost between clusters with |x - y|^p / p (p = 1 or 2), "
            "so it does not take a custom cost=; use multiscale=False (backend='online') for it"
        )


def default_cluster_scale(diameter: float, d: int, n: int) -> float:
    """The voxel size that cuts a cube of diagonal ``diameter`` into about
    min(DEFAULT_CLUSTERS, n / POINTS_PER_DEFAULT_CLUSTER) cells (GeomLoss: always 2000)."""
    clusters = max(1.0, min(DEFAULT_CLUSTERS, n / POINTS_PER_DEFAULT_CLUSTER))
    return diameter / (math.sqrt(d) * clusters ** (1 / d))


def jump_index(eps_list: list[float], scale: float, p: float) -> int:
    """The iteration after which the loop leaves clusters of size ``scale`` (GeomLoss's rule):
    the one before the first eps (from the third on) below scale**p, else the last."""
    for k in range(2, len(eps_list)):
        if eps_list[k] < scale**p:
            return k - 1
    return len(eps_list) - 1


def level_scales(
    x: np.ndarray,
    y: np.ndarray,
    eps_list: list[float],
    p: float,
    coarsest: float,
    levels: int | None,
    truncate: float | None,
) -> tuple[list[float], list[int]]:
    """Voxel sizes coarsest, coarsest/2, ... of the cluster levels, and their jump iterations.

    A level iterates if the loop spends at least one iteration on it and on the next
    one: its jump (GeomLoss's rule, :func:`jump_index`) comes after the previous level's;
    the coarsest level's must come before the last eps, a finer level's is capped there
    (the last eps belongs to the points).
    ``levels`` caps their number; None adds finer levels while clusters keep at least
    MIN_POINTS_PER_CLUSTER points on average (below that, a level saves little), then
    *refinement* levels: no iteration (their jump is the previous one), only a finer
    truncation test, so that the last level's blocks are small next to the kernel's
    width (:func:`_predicted_pairs` keeps their number of block pairs bounded).
    """
    last = len(eps_list) - 1
    scales: list[float] = []
    jumps: list[int] = []
    if last < 2:  # no eps for a level before the last one
        return scales, jumps
    s = coarsest
    n = max(x.shape[0], y.shape[0])
    counted: dict[float, list[int]] = {}

    def clusters(s: float) -> list[int]:  # clusters of x and of y at voxel size s, once per s
        return counted.setdefault(s, [int(grid_cluster(v, s).max()) + 1 for v in (x, y)])

    while levels is None or len(scales) < levels:
        jump = jump_index(eps_list, s, p)
        if not scales and jump >= last:  # the loop never goes below the cluster scale: dense
            break
        # a finer level may iterate until its jump, but the last eps is the points' own
        jump = min(jump, last - 1)
        few_points = scales and levels is None and max(clusters(s)) * MIN_POINTS_PER_CLUSTER > n
        if few_points or (jumps and jump == jumps[-1] == last - 1):
            break
        if not jumps or jump > jumps[-1]:
            scales.append(s)
            jumps.append(jump)
        s /= 2
    if levels is not None or truncate is None or not scales:
        return scales, jumps
    eps = eps_list[jumps[-1] + 1]  # the temperature the finest blocks are tested for
    while True:
        s = scales[-1] / 2
        counts = clusters(s)
        if max(counts) * MIN_POINTS_PER_CLUSTER > n:
            break
        if _predicted_pairs(x, y, counts, s, eps, truncate, p) > MAX_BLOCK_PAIRS:
            break
        scales.append(s)
        jumps.append(jumps[-1])
    return scales, jumps


def _predicted_pairs(
    x: np.ndarray, y: np.ndarray, counts: list[int], s: float, eps: float, truncate: float, p: float
) -> float:
    """About how many block pairs of voxel size ``s`` the truncation keeps at ``eps``: the
    clusters' pairs times the fraction of the cloud's box within the kernel's reach, which
    is the cost's range sqrt(2 truncate eps) (p = 2) or truncate eps (p = 1), plus two
    voxels' half-diagonals."""
    d = x.shape[1]
    reach = (math.sqrt(2 * truncate * eps) if p == 2 else truncate * eps) + s * math.sqrt(d)
    ball = math.pi ** (d / 2) / math.gamma(d / 2 + 1) * reach**d
    box = min(float(np.prod(np.ptp(v, axis=0) + s)) for v in (x, y))
    return counts[0] * counts[1] * min(1.0, ball / box)


@dataclass
class MultiscaleOutcome:
    """The fine-level problems (points sorted, truncated kernels), the loop's potentials
    on them, the sorted measures and the sorting permutations (x side, y side)."""

    problems: list[Transport]
    outcome: LoopOutcome
    measures: Measures
    perm: tuple[Any, Any]
    scales: list[float]


#: the clouds (0: x, 1: y) on the i and j sides of OT(a, b), OT(a, a), OT(b, b)
_SIDES = ((0, 1), (0, 0), (1, 1))


def _transposed(kept: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j) sorted by i, then j, as pairs (j, i) sorted by j, then i."""
    i, j = kept
    order = np.argsort(j, kind="stable")
    return j[order], i[order]


class _Levels:
    """The clouds' hierarchies as arrays of the caller's library, level by level."""

    def __init__(self, m: Measures, hx: CloudHierarchy, hy: CloudHierarchy, dtype: Any) -> None:
        backend = lazymat.backend_for(m.x)
        xp, dev = m.xp, array_api_compat.device(m.x)
        self.hx, self.hy = hx, hy

        def arr(v: np.ndarray) -> Any:
            return xp.expand_dims(backend.from_numpy(np.ascontiguousarray(v, dtype=dtype), dev), axis=0)

        index_type = np.int32 if max(m.x.shape[1], m.y.shape[1]) < 2**31 else np.int64
        px = backend.from_numpy(hx.perm.astype(index_type), dev)
        py = backend.from_numpy(hy.perm.astype(index_type), dev)
        self.perm = (px, py)
        self.sorted = Measures(
            x=xp.take(m.x, px, axis=1),
            y=xp.take(m.y, py, axis=1),
            a=xp.take(m.a, px, axis=1),
            b=xp.take(m.b, py, axis=1),
            batched=m.batched,
            xp=xp,
        )
        fine = len(hx.levels) - 1
        self.arrays = [
            (arr(lx.points), arr(ly.points), arr(lx.weights), arr(ly.weights))
            for lx, ly in zip(hx.levels[:fine], hy.levels[:fine], strict=True)
        ]
        s = self.sorted
        self.arrays.append((s.x, s.y, s.a, s.b))


def multiscale_sinkhorn_loop(
    m: Measures,
    cost: Cost,
    penalty: Penalty,
    p: float,
    eps_list: list[float],
    diameter: float,
    *,
    debias: bool,
    truncate: float | None,
    cluster_scale: float | None,
    cluster_levels: int | None,
    tol: float | None,
    max_iter: int | None,
    verbose: bool,
    labels: tuple[np.ndarray | None, np.ndarray | None] | None = None,
    progress: bool = False,
) -> MultiscaleOutcome:
    """The coarse-to-fine loop of the module docstring, up to (not including) the last extrapolation.

    ``labels``: the user's cluster labels of x and y (or None on a side: grid clusters), the
    coarsest clusters of :func:`~.multiscale_clusters.cloud_hierarchy`.
    """
    if m.x.shape[0] != 1:
        raise ValueError(
            "multiscale Sinkhorn sorts one pair of clouds by clusters: pass clouds (N, D) and (M, D), "
            f"not batches of {m.x.shape[0]} (use a loop, or multiscale=False)"
        )
    run = _Run(m, cost, penalty, p, eps_list, debias, truncate, tol, max_iter, verbose)
    run.build_levels(diameter, cluster_scale, cluster_levels, labels)
    # one run's progress (iterations, eps, time left) over every level's loops
    with Progress(logger, "multiscale sinkhorn", len(eps_list), progress=progress, verbose=verbose) as report:
        return run.solve(report)


class _Run:
    """One multiscale solve, level after level (the steps of :func:`multiscale_sinkhorn_loop`).

    Its state: the potentials of the current level's problems (OT(a, b), and OT(a, a),
    OT(b, b) if debiased) and, per problem, the cluster pairs its kernel keeps, those kept
    at the jump to the level (re-tested as eps falls), and their block-sparse ranges.
    """

    def __init__(
        self,
        m: Measures,
        cost: Cost,
        penalty: Penalty,
        p: float,
        eps_list: list[float],
        debias: bool,
        truncate: float | None,
        tol: float | None,
        max_iter: int | None,
        verbose: bool,
    ) -> None:
        self.m, self.cost, self.penalty, self.p, self.eps_list = m, cost, penalty, p, eps_list
        self.debias, self.tol, self.max_iter, self.verbose = debias, tol, max_iter, verbose
        self.truncate_arg = truncate
        self.truncate = positive_scalar("truncate", truncate)
        self.backend = lazymat.backend_for(m.x)
        self.pots: list[tuple[Any, ...]] | None = None
        self.ranges: list[Any] = [None, None, None]
        self.kept: list[Any] = [None, None, None]
        self.jumped: list[Any] = [None, None, None]  # the kept pairs at the jump to the level
        self.n_iter = 0

    def build_levels(
        self,
        diameter: float,
        cluster_scale: float | None,
        cluster_levels: int | None,
        labels: tuple[np.ndarray | None, np.ndarray | None] | None,
    ) -> None:
        """The clouds' cluster hierarchies (on the host), their scales and jumps, and their
        arrays in the caller's library."""
        m, backend = self.m, self.backend
        stop = backend.stop_gradient
        x_native = np.asarray(backend.to_numpy(stop(m.x[0, ...])))
        x, y, a, b = (
            np.asarray(backend.to_numpy(stop(v[0, ...])), dtype=np.float64) for v in (m.x, m.y, m.a, m.b)
        )
        coarsest = cluster_scale_value(cluster_scale)
        if coarsest is None:
            coarsest = default_cluster_scale(diameter, x.shape[1], max(x.shape[0], y.shape[0]))
        self.scales, self.jumps = level_scales(
            x, y, self.eps_list, self.p, coarsest, cluster_levels, self.truncate_arg
        )
        label_x, label_y = (
            host_labels(n, v, w) for n, v, w in zip("xy", labels or (None, None), (x, y), strict=True)
        )
        hx, hy = cloud_hierarchy(x, a, self.scales, label_x), cloud_hierarchy(y, b, self.scales, label_y)
        self.clouds = (hx, hy)
        self.lv = _Levels(m, hx, hy, x_native.dtype)
        if self.verbose:
            sizes = ", ".join(f"{lx.size}x{ly.size}" for lx, ly in zip(hx.levels, hy.levels, strict=True))
            scales, jumps = self.scales, self.jumps
            _info(f"multiscale Sinkhorn: scales {scales}, points per level {sizes}, jumps after {jumps}")

    def to_np(self, v: Any) -> np.ndarray:
        return np.asarray(self.backend.to_numpy(v[0, ...]), dtype=np.float64)

    def problems(self, k: int) -> list[Transport]:
        """The problems of level ``k`` with the current truncated kernels."""
        return _problems(self.lv.arrays[k], self.ranges, self.cost, self.debias)

    def iterate(
        self, problems: list[Transport], eps_list: list[float], tol: float | None, report: Progress
    ) -> LoopOutcome:
        """The Sinkhorn loop on ``problems`` from the current potentials, within ``max_iter``."""
        max_iter = None if self.max_iter is None else max(1, self.max_iter - self.n_iter)
        out = sinkhorn_loop(
            problems, eps_list, self.penalty, tol=tol, max_iter=max_iter, initial=self.pots, report=report
        )
        self.n_iter += out.n_iter
        self.pots = out.potentials
        return out

    def retruncate(self, k: int, eps: float, only_if_gained: bool = False) -> bool:
        """Re-test level ``k``'s pairs from those kept at its jump, with its potentials, at
        ``eps`` (the kernel may widen again as the potentials move); True if a problem
        gained pairs. ``only_if_gained``: change only such problems."""
        assert self.pots is not None
        clouds, gained = self.clouds, False
        for s, (u, v) in enumerate(_SIDES[: len(self.pots)]):
            f, g = (self.to_np(w) for w in (self.pots[s] * 2)[:2])
            here = clouds[u].levels[k], clouds[v].levels[k]
            parents = clouds[u].levels[k - 1], clouds[v].levels[k - 1]
            tested = _shrink(self.jumped[s], f, g, here, parents, eps, self.truncate, self.p)
            if _same_pairs(tested, self.kept[s]):
                continue
            grows = _gains(tested, self.kept[s], parents[1].size)
            gained = gained or grows
            if grows or not only_if_gained:
                self.kept[s], self.ranges[s] = tested, block_structure(tested, *here)
        if self.verbose:
            _info(f"level {k} for eps = {eps:.3e}: keeps {self.ranges[0].density():.2%}")
        return gained

    def solve(self, report: Progress) -> MultiscaleOutcome:
        """Every level's loop, each followed by the jump to the next; the last level finishes."""
        start, last = 0, len(self.eps_list) - 1
        for k in range(len(self.lv.arrays)):
            fine = k == len(self.scales)
            end = last if fine else self.jumps[k]
            # level 0: no truncation yet, one call; finer levels: one eps at a time, re-truncated;
            # refinement levels (end < start): none
            steps = [(start, end)] if k == 0 else [(i, i) for i in range(start, end + 1)]
            problems = self.problems(k)
            for first, final in steps:
                out = self.iterate(
                    problems,
                    self.eps_list[first : final + 1],
                    self.tol if fine and final == last else None,
                    report,
                )
                if fine and final == last:
                    return self.finish(k, out, report)
                if k > 0 and final < end:
                    self.retruncate(k, self.eps_list[final + 1])
                    problems = self.problems(k)
            self.jump(k, problems, end)
            start = end + 1
        raise AssertionError("unreachable: the last level returns")

    def finish(self, k: int, out: LoopOutcome, report: Progress) -> MultiscaleOutcome:
        """The end of the annealing on the points: converged (``tol``), the kept pairs must
        hold at the converged potentials too; else :data:`POLISH` more iterations."""
        eps = self.eps_list[-1]
        while out.converged and k > 0 and self.retruncate(k, eps, only_if_gained=True):
            out = self.iterate(self.problems(k), self.eps_list[-1:], self.tol, report)
        problems = self.problems(k)
        assert self.pots is not None
        if self.tol is None:
            polish = POLISH if self.max_iter is None else max(0, min(POLISH, self.max_iter - self.n_iter))
            self.pots = _polish(problems, self.pots, eps, self.penalty, polish)
            self.n_iter += polish
        result = LoopOutcome(self.pots, self.n_iter, out.converged)
        return MultiscaleOutcome(problems, result, self.lv.sorted, self.lv.perm, self.scales)

    def jump(self, k: int, problems: list[Transport], end: int) -> None:
        """From level ``k`` to ``k + 1`` after eps_list[end]: truncate each problem's kernel at
        the next eps, and extrapolate its potentials to the finer points."""
        assert self.pots is not None
        clouds, xp = self.clouds, self.m.xp
        eps, eps_next = self.eps_list[end], self.eps_list[end + 1]
        nxt = self.lv.arrays[k + 1]
        moved_pots = []
        for s, (t, (u, v)) in enumerate(zip(problems, _SIDES, strict=False)):
            rows, cols = clouds[u].levels[k], clouds[v].levels[k]
            finer = clouds[u].levels[k + 1], clouds[v].levels[k + 1]
            f, g = (self.to_np(w) for w in (self.pots[s] * 2)[:2])
            if k > 0:  # fewer parents, fewer candidates: the parents' test at this eps first
                parents = clouds[u].levels[k - 1], clouds[v].levels[k - 1]
                self.kept[s] = _shrink(
                    self.jumped[s], f, g, (rows, cols), parents, eps_next, self.truncate, self.p
                )
            candidates = partial(candidate_pairs, self.kept[s], rows, cols)
            kept = kept_pairs(rows, cols, f, g, candidates, eps_next, self.truncate, self.p)
            self.kept[s] = self.jumped[s] = kept
            self.ranges[s] = block_structure(kept, *finer)
            moved = _extrapolate(xp, t, self.pots[s], kept, (nxt[u], nxt[v]), finer, (rows, cols), eps)
            moved_pots.append(tuple(self.penalty.update(xp, w, eps) for w in moved))
            if self.verbose:
                share = self.ranges[s].density()
                _info(f"level {k} -> {k + 1} at eps = {eps:.3e}: problem {s} keeps {share:.2%}")
        self.pots = moved_pots


def _polish(
    problems: list[Transport], pots: list[tuple[Any, ...]], eps: float, penalty: Penalty, count: int
) -> list[tuple[Any, ...]]:
    """``count`` Sinkhorn iterations at ``eps`` after the annealing: alternating for OT(a, b)
    (f from g, then g from the new f: twice the rate of the parallel update, four times
    that of the averaged one); a third as many, averaged, for the self-problems (their
    averaged update contracts by 1/2 at least)."""
    out = []
    for t, q in zip(problems, pots, strict=True):
        xp = t.xp
        for _ in range(count // 3 if t.symmetric else count):
            if t.symmetric:
                q = tuple(0.5 * (o + n) for o, n in zip(q, t.sinkhorn_step(q, eps, penalty), strict=True))
                continue
            f = penalty.update(xp, softmin(xp, t.matrix, t.log_b + q[1] / eps, eps, 1, t.ranges), eps)
            g = penalty.update(xp, softmin(xp, t.matrix, t.log_a + f / eps, eps, 0, t.ranges), eps)
            q = (f, g)
        out.append(q)
    return out


def _problems(arrays: tuple[Any, ...], ranges: list[Any], cost: Cost, debias: bool) -> list[Transport]:
    """OT(a, b) (and OT(a, a), OT(b, b) if debiased) on one level, with its truncated kernels."""
    x, y, a, b = arrays
    problems = [Transport(x, y, a, b, False, cost, ranges[0])]
    if debias:
        problems += [
            Transport(x, x, a, a, True, cost, ranges[1]),
            Transport(y, y, b, b, True, cost, ranges[2]),
        ]
    return problems


def _same_pairs(u: tuple[np.ndarray, np.ndarray], v: tuple[np.ndarray, np.ndarray]) -> bool:
    return u[0].shape == v[0].shape and bool(np.array_equal(u[0], v[0]) and np.array_equal(u[1], v[1]))


def _gains(new: tuple[np.ndarray, np.ndarray], old: tuple[np.ndarray, np.ndarray], n_cols: int) -> bool:
    """Whether ``new`` holds a pair that ``old`` does not."""
    return not bool(np.isin(new[0] * n_cols + new[1], old[0] * n_cols + old[1]).all())


def _shrink(
    kept: tuple[np.ndarray, np.ndarray],
    f: np.ndarray,
    g: np.ndarray,
    levels: tuple[Level, Level],
    parents: tuple[Level, Level],
    eps: float,
    truncate: float | None,
    p: float,
) -> tuple[np.ndarray, np.ndarray]:
    """A level's kept parent pairs, re-tested at a smaller eps from the level's own potentials.

    The test of :func:`~.multiscale_clusters.kept_pairs` on the parent clusters, with
    their points' weighted mean potentials (the potentials at the weighted centroids, to
    first order; an unweighted mean is off by |grad f| times the centroids' distance, many
    eps where weights vary within a cluster): the kernel keeps up with the annealing
    instead of staying as wide as at the jump, and a jump to the next level starts from
    fewer candidates.
    """
    if truncate is None:
        return kept
    rows, cols = parents
    f_mean, g_mean = (_weighted_means(v, level) for v, level in zip((f, g), levels, strict=True))
    return kept_pairs(rows, cols, f_mean, g_mean, partial(pair_chunks, kept), eps, truncate, p)


def _weighted_means(v: np.ndarray, level: Level) -> np.ndarray:
    """The means of ``v`` over each parent's points of ``level``, weighted by their weights
    (plain means for parents of zero weight)."""
    starts = level.parents
    assert starts is not None
    mass = np.add.reduceat(level.weights, starts[:-1])
    weighted = np.add.reduceat(level.weights * v, starts[:-1]) / np.where(mass > 0, mass, 1.0)
    plain = np.add.reduceat(v, starts[:-1]) / np.diff(starts)
    return np.where(mass > 0, weighted, plain)


def _extrapolate(
    xp: Any,
    t: Transport,
    coarse: tuple[Any, ...],
    kept: tuple[np.ndarray, np.ndarray],
    finer: tuple[Any, Any],
    finer_levels: tuple[Level, Level],
    levels: tuple[Level, Level],
    eps: float,
) -> tuple[Any, ...]:
    """The soft-mins of the finer level's Sinkhorn update (cut from autodiff; the penalty's
    update is the caller's) from the ``coarse`` potentials of problem ``t``, over the
    coarse points of the kept pairs only. ``finer`` holds the finer points on the x and y
    sides, ``finer_levels`` and ``levels`` the finer and the coarse levels (x side, y side)."""
    stop = t.stop
    rows, cols = levels
    next_rows, next_cols = finer_levels
    f = coarse[0]
    g = f if t.symmetric else coarse[1]
    x_next, y_next = (stop(v) for v in finer)
    y_coarse = stop(t.x if t.symmetric else t.y)
    over_y = block_structure(kept, next_rows, None, cols.size)
    c_f = evaluate_cost(t.cost, Vi(x_next), Vj(y_coarse))
    f_new = softmin(xp, c_f, t.log_b + g / eps, eps, 1, over_y)
    if t.symmetric:
        return (f_new,)
    kept_t = _transposed(kept)
    over_x = block_structure(kept_t, next_cols, None, rows.size)
    c_g = evaluate_cost(t.cost, Vi(y_next), Vj(stop(t.x)))
    g_new = softmin(xp, c_g, t.log_a + f / eps, eps, 1, over_x)
    return f_new, g_new
