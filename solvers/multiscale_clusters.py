"""Nested grid clusterings of a point cloud and the kernel truncation between two of them.

Multiscale Sinkhorn (:mod:`.multiscale`) solves the transport problem on coarse
representations of the clouds first. This module builds them on the host, with numpy,
once per problem:

- :func:`cloud_hierarchy` clusters a cloud on grids of voxel sizes s_0 > s_1 > ... with
  ratios powers of 2 and one origin, so that every cell of level k + 1 lies in one cell
  of level k; sorting the points by their cells at every level, coarsest first, makes
  each cluster of every level a contiguous run of points, and the clusters of level
  k + 1 contiguous runs inside their parent of level k. Level L (the last) is the
  points themselves.
- :func:`kept_pairs` is the kernel truncation: the pairs (I, J) of clusters whose plan
  may be non-negligible at temperature eps, from potentials f_I, g_J at the centroids:
  h_IJ = f_I + g_J - C(X_I, Y_J) > -truncate * eps (GeomLoss's test), corrected for the
  clusters' radii r_I, r_J, since h varies over the block I x J. For p = 1, f and g are
  1-Lipschitz (soft-mins of distances) and C too: h grows by at most 2 (r_I + r_J). For
  p = 2, the gradient of h(x, y) = f(x) + g(y) - |x - y|^2 / 2 in x is y - T(x) (T the
  transport map), which near the optimum is about sqrt(-2 h) in size (h is about
  -|y - T(x)|^2 / 2): h grows by about (r_I + r_J) sqrt(-2 h_IJ) over the block.
- :func:`block_structure` turns kept pairs into the :class:`~lazymat.block_sparse.BlockSparsity`
  of the next level (its points grouped by their parent cluster).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from lazymat.block_sparse import BlockSparsity, cluster_centroids, grid_cluster


@dataclass(frozen=True)
class Level:
    """One representation of a cloud: ``size`` points (centroids), their weights and radii.

    ``starts`` (size + 1): the point runs of the sorted cloud that each cluster holds;
    ``parents`` (size of the coarser level + 1): the runs of this level's clusters that
    each coarser cluster holds (None for the coarsest level).
    """

    points: np.ndarray
    weights: np.ndarray
    radii: np.ndarray
    starts: np.ndarray
    parents: np.ndarray | None

    @property
    def size(self) -> int:
        return int(self.points.shape[0])


@dataclass(frozen=True)
class CloudHierarchy:
    """``perm`` sorts the cloud by nested clusters; ``levels`` coarsest first, the points last."""

    perm: np.ndarray
    levels: list[Level]


def cloud_hierarchy(
    x: np.ndarray, w: np.ndarray, scales: list[float], labels: np.ndarray | None = None
) -> CloudHierarchy:
    """Nested grid clusters of x (N, D) with weights w (N,), voxel sizes ``scales`` (decreasing,
    ratios powers of 2), then the points; see the module docstring.

    With the user's cluster ``labels`` (N,) (GeomLoss's six-argument call), the coarsest
    level is one cluster per label (``scales[0]`` then only sets when the loop leaves it),
    and level k > 0 splits each label's cluster by the grid cells of ``scales[k]``: still
    nested, as a label's points share its cluster at every level.
    """
    keys = [grid_cluster(x, s) for s in scales]  # one origin (x.min): nested cells
    if labels is not None and keys:
        _, user = np.unique(labels, return_inverse=True)
        keys = [user.reshape(-1)] + [_pair_keys(user.reshape(-1), k) for k in keys[1:]]
    perm = np.lexsort(tuple(reversed(keys))) if keys else np.arange(x.shape[0])
    xs, ws = x[perm], w[perm]
    n = xs.shape[0]
    levels: list[Level] = []
    previous: np.ndarray | None = None
    for key in keys:
        sorted_lab = key[perm]
        starts = np.concatenate(([0], np.flatnonzero(np.diff(sorted_lab)) + 1, [n]))
        centroids, mass = cluster_centroids(xs, tuple(starts.tolist()), ws)
        spread = np.sqrt(((xs - np.repeat(centroids, np.diff(starts), axis=0)) ** 2).sum(axis=1))
        radii = np.maximum.reduceat(spread, starts[:-1])
        parents = None if previous is None else np.searchsorted(starts, previous)
        levels.append(Level(centroids, mass, radii, starts, parents))
        previous = starts
    fine_starts = np.arange(n + 1)
    parents = None if previous is None else previous.copy()
    levels.append(Level(xs, ws, np.zeros(n), fine_starts, parents))
    return CloudHierarchy(perm, levels)


def _pair_keys(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """One integer key per distinct pair (first_i, second_i), in lexicographic order."""
    return first * (int(second.max()) + 1) + second


#: candidate pairs are tested about this many at a time, so that memory stays bounded (N = 10^6)
CHUNK = 1 << 22

Pairs = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Candidates:
    """Candidate pairs as padded blocks: block ``b`` pairs rows ``rows[b]`` with columns
    ``cols[b]`` (both int arrays, (B, width)); ``valid`` (B, rows width, cols width) says
    which pairs exist (padding repeats a valid index), None when all do."""

    rows: np.ndarray
    cols: np.ndarray
    valid: np.ndarray | None


def candidate_pairs(kept: Pairs | None, rows: Level, cols: Level) -> Iterator[Candidates]:
    """All pairs of ``rows`` x ``cols`` points, or the children of the ``kept`` parent pairs,
    in chunks of about :data:`CHUNK` pairs.

    The children of a parent pair form one block padded to the largest number of children
    (at most 2**D on nested grids), so that their distances come from one batched product.
    """
    if kept is None:
        step = max(1, CHUNK // cols.size)
        j = np.arange(cols.size)[None, :]
        for i0 in range(0, rows.size, step):
            i = np.arange(i0, min(rows.size, i0 + step))[None, :]
            yield Candidates(i, j, None)
        return
    assert rows.parents is not None and cols.parents is not None
    wi, wj = int(np.diff(rows.parents).max()), int(np.diff(cols.parents).max())
    step = max(1, CHUNK // (wi * wj))
    for k in range(0, kept[0].shape[0], step):
        i, vi = _children(rows.parents, kept[0][k : k + step], wi)
        j, vj = _children(cols.parents, kept[1][k : k + step], wj)
        yield Candidates(i, j, vi[:, :, None] & vj[:, None, :])


def _children(parents: np.ndarray, which: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The children of the parent clusters ``which``, padded to ``width``, and which exist."""
    first = parents[which][:, None]
    local = np.arange(width)[None, :]
    valid = local < (parents[which + 1][:, None] - first)
    return np.where(valid, first + local, first), valid


def pair_chunks(pairs: Pairs) -> Iterator[Candidates]:
    """Given ``pairs``, as :class:`Candidates` blocks of one pair each, :data:`CHUNK` at a time."""
    for k in range(0, pairs[0].shape[0], CHUNK):
        i, j = pairs[0][k : k + CHUNK, None], pairs[1][k : k + CHUNK, None]
        yield Candidates(i, j, None)


def kept_pairs(
    rows: Level,
    cols: Level,
    f: np.ndarray,
    g: np.ndarray,
    candidates: Callable[[], Iterable[Candidates]],
    eps: float,
    truncate: float | None,
    p: float,
) -> Pairs:
    """The candidate pairs (i, j) whose plan may matter at temperature ``eps``, sorted by i, j.

    ``candidates()`` gives the candidate blocks (twice: the test reads them in two passes).
    The plan at eps of the potentials f, g, normalised row by row, has entries
    a_i b_j exp((h_ij - L_i) / eps) with L_i = eps log sum_j b_j exp(h_ij / eps) (0 for
    potentials that solve the problem at eps; positive for those of a larger eps, whose
    h_ij are too high). A block pair is kept if its largest entry (the growth bound of
    the module docstring) is at least exp(-truncate) of its row's or of its column's
    total: the mass a row (column) loses is then below exp(-truncate) of its own.
    Each row's and each column's best pair is always kept, so that no point of the next
    level is left with an empty soft-min. ``truncate=None`` keeps every candidate.
    """
    if truncate is not None:
        row_total, col_total = _LogSumExp(rows.size, eps), _LogSumExp(cols.size, eps)
        log_a, log_b = _log(rows.weights), _log(cols.weights)
        for c in candidates():
            h = _exponent(rows, cols, f, g, c, p)
            h /= eps
            row_total.add(c.rows[:, :, None], h + log_b[c.cols][:, None, :])
            col_total.add(c.cols[:, None, :], h + log_a[c.rows][:, :, None])
        reach_i, reach_j = row_total.result() - truncate * eps, col_total.result() - truncate * eps
    kept_i, kept_j = [], []
    best = [_Best(rows.size), _Best(cols.size)]
    for c in candidates():
        slack = _exponent(rows, cols, f, g, c, p)
        _add_growth(slack, rows, cols, c, p)
        if truncate is None:
            keep = np.isfinite(slack)
        else:
            keep = slack > np.minimum(reach_i[c.rows][:, :, None], reach_j[c.cols][:, None, :])
        b, u, v = np.nonzero(keep)
        kept_i.append(c.rows[b, u])
        kept_j.append(c.cols[b, v])
        best[0].update(c.rows, c.cols, slack)
        best[1].update(c.cols, c.rows, slack.transpose(0, 2, 1))
    for side, bst in enumerate(best):
        owners, partners = bst.pairs()
        kept_i.append(partners if side else owners)
        kept_j.append(owners if side else partners)
    i, j = np.concatenate(kept_i), np.concatenate(kept_j)
    order = np.lexsort((j, i))
    i, j = i[order], j[order]
    fresh = np.ones(i.shape[0], dtype=bool)
    fresh[1:] = (np.diff(i) != 0) | (np.diff(j) != 0)
    return i[fresh], j[fresh]


def _log(w: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(w)


def _exponent(rows: Level, cols: Level, f: np.ndarray, g: np.ndarray, c: Candidates, p: float) -> np.ndarray:
    """h = f_i + g_j - C(x_i, y_j) at the candidate pairs, (B, wi, wj), -inf where none.
    Computed in place (the blocks of N = 10^6 points hold hundreds of millions of pairs)."""
    x, y = rows.points[c.rows], cols.points[c.cols]
    if x.shape[1] == y.shape[1] == 1:  # single pairs: the differences
        x -= y
        h = np.einsum("bid,bid->bi", x, x)[:, :, None]
    else:  # blocks: |x - y|^2 = |x|^2 + |y|^2 - 2 x.y, one batched product
        h = np.matmul(x, y.transpose(0, 2, 1))
        h *= -2.0
        h += (x * x).sum(-1)[:, :, None]
        h += (y * y).sum(-1)[:, None, :]
        np.maximum(h, 0.0, out=h)
    if p == 2:
        h *= -0.5
    else:
        np.sqrt(h, out=h)
        h *= -1.0
    h += f[c.rows][:, :, None]
    h += g[c.cols][:, None, :]
    if c.valid is not None:
        np.copyto(h, -np.inf, where=~c.valid)
    return h


def _add_growth(h: np.ndarray, rows: Level, cols: Level, c: Candidates, p: float) -> None:
    """h plus its first-order growth over the clusters' radii (module docstring), in place."""
    growth = rows.radii[c.rows][:, :, None] + cols.radii[c.cols][:, None, :]
    if p == 2:  # the gradient in x of f(x) + g(y) - |x - y|^2 / 2 is about sqrt(-2 h) in size
        rate = np.minimum(h, 0.0)
        rate *= -2.0
        np.sqrt(rate, out=rate)
        growth = growth * rate
    else:  # f, g and the cost are 1-Lipschitz
        growth = np.broadcast_to(2.0 * growth, h.shape).copy()
    np.copyto(growth, 0.0, where=~np.isfinite(growth))  # -inf entries stay -inf
    h += growth


class _LogSumExp:
    """eps log sum exp(v) of each owner's values v, accumulated over chunks (stable)."""

    def __init__(self, count: int, eps: float) -> None:
        self.top = np.full(count, -np.inf)
        self.total = np.zeros(count)
        self.eps = eps

    def add(self, owners: np.ndarray, values: np.ndarray) -> None:
        owners = np.broadcast_to(owners, values.shape).ravel()
        values = values.ravel()
        top = self.top.copy()
        np.maximum.at(top, owners, values)
        seen = np.isfinite(top)
        self.total[seen] *= np.exp(self.top[seen] - top[seen])
        live = np.isfinite(values)
        np.add.at(self.total, owners[live], np.exp(values[live] - top[owners[live]]))
        self.top = top

    def result(self) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return self.eps * (self.top + np.log(self.total))


class _Best:
    """The best-scoring partner of each owner (row or column) over chunks of scored pairs."""

    def __init__(self, count: int) -> None:
        self.score = np.full(count, -np.inf)
        self.partner = np.full(count, -1, dtype=np.int64)

    def update(self, owners: np.ndarray, partners: np.ndarray, scores: np.ndarray) -> None:
        """Blocks of scores (B, owners' width, partners' width) of ``owners`` (B, width)
        against ``partners`` (B, width)."""
        row_max = scores[:, :, 0].copy()
        for k in range(1, scores.shape[2]):  # faster than max(axis=2) over a short axis
            np.maximum(row_max, scores[:, :, k], out=row_max)
        top = self.score.copy()
        np.maximum.at(top, owners.ravel(), row_max.ravel())
        b, a = np.nonzero((row_max >= top[owners]) & (row_max > self.score[owners]))
        self.score = top
        self.partner[owners[b, a]] = partners[b, scores[b, a].argmax(axis=1)]

    def pairs(self) -> Pairs:
        owners = np.flatnonzero(self.partner >= 0)
        return owners, self.partner[owners]


def block_structure(kept: Pairs, rows: Level, cols: Level | None, n_cols: int | None = None) -> BlockSparsity:
    """The block-sparsity of the next level's rows x cols from kept pairs of parent clusters.

    ``rows``, ``cols``: the next level (grouped by parent); ``cols=None`` makes every one
    of ``n_cols`` columns its own block (a soft-min over the coarse points themselves).
    """
    assert rows.parents is not None
    if cols is None:
        assert n_cols is not None
        j_bounds: np.ndarray = np.arange(n_cols + 1)
    else:
        assert cols.parents is not None
        j_bounds = cols.parents
    return BlockSparsity.from_block_pairs(rows.parents, j_bounds, *kept)
