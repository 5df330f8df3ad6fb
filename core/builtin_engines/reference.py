"""The reference engine: tiled, online reductions in pure array-API code.

It works for any namespace (numpy, array-api-strict, torch, jax, cupy) and is the
yardstick of the conformance suite. Tiles are sized from a memory budget
(``tile_bytes``): a tile of Ti x Tj pairs holds every intermediate of the formula, so
peak memory is O(N + M + tile_bytes), never O(N*M). Output tiles are concatenated rather
than written in place, so the code also runs under jax tracing.

The formula is evaluated by its :class:`~lazymat.small_problems.Program`, built once per
formula: a problem that fits one tile (the small sizes) costs its namespace operations
and little else.
"""

from __future__ import annotations

from typing import Any

from ..engine import Engine
from ..ir.leaves import Var
from ..request import ReductionRequest
from ..small_problems import program_for


class TileContext:
    """What ``Node.eval`` sees: namespace, dtype, device, the current tile of each variable."""

    def __init__(self, request: ReductionRequest) -> None:
        self.xp = request.xp
        self.dtype = request.dtype
        self.device = request.device
        self._args = request.args
        self.i0 = self.i1 = self.j0 = self.j1 = 0

    def var(self, v: Var) -> Any:
        a = self._args[v.index]
        if v.cat == "i":
            return a[..., self.i0 : self.i1, None, :]
        if v.cat == "j":
            return a[..., None, self.j0 : self.j1, :]
        return a[..., None, None, :]

    def index(self, axis: str) -> Any:
        xp = self.xp
        if axis == "j":
            return xp.arange(self.j0, self.j1, dtype=xp.int64, device=self.device)[:, None]
        return xp.arange(self.i0, self.i1, dtype=xp.int64, device=self.device)[:, None, None]


def formula_width(request: ReductionRequest) -> int:
    """Sum of the inner dimensions of every distinct sub-formula: floats held per pair."""
    return program_for(request.spec.formula).width


def tile_sizes(request: ReductionRequest, itemsize: int) -> tuple[int, int]:
    """(Ti, Tj) such that a tile's intermediates fit in ``request.tile_bytes``."""
    batch = 1
    for b in request.batch:
        batch *= b
    per_pair = max(1, formula_width(request)) * itemsize * batch
    pairs = max(1, request.tile_bytes // per_pair)
    tj = min(request.m, max(request.spec.k, 1024, pairs // max(1, min(request.n, 256))))
    ti = min(request.n, max(1, pairs // tj))
    return ti, tj


class ReferenceEngine(Engine):
    """Tiled online reductions in pure array-API code (any namespace, any reduction)."""

    name = "reference"
    priority = 0
    traceable = True  # namespace functions only

    def supports(self, request: ReductionRequest) -> bool:
        return True

    def run(self, request: ReductionRequest) -> tuple[Any, ...]:
        xp = request.xp
        spec = request.spec
        red = spec.kind
        formula = spec.formula
        program = program_for(formula)
        ctx = TileContext(request)
        itemsize = xp.finfo(request.dtype).bits // 8
        ti, tj = tile_sizes(request, itemsize)
        out_tiles: list[tuple[Any, ...]] = []
        for a, b, columns in row_blocks(request):
            for i0 in range(a, b, ti):
                ctx.i0, ctx.i1 = i0, min(b, i0 + ti)
                rows = (*request.batch, ctx.i1 - i0, formula.dim)
                state = red.init(xp, rows, spec.k, request.dtype, request.device)
                for c, d in columns:
                    for j0 in range(c, d, tj):
                        ctx.j0, ctx.j1 = j0, min(d, j0 + tj)
                        vals = program(ctx)
                        shape = (*request.batch, ctx.i1 - i0, ctx.j1 - j0, formula.dim)
                        state = red.merge(xp, state, xp.broadcast_to(vals, shape), j0)
                out_tiles.append(red.finalize(xp, state))
        return tuple(
            xp.concat([t[k] for t in out_tiles], axis=-2) if len(out_tiles) > 1 else out_tiles[0][k]
            for k in range(len(red.outputs))
        )


def row_blocks(request: ReductionRequest) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """(row start, row end, column intervals) per block of rows; one block when dense.

    Adjacent j-blocks of a row block are merged into one interval.
    """
    ranges = request.ranges
    if ranges is None:
        return [(0, request.n, [(0, request.m)])]
    out = []
    for block, row in enumerate(ranges.pairs):
        columns: list[tuple[int, int]] = []
        for j in row:
            c, d = ranges.j_bounds[j], ranges.j_bounds[j + 1]
            if columns and columns[-1][1] == c:
                columns[-1] = (columns[-1][0], d)
            else:
                columns.append((c, d))
        out.append((ranges.i_bounds[block], ranges.i_bounds[block + 1], columns))
    return out
