"""Block-sparse reductions on a clustered problem against the dense masked float64 result.

The conformance suite's block-sparsity (``SPARSITY``) is a handful of hand-made blocks; an
engine's chunking of rows and its intervals of columns also need a structure with many
blocks of uneven sizes, many merged and unmerged column intervals, blocks larger than a
tile of rows or a j-block, and rows that visit nothing. :func:`clustered_problem` builds
one the way multiscale solvers do (grid clusters, sorted points, a cluster pair kept when
its centroids are close; an isolated cluster of rows visits no column), and
:func:`check_clustered` runs sum (both axes), log-sum-exp, min_argmin and kmin_argkmin
on an engine and compares them with numpy on the dense masked (N, M) matrices, in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import lazymat as lm
from lazymat.block_sparse import BlockSparsity, cluster_centroids, grid_cluster, mask_from_cost, sort_clusters

from .dense import RTOL, close

__all__ = ["ClusteredProblem", "check_clustered", "clustered_problem"]

#: Gaussian scale of the kernels exp(-|x - y|^2 / SCALE)
SCALE = 0.1
K = 4
#: tolerances of :func:`lazymat.testing.dense.close`, float32 to 2e-5 (long masked sums)
_RTOL = {**RTOL, "float32": 2e-5}


@dataclass(frozen=True)
class ClusteredProblem:
    """Points sorted by cluster, weights, the block-sparsity and its dense (N, M) mask."""

    x: np.ndarray
    y: np.ndarray
    b: np.ndarray  # (M, 2) weights of the j side
    a: np.ndarray  # (N, 2) weights of the i side (reductions over i)
    ranges: BlockSparsity
    mask: np.ndarray


def clustered_problem(
    n: int, m: int, seed: int = 0, voxel: float = 0.2, radius: float = 0.3, isolated: int = 24
) -> ClusteredProblem:
    """Uniform points in the unit cube, plus ``isolated`` rows far away (they visit nothing)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 3))
    x[:isolated] += 3.0
    y = rng.random((m, 3))
    perm_x, bounds_x = sort_clusters(grid_cluster(x, voxel))
    perm_y, bounds_y = sort_clusters(grid_cluster(y, voxel))
    x, y = x[perm_x], y[perm_y]
    cx, _ = cluster_centroids(x, bounds_x)
    cy, _ = cluster_centroids(y, bounds_y)
    cost = ((cx[:, None, :] - cy[None, :, :]) ** 2).sum(-1)
    ranges = BlockSparsity.from_mask(bounds_x, bounds_y, mask_from_cost(cost, radius**2))
    b = rng.standard_normal((m, 2))
    a = rng.standard_normal((n, 2))
    return ClusteredProblem(x, y, b, a, ranges, ranges.dense_mask())


def _close(got: Any, ref: np.ndarray, dtype: str, what: str) -> None:
    close(got, ref, dtype, what, _RTOL)


def check_clustered(
    engine: str,
    problem: ClusteredProblem,
    dtype: str,
    to_backend: Callable[[np.ndarray], Any] = np.asarray,
    to_numpy: Callable[[Any], np.ndarray] = np.asarray,
) -> None:
    """``engine``'s block-sparse reductions of ``problem`` in ``dtype`` vs dense masked numpy."""
    p = problem
    x, y, b, a = (to_backend(v.astype(dtype)) for v in (p.x, p.y, p.b, p.a))
    d2 = ((p.x[:, None, :] - p.y[None, :, :]) ** 2).sum(-1)
    gauss = np.where(p.mask, np.exp(-d2 / SCALE), 0.0)
    dist = lm.Vi(x).sqdist(lm.Vj(y))
    what = f"{engine} block-sparse ({dtype})"

    got = (-dist / SCALE).exp() * lm.Vj(b)
    _close(to_numpy(got.sum(axis=1, engine=engine, ranges=p.ranges)), gauss @ p.b, dtype, f"{what} K @ b")
    got = (-dist / SCALE).exp() * lm.Vi(a)
    _close(to_numpy(got.sum(axis=0, engine=engine, ranges=p.ranges)), gauss.T @ p.a, dtype, f"{what} K.T @ a")

    with np.errstate(divide="ignore"):
        ref_lse = np.log(gauss.sum(1, keepdims=True))  # -inf on rows that visit nothing
    got_lse = (-dist / SCALE).logsumexp(axis=1, engine=engine, ranges=p.ranges)
    _close(to_numpy(got_lse), ref_lse, dtype, f"{what} logsumexp")

    masked = np.where(p.mask, d2, np.inf)
    order = np.argsort(masked, axis=1, kind="stable")[:, :K]
    ref_k = np.take_along_axis(masked, order, 1)
    ref_idx = np.where(np.isinf(ref_k), -1, order)  # padding past the visited columns
    value, index = dist.min_argmin(axis=1, engine=engine, ranges=p.ranges)
    kval, kidx = dist.Kmin_argKmin(K, axis=1, engine=engine, ranges=p.ranges)
    for label, v, i, rv, ri in (
        ("min_argmin", value, index, ref_k[:, :1], ref_idx[:, :1]),
        ("kmin_argkmin", kval, kidx, ref_k, ref_idx),
    ):
        v, i = to_numpy(v), to_numpy(i)
        _close(v, rv, dtype, f"{what} {label} values")
        np.testing.assert_array_equal(i < 0, ri < 0, err_msg=f"{what} {label}: padding")
        if dtype == "float64":
            np.testing.assert_array_equal(i, ri, err_msg=f"{what} {label} indices")
        else:  # float32 may reorder near-ties: the picked entries must be the smallest ones
            picked = np.where(i < 0, np.inf, np.take_along_axis(masked, np.maximum(i, 0), 1))
            _close(picked, rv, dtype, f"{what} {label} picked entries")


def check_clustered_batches(engine: str, problem: ClusteredProblem) -> None:
    """One structure for every batch element: (2, N, 3) points (x and 0.9 x), each element
    against its own dense masked Gaussian kernel product in float64."""
    x = np.stack([problem.x, 0.9 * problem.x])
    K = (-lm.Vi(x).sqdist(lm.Vj(problem.y)) / 0.1).exp() * lm.Vj(problem.b)
    got = K.sum(axis=1, engine=engine, ranges=problem.ranges)
    for k in range(2):
        d2 = ((x[k][:, None, :] - problem.y[None, :, :]) ** 2).sum(-1)
        ref = np.where(problem.mask, np.exp(-d2 / 0.1), 0.0) @ problem.b
        close(got[k], ref, "float64", f"batch element {k}")
