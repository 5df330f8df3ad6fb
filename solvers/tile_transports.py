"""The Sinkhorn loop of small problems on one dense cost tile, built once per solve.

GeomLoss's tutorials solve problems of 5 to 100 points with up to 700 iterations per call.
There an iteration of the lazy loop (:class:`~.stacked_softmins.StackedTransports`: one
stacked soft-min reduction) costs its fixed price -- a LazyMatrix for the new eps, the
reduction's dispatch, the stacking of the potentials, the cut of the result -- not its
arithmetic. When the stacked problems' cost matrices are small (:data:`TILE_PAIRS`) and fit
the tile budget of a reduction (``lazymat.config(tile_bytes=...)``, the memory one tile of
the reference engine may hold), :class:`TileTransports` evaluates them once, as one padded
(K B, S, S) array, and runs each iteration as a dozen array-API operations on it: the points
do not move during the loop. Memory is bounded by the tile budget, never by N * M of large
inputs, which keep the lazy reductions.

Layout: the K blocks of :func:`~.stacked_softmins.stacked_sinkhorn_loop` (OT(a, b): rows x
columns y, then rows y columns x; a symmetric problem: rows x columns x), each B rows of
the batch, padded to one size S. The loop's state is one (K B, S) array holding every new
potential on its rows; the potential a block reduces over (its columns) is the row
potential of its partner block (f for the g-update and back; itself if symmetric), read
with one ``take``. Padded columns hold log-weight -inf (exp gives exactly 0, whatever the
eps: no LOG_ZERO of finite size that a tiny eps could outweigh), padded rows are reset to 0
so that the loop's convergence test reads real potentials only.

The loop's arrays are cut from autodiff. The last extrapolation (:func:`tile_extrapolate`)
runs on a tile whose rows are the user's points: the backend's autodiff differentiates it
(the gradients of the lazy path's symbolic VJPs, without a reduction's fixed cost). The
kernel norms of :mod:`.kernel_losses` use the same budget (:func:`fits_tile_budget`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import array_api_compat

from lazymat.options import get_option

from .costs import NORM_FLOOR, Cost, distance, half_sqdist
from .penalties import Penalty
from .sinkhorn_loop import Transport, pad

#: the costs evaluated densely here, from the squared distances |x_i - y_j|^2 (B, N, M)
DENSE_COSTS: dict[Cost, Callable[[Any, Any], Any]] = {
    half_sqdist: lambda xp, sq: sq / 2,
    distance: lambda xp, sq: xp.sqrt(sq + NORM_FLOOR),
}
#: arrays of the tile's size alive at once, besides the points' differences (B, N, M, D):
#: cost, exponent, its exp (and, for autodiff, what the backward pass keeps of them)
TILE_ARRAYS = 4
#: the most pairs (K B S S) of a tile: above, an iteration's arithmetic outweighs the fixed
#: cost of a lazy reduction (torch CPU, one thread: the tile is 0.25-0.35 of the lazy loop's
#: time up to 4 x 70^2 pairs, 0.7 at 4 x 100^2, 1.4-1.6 from 4 x 150^2), and torch splits
#: larger element-wise operations across threads (its grain: 2^15 elements), which a busy
#: machine makes many times slower
TILE_PAIRS = 2**15


def tile_shape(problems: Sequence[Transport]) -> tuple[int, int]:
    """(K B, S) of the stacked tile of ``problems``: K blocks of B rows, padded to S."""
    batch, size = 0, 0
    for p in problems:
        n, m = p.x.shape[1], (p.x if p.symmetric else p.y).shape[1]
        batch += p.x.shape[0] * (1 if p.symmetric else 2)
        size = max(size, n, m)
    return batch, size


def fits_tile_budget(like: Any, batch: int, size: int) -> bool:
    """Whether a dense (batch, size, size) tile of points like ``like`` (B, N, D) pays
    (:data:`TILE_PAIRS`) and, with its intermediates, fits the reductions' tile budget
    (``lazymat.config(tile_bytes=...)``); never for lazy (dask) arrays, whose reductions
    plan the work."""
    if array_api_compat.is_dask_array(like) or batch * size * size > TILE_PAIRS:
        return False
    itemsize = 8 if like.dtype == array_api_compat.array_namespace(like).float64 else 4
    return batch * size * size * (like.shape[-1] + TILE_ARRAYS) * itemsize <= get_option("tile_bytes")


def fits_one_tile(problems: Sequence[Transport]) -> bool:
    """Whether ``problems`` run on one dense tile: built-in costs, no kernel truncation, and
    the tile within the tile budget (:func:`fits_tile_budget`)."""
    t = problems[0]
    if t.cost not in DENSE_COSTS or any(p.ranges is not None for p in problems):
        return False
    return fits_tile_budget(t.x, *tile_shape(problems))


def dense_sqdist(xp: Any, x: Any, y: Any) -> Any:
    """|x_i - y_j|^2 as a (B, N, M) array, for points (B, N, D) and (B, M, D)."""
    diff = x[:, :, None, :] - y[:, None, :, :]
    return xp.sum(diff * diff, axis=-1)


def dense_cost(xp: Any, cost: Cost, x: Any, y: Any) -> Any:
    """C(x_i, y_j) as a (B, N, M) array, for the built-in costs (:data:`DENSE_COSTS`)."""
    return DENSE_COSTS[cost](xp, dense_sqdist(xp, x, y))


class Tile:
    """The soft-min blocks of ``problems`` on one dense tile (module docstring): the cost
    (K B, S, S) of the stacked rows against the stacked columns, the columns' log-weights
    (-inf on padding), the block whose rows are each block's columns, the real rows' mask.
    ``live``: the rows are the user's points (differentiable), else their stopped copies."""

    def __init__(self, problems: Sequence[Transport], live: bool) -> None:
        t = problems[0]
        xp = self.xp = t.xp
        self.stop = t.stop
        rows: list[Any] = []
        cols: list[Any] = []
        logs: list[Any] = []
        partner: list[int] = []
        for p in problems:
            k, x = len(rows), p.stop(p.x)
            if p.symmetric:
                rows, cols, logs, partner = (
                    rows + [p.x if live else x],
                    cols + [x],
                    logs + [p.log_a],
                    partner + [k],
                )
                continue
            y = p.stop(p.y)
            rows += [p.x, p.y] if live else [x, y]
            cols, logs, partner = cols + [y, x], logs + [p.log_b, p.log_a], partner + [k + 1, k]
        self.sides = [1 if p.symmetric else 2 for p in problems]
        self.shapes = [(v.shape[0], v.shape[1]) for v in rows]
        batch, size = tile_shape(problems)
        self.size = size
        self.cost = dense_cost(
            xp,
            t.cost,
            xp.concat([pad(xp, v, size, 0.0) for v in rows], axis=0),
            xp.concat([pad(xp, v, size, 0.0) for v in cols], axis=0),
        )
        self.log_weights = xp.concat([pad(xp, v, size, -float("inf")) for v in logs], axis=0)
        device = array_api_compat.device(t.x)
        starts = [sum(b for b, _ in self.shapes[:k]) for k in range(len(self.shapes))]
        order = [starts[k] + r for k in partner for r in range(self.shapes[k][0])]
        self.partner = None if order == list(range(batch)) else xp.asarray(order, device=device)
        self.row_mask = None
        if any(n < size for _, n in self.shapes):
            index = xp.arange(size, device=device)
            bounds = xp.asarray([n for b, n in self.shapes for _ in range(b)], device=device)
            self.row_mask = index[None, :] < bounds[:, None]

    def softmin(self, q: Any, eps: float) -> Any:
        """-eps log sum_j exp(h_j - C_ij / eps) for every block, h the column log-weights
        plus the partner block's row potential (in ``q``, (K B, S)) / eps: (K B, S)."""
        xp, stop = self.xp, self.stop
        if self.partner is not None:
            q = xp.take(q, self.partner, axis=0)
        inv = 1.0 / eps
        z = stop(self.log_weights + q * inv)[:, None, :] - self.cost * inv
        top = stop(xp.max(z, axis=-1))
        return -eps * (xp.log(xp.sum(xp.exp(z - top[:, :, None]), axis=-1)) + top)

    def stack(self, pots: Sequence[tuple[Any, ...]]) -> Any:
        """Each problem's potentials (f, g) or (f,) as the tile's rows (K B, S), zero-padded."""
        return self.xp.concat([pad(self.xp, v, self.size, 0.0) for q in pots for v in q], axis=0)

    def cut(self, q: Any) -> list[tuple[Any, ...]]:
        """The tile's rows (K B, S) cut back into each problem's potentials."""
        blocks, start = [], 0
        for b, n in self.shapes:
            blocks.append(q[start : start + b, :n])
            start += b
        out, k = [], 0
        for size in self.sides:
            out.append(tuple(blocks[k : k + size]))
            k += size
        return out


class TileTransports:
    """The problems of one Sinkhorn loop as one problem on their tile (module docstring).

    Its potentials are one array (K B, S); :meth:`split` gives them back per problem, as
    :func:`~.sinkhorn_loop.sinkhorn_loop` gives the potentials of separate problems.
    """

    symmetric = False

    def __init__(self, problems: Sequence[Transport]) -> None:
        t = problems[0]
        self.xp, self.stop, self.a, self.b = t.xp, t.stop, t.a, t.b
        self.tile = Tile(problems, live=False)
        self._zeros = self.xp.zeros(
            self.tile.log_weights.shape, dtype=t.x.dtype, device=array_api_compat.device(t.x)
        )

    def zeros(self) -> tuple[Any, ...]:
        return (self._zeros,)

    def sinkhorn_step(self, pots: tuple[Any, ...], eps: float, penalty: Penalty) -> tuple[Any, ...]:
        """Every block's soft-min and the penalty's update; padded rows reset to 0."""
        out = penalty.update(self.xp, self.tile.softmin(pots[0], eps), eps)
        if self.tile.row_mask is not None:
            out = self.xp.where(self.tile.row_mask, out, self._zeros)
        return (out,)

    def mass_term(self, f: Any, g: Any, eps: float) -> Any:
        raise NotImplementedError("the tile's problems only run the loop")

    def join(self, pots: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
        """The problems' potentials as the tile's (the inverse of :meth:`split`)."""
        return (self.tile.stack(pots),)

    def split(self, pots: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return self.tile.cut(pots[0])


def tile_extrapolate(
    problems: Sequence[Transport], pots: Sequence[tuple[Any, ...]], eps: float, penalty: Penalty
) -> list[tuple[Any, ...]]:
    """:meth:`~.sinkhorn_loop.Transport.extrapolate` of every problem on one dense tile
    whose rows are the user's points: differentiable through the backend's own autodiff."""
    tile = Tile(problems, live=True)
    out = penalty.update(tile.xp, tile.softmin(tile.stack(pots), eps), eps)
    return tile.cut(out)
