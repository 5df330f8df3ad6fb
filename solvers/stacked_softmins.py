"""Several reductions of one formula as a single batched call: fewer calls for small problems.

A Sinkhorn divergence iterates four soft-mins per step (OT(a, b) in both directions, OT(a, a)
and OT(b, b)), a kernel norm takes three kernel products, each a reduction of the same formula
on different clouds. On the small clouds of GeomLoss's tutorials (N = 10 .. 1000) a call costs
its fixed price (dispatch, engine set-up), not its N * M work: stacking the K reductions of B
problems along the batch axis, as one (K B)-batched reduction, divides the number of calls by K.
Each block is padded to the largest cloud: padded rows and columns are copies of the block's
first point; padded columns carry a zero weight, or in a log-sum-exp the first column's
log-weight plus LOG_ZERO, so that each padded term is exp(LOG_ZERO) = 0 times a real one,
whatever the cost and eps (a constant LOG_ZERO is outweighed by -C / eps once eps is small
enough: 20 against 5 points at blur 0.001 gave a divergence 11% off); padded rows are computed
and dropped. The results are those of the separate reductions (each row sees the same terms).

Padding wastes work when the clouds' sizes differ, so :func:`worth_stacking` stacks while the
padded work stays within :data:`PADDING_SLACK` of the real one, or the call is small anyway
(:data:`SMALL_PAIRS`). Rows and columns change sides between blocks (the g-update of OT(a, b)
reduces C(y_j, x_i) over i), so only symmetric costs stack: the built-in ones.

:func:`stacked_sinkhorn_loop` and :func:`stacked_extrapolate` are the loop and the last,
differentiable extrapolation of :mod:`.sinkhorn_loop` on the stacked problems; the
potentials come back per problem, as :func:`~.sinkhorn_loop.sinkhorn_loop` gives them.
The smallest stacks (GeomLoss's tutorials) skip the reductions: their costs fit one dense
tile, built once per solve (:mod:`.tile_transports`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from lazymat import LazyMatrix, Vi, Vj

from .costs import Cost, distance, evaluate_cost, half_sqdist
from .penalties import Penalty
from .sinkhorn_loop import LOG_ZERO, LoopOutcome, Transport, pad, sinkhorn_loop, softmin
from .tile_transports import TileTransports, fits_one_tile, tile_extrapolate

#: stack while the padded work is at most this factor of the separate calls' work ...
PADDING_SLACK = 1.3
#: ... or while the stacked call has at most this many (row, column) pairs
SMALL_PAIRS = 4_000_000
#: the costs that are symmetric, C(x, y) = C(y, x): rows and columns may change sides
SYMMETRIC_COSTS: tuple[Cost, ...] = (half_sqdist, distance)

#: one block: rows (B, N, D), columns (B, M, D), column data (B, M) and its padding: 0 for
#: weights, LOG_ZERO for log-weights (added to the first column's, see the module docstring)
Block = tuple[Any, Any, Any, float]


def worth_stacking(shapes: Sequence[tuple[int, int, int]]) -> bool:
    """Whether blocks of (batch, rows, columns) sizes run faster as one padded call."""
    if len(shapes) < 2:
        return False
    rows, cols = max(s[1] for s in shapes), max(s[2] for s in shapes)
    padded = sum(s[0] for s in shapes) * rows * cols
    work = sum(b * n * m for b, n, m in shapes)
    return padded <= SMALL_PAIRS or padded <= PADDING_SLACK * work


def _stack(xp: Any, arrays: Sequence[Any], size: int, offset: float) -> Any:
    """The arrays (B_k, n_k, ...) padded along axis 1 to ``size`` with their first entry plus
    ``offset``, concatenated."""
    return xp.concat([pad(xp, v, size, offset, after_first=True) for v in arrays], axis=0)


def _cut(out: Any, shapes: Sequence[tuple[int, int]]) -> list[Any]:
    """The stacked result (K B, rows) cut back into one (B_k, N_k) per block of ``shapes``."""
    cuts, start = [], 0
    for b, n in shapes:
        cuts.append(out[start : start + b, :n])
        start += b
    return cuts


def stacked_reduction(xp: Any, blocks: Sequence[Block], reduce: Callable[[Any, Any, Any], Any]) -> list[Any]:
    """``reduce(rows, cols, data)`` on the blocks stacked along the batch axis, padded;
    ``reduce`` returns (K B, rows) and the result is cut back into one (B, N_k) per block."""
    size_i = max(r.shape[1] for r, _, _, _ in blocks)
    size_j = max(c.shape[1] for _, c, _, _ in blocks)
    rows = _stack(xp, [r for r, _, _, _ in blocks], size_i, 0.0)
    cols = _stack(xp, [c for _, c, _, _ in blocks], size_j, 0.0)
    data = xp.concat([pad(xp, d, size_j, fill, after_first=fill != 0) for _, _, d, fill in blocks], axis=0)
    return _cut(reduce(rows, cols, data), [(r.shape[0], r.shape[1]) for r, _, _, _ in blocks])


def stacked_softmins(xp: Any, cost: Cost, blocks: Sequence[Block], eps: float) -> list[Any]:
    """-eps log sum_j exp(h_j - C(x_i, y_j) / eps) for each block (x, y, h, LOG_ZERO)."""

    def reduce(rows: Any, cols: Any, h: Any) -> Any:
        return softmin(xp, evaluate_cost(cost, Vi(rows), Vj(cols)), h, eps, axis=1)

    return stacked_reduction(xp, blocks, reduce)


def _stackable(problems: Sequence[Transport]) -> bool:
    t = problems[0]
    if t.cost not in SYMMETRIC_COSTS or any(p.ranges is not None for p in problems):
        return False
    shapes = []
    for p in problems:
        b, n, m = p.x.shape[0], p.x.shape[1], (p.x if p.symmetric else p.y).shape[1]
        shapes += [(b, n, n)] if p.symmetric else [(b, n, m), (b, m, n)]
    return worth_stacking(shapes)


def _update_blocks(t: Transport, pots: tuple[Any, ...], eps: float, rows: Sequence[Any]) -> list[Block]:
    """The soft-min blocks of one Sinkhorn update of problem ``t``: f from g (rows x,
    columns y), then g from f (rows y, columns x); one block if symmetric. ``rows`` are
    the arrays on the rows (x, then y), columns are always constant."""
    stop = t.stop
    f = pots[0]
    if t.symmetric:
        return [(rows[0], stop(t.x), stop(t.log_a + f / eps), LOG_ZERO)]
    g = pots[1]
    return [
        (rows[0], stop(t.y), stop(t.log_b + g / eps), LOG_ZERO),
        (rows[1], stop(t.x), stop(t.log_a + f / eps), LOG_ZERO),
    ]


class StackedTransports:
    """The problems of one Sinkhorn loop as one: its potentials are theirs, concatenated
    (the loop averages them element by element), its update is one stacked soft-min. The
    points do not change during the loop: their padded stacks and the cost matrix on them
    are built once, each update only stacks the potentials."""

    symmetric = False

    def __init__(self, problems: Sequence[Transport]) -> None:
        self.problems = list(problems)
        t = self.problems[0]
        self.xp, self.stop, self.a, self.b = t.xp, t.stop, t.a, t.b
        self.sizes = [1 if p.symmetric else 2 for p in self.problems]
        blocks = self._blocks(self.zeros(), 1.0)
        self.shapes = [(r.shape[0], r.shape[1]) for r, _, _, _ in blocks]
        self.columns = max(c.shape[1] for _, c, _, _ in blocks)
        rows = _stack(self.xp, [r for r, _, _, _ in blocks], max(n for _, n in self.shapes), 0.0)
        cols = _stack(self.xp, [c for _, c, _, _ in blocks], self.columns, 0.0)
        rows, cols = t.materialize(rows, cols)  # computed once, not in every iteration's graph
        self.cost = evaluate_cost(t.cost, Vi(rows), Vj(cols))

    def zeros(self) -> tuple[Any, ...]:
        return tuple(z for p in self.problems for z in p.zeros())

    def join(self, pots: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
        """The problems' potentials as this one's (the inverse of :meth:`split`)."""
        return tuple(v for q in pots for v in q)

    def split(self, pots: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        out, start = [], 0
        for size in self.sizes:
            out.append(tuple(pots[start : start + size]))
            start += size
        return out

    def _blocks(self, pots: tuple[Any, ...], eps: float) -> list[Block]:
        blocks: list[Block] = []
        for p, q in zip(self.problems, self.split(pots), strict=True):
            rows = [p.stop(p.x)] if p.symmetric else [p.stop(p.x), p.stop(p.y)]
            blocks += _update_blocks(p, q, eps, rows)
        return blocks

    def sinkhorn_step(self, pots: tuple[Any, ...], eps: float, penalty: Penalty) -> tuple[Any, ...]:
        h = _stack(self.xp, [d for _, _, d, _ in self._blocks(pots, eps)], self.columns, LOG_ZERO)
        out = _cut(softmin(self.xp, self.cost, h, eps, axis=1), self.shapes)
        return tuple(penalty.update(self.xp, v, eps) for v in out)

    def mass_term(self, f: Any, g: Any, eps: float) -> Any:
        raise NotImplementedError("the stacked problems only run the loop")


def stacked_sinkhorn_loop(
    problems: Sequence[Transport],
    eps_list: list[float],
    penalty: Penalty,
    *,
    tol: float | None = None,
    max_iter: int | None = None,
    verbose: bool = False,
    progress: bool = False,
    initial: list[tuple[Any, ...]] | None = None,
) -> LoopOutcome:
    """:func:`~.sinkhorn_loop.sinkhorn_loop` on the problems, stacked when it pays: on one
    dense tile (:mod:`.tile_transports`) when their costs fit the tile budget, else as one
    stacked reduction per step. ``initial``: each problem's starting potentials (a warm start)."""
    loop = partial(sinkhorn_loop, tol=tol, max_iter=max_iter, verbose=verbose, progress=progress)
    if not _stackable(problems):
        return loop(problems, eps_list, penalty, initial=initial)
    stacked: StackedTransports | TileTransports
    stacked = TileTransports(problems) if fits_one_tile(problems) else StackedTransports(problems)
    out = loop([stacked], eps_list, penalty, initial=None if initial is None else [stacked.join(initial)])
    return LoopOutcome(stacked.split(out.potentials[0]), out.n_iter, out.converged)


def stacked_extrapolate(
    problems: Sequence[Transport], pots: Sequence[tuple[Any, ...]], eps: float, penalty: Penalty
) -> list[tuple[Any, ...]]:
    """:meth:`~.sinkhorn_loop.Transport.extrapolate` of every problem, stacked when it pays:
    the rows carry the user's (differentiable) points, the columns constants."""
    if not _stackable(problems):
        return [t.extrapolate(q, eps, penalty) for t, q in zip(problems, pots, strict=True)]
    if fits_one_tile(problems):
        return tile_extrapolate(problems, pots, eps, penalty)
    blocks: list[Block] = []
    for t, q in zip(problems, pots, strict=True):
        blocks += _update_blocks(t, q, eps, [t.x] if t.symmetric else [t.x, t.y])
    out = [
        penalty.update(problems[0].xp, v, eps)
        for v in stacked_softmins(problems[0].xp, problems[0].cost, blocks, eps)
    ]
    result, start = [], 0
    for t in problems:
        size = 1 if t.symmetric else 2
        result.append(tuple(out[start : start + size]))
        start += size
    return result


def stacked_kernel_products(
    xp: Any, kernel: Callable[[LazyMatrix, LazyMatrix], LazyMatrix], blocks: Sequence[Block]
) -> list[Any]:
    """sum_j k(x_i, y_j) w_j for each block (x, y, w, 0), as one reduction when it pays."""

    def reduce(rows: Any, cols: Any, w: Any) -> Any:
        k = kernel(Vi(rows), Vj(cols))
        out = (k * Vj(xp.reshape(w, (*w.shape, 1)))).sum(axis=1)
        return xp.reshape(out, tuple(out.shape[:-1]))

    shapes = [(r.shape[0], r.shape[1], c.shape[1]) for r, c, _, _ in blocks]
    if not worth_stacking(shapes):
        return [reduce(r, c, w) for r, c, w, _ in blocks]
    return stacked_reduction(xp, blocks, reduce)
