"""K-min and min of a squared distance |a_i - b_j|^2: GEMM candidates, exact values.

The exact evaluation of ``|a_i - b_j|^2`` makes several passes over a (Ti, Tj, D)
difference per tile; a GEMM (:class:`~lazymat_torch.gemm.SqDistGemm`) makes one, but
rounds differently, so its order could differ from the exact one between near-ties. This
module keeps the exact result and uses GEMM only to choose candidates:

1. the exact value and the GEMM value g of a pair differ by at most ``e_i``, a rigorous
   bound of the rounding of both (see :func:`row_bounds`), so every pair among the K
   exact smallest of row i (ties at the K-th included) has ``g <= t_K + 2 e_i``, with
   ``t_K`` the K-th smallest GEMM value over any set of columns, and ``g <= v_K + e_i``,
   with ``v_K`` the K-th smallest exact value over any set of columns;
2. per tile (whole chunks of CHUNK columns), the candidates are the pairs with a GEMM
   value under that threshold: the chunk minima under it pick (row, chunk) pairs, usually
   a few per row and none in chunks far from the rows, whose values under it are listed;
3. the candidates' exact values, computed as the exact evaluation does (differences
   squared and summed over d in order), are merged into the running K-list by (value,
   index), whose K-th value then lowers the threshold.

The rows and the columns are sorted along a space-filling curve (:func:`spatial_order`),
so that a block of rows and a chunk of CHUNK columns have small bounding boxes. A block
first visits the chunks within the previous block's reach of its box, which yield every
row's ``v_K``; a chunk whose box lies further than ``v_K + 2 e_i`` from the block's for
every row holds no candidate and is skipped (the others are visited next), its GEMM tile
never computed (about 75 % of the chunks for uniform points in 3-D at N = M = 3 * 10^4).
The GEMM runs on points moved to a common centre (:class:`~lazymat_torch.centred.CentredPair`),
so that e_i, and the candidates, depend on the clouds' extent, not on their distance
from the origin; the exact values come from the original points. Non-finite or huge
inputs take the exact path (:func:`usable` checks), as the bound then says nothing. The
loop here serves dense requests without batch dimensions; others run the exact evaluation.
"""

from __future__ import annotations

from typing import Any

import torch

from lazymat.plugin import Node, Square, Sub, SumDim

from .centred import CentredPair, exact_sqdist, gamma
from .gemm import augmented_rows, sides, split_sides

#: columns per bounding box of the skipping test
CHUNK = 64
#: pairs per GEMM tile, at most (16 MiB of float32: in the last-level cache)
TILE_PAIRS = 2**22
#: widest tile: a block's columns in one tile spare the tiles' fixed costs
MAX_TILE_J = 32768
#: rows per block: the bounding box of fewer (spatially sorted) rows rules out more columns
ROW_BLOCK = 512
#: the first threshold t_K + 2 e_i of a block takes t_K over NEAREST more chunks than K needs
NEAREST = 2


def sqdist_operands(formula: Node) -> tuple[Node, Node] | None:
    """(a, b) when ``formula`` is ``|a - b|^2`` with a depending on i only and b on j only."""
    if not isinstance(formula, SumDim) or formula.children[0].dim < 2:
        return None
    inner = formula.children[0]
    if not (isinstance(inner, Square) and isinstance(inner.children[0], Sub)):
        return None
    a, b = inner.children[0].children
    return split_sides(a, b, sides(formula)) if a.dim == b.dim else None


def usable(pair: CentredPair) -> bool:
    """Whether the candidate bound holds: finite operands, distances far from overflow."""
    if pair.a.shape[-2] == 0 or pair.b.shape[-2] == 0 or bool(pair.bad_rows.any() or pair.bad_cols.any()):
        return False
    return bool(pair.radius.square().max() < torch.finfo(pair.a.dtype).max / 16)


def row_bounds(pair: CentredPair) -> Any:
    """Per row i, a bound e_i on |GEMM value - exact value| of |a_i - b_j|^2 over all j
    (float64), the GEMM on the centred points of ``pair``.

    The GEMM is within ``pair.error`` (:func:`lazymat_torch.centred.gemm_error`) of the
    true distance, the exact evaluation within g_(D+1) r_i^2 (a difference, a square and
    D - 1 additions per term, each term at most r_i^2). Doubling their sum covers the
    rounding of the thresholds that add the bound.
    """
    dim, dtype = pair.a.shape[-1], pair.a.dtype
    return 2.0 * (pair.error + gamma(dim + 1, dtype) * pair.radius.square())


def spatial_order(x: Any) -> Any:
    """The permutation that sorts the points x (N, D) along a Z-order (Morton) curve of a
    grid over their bounding box (at most 10 bits per coordinate, 63 in all, the first 63
    coordinates), so that runs of consecutive points have small bounding boxes."""
    d = min(x.shape[-1], 63)
    bits = min(10, 63 // d)
    coords = x[:, :d].double()
    lo, hi = coords.amin(0), coords.amax(0)
    scale = (2**bits - 1) / torch.clamp(hi - lo, min=torch.finfo(torch.float64).tiny)
    cells = ((coords - lo) * scale).long()
    shifts = torch.arange(d, device=x.device)
    code = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
    for bit in range(bits):
        code += (((cells >> bit) & 1) << (shifts + bit * d)).sum(-1)
    return torch.argsort(code)


def _augmented(a: Any, b: Any) -> tuple[Any, Any]:
    """[a, |a|^2, 1] (N, D + 2) and [-2b, 1, |b|^2]^T (D + 2, M + 1) of centred points:
    their product is the GEMM |a_i - b_j|^2; the padding column M comes out huge, never a
    candidate."""
    a_aug = augmented_rows(a)
    m = b.shape[0]
    b_aug = torch.zeros((m + 1, b.shape[-1] + 2), dtype=b.dtype, device=b.device)
    b_aug[:m, :-2] = -2.0 * b
    b_aug[:m, -2] = 1.0
    b_aug[:m, -1] = (b * b).sum(-1)
    b_aug[m, -1] = torch.finfo(b.dtype).max / 4
    return a_aug, b_aug.T.contiguous()


def _rounded_up(value: Any, dtype: Any) -> Any:
    """A positive float64 threshold as ``dtype``, at least as large: raised by two units
    of ``dtype``'s roundoff (and its smallest normal number, for subnormal thresholds),
    then rounded to nearest (half a unit at most)."""
    info = torch.finfo(dtype)
    return (value * (1.0 + 2.0 * info.eps) + info.tiny).to(dtype)


class _Chunks:
    """The columns sorted by :func:`spatial_order`, in chunks of CHUNK (the last one padded
    with the padding column), with the bounding box of each: a lower bound of the chunk's
    distances to a block of rows."""

    def __init__(self, b: Any, b_aug: Any) -> None:
        m = b.shape[0]
        n_chunks = -(-m // CHUNK)
        order = spatial_order(b)
        self.order = torch.cat((order, order.new_full((n_chunks * CHUNK - m,), m)))
        sorted_b = b.double()[order]
        # the padding repeats the last point: the same box
        padded = torch.cat((sorted_b, sorted_b[-1:].expand(n_chunks * CHUNK - m, -1)))
        boxes = padded.view(n_chunks, CHUNK, -1)
        self.lo, self.hi = boxes.amin(1), boxes.amax(1)
        self.aug = b_aug[:, self.order].view(b_aug.shape[0], n_chunks, CHUNK)

    def gaps(self, rows: Any) -> Any:
        """Per chunk, the squared distance (float64) between its box and the box of the
        rows (Ti, D): at most |a_i - b_j|^2 for the rows i and the chunk's columns j (the
        float64 rounding of float32 differences is far below e_i)."""
        rows = rows.double()
        below = torch.clamp(self.lo - rows.amax(0), min=0.0)
        above = torch.clamp(rows.amin(0) - self.hi, min=0.0)
        return (below + above).square().sum(-1)


def sqdist_kmin(pair: CentredPair, k: int, tile_bytes: int) -> tuple[Any, Any]:
    """The K smallest |a_i - b_j|^2 over j (N, K) and their indices, sorted by (value,
    index), the values of the exact evaluation; ``pair`` of a (1, N, D) and b (1, M, D),
    finite (:func:`usable`), K <= M; GEMM tiles of at most ``tile_bytes``."""
    a, b = pair.a[0], pair.b[0]
    n = a.shape[0]
    first = -(-k // CHUNK) + 1  # chunks that hold >= K columns (one may be partial)
    pairs = max(first * CHUNK, min(TILE_PAIRS, tile_bytes // a.element_size()))
    ti = max(1, min(n, ROW_BLOCK, pairs // (first * CHUNK)))
    tile_chunks = max(first, min(MAX_TILE_J, pairs // ti) // CHUNK)
    a_order = spatial_order(a)
    rows = a[a_order]
    a_aug, b_aug = _augmented(pair.a_c[0][a_order], pair.b_c[0])
    bound = 2.0 * row_bounds(pair)[a_order]  # 2 e_i
    chunks = _Chunks(b, b_aug)
    first = min(first, chunks.lo.shape[0])
    buffer = a.new_empty(ti * tile_chunks * CHUNK)  # the GEMM tiles (a fresh one costs page faults)
    values, indices = [], []
    reach = torch.tensor(0.0, dtype=torch.float64, device=a.device)
    for i0 in range(0, n, ti):
        i1 = min(n, i0 + ti)
        block = _RowBlock(rows[i0:i1], a_aug[i0:i1], bound[i0:i1], b, chunks, k)
        gaps = chunks.gaps(block.rows)
        # a guess of the reach, the previous block's (neighbours along the curve), and at
        # least ``first`` chunks: every row gets a v_K; a chunk with gap > v_K + e_i for
        # every row holds no candidate, the others left out are visited next
        guess = torch.maximum(reach, torch.kthvalue(gaps, first)[0])
        block.visit((gaps <= guess).nonzero()[:, 0], tile_chunks, buffer)
        reach = (block.value[:, -1].double() + block.bound).max()
        if reach > guess:
            block.visit(((gaps > guess) & (gaps <= reach)).nonzero()[:, 0], tile_chunks, buffer)
        values.append(block.value)
        indices.append(block.index)
    value = torch.empty((n, k), dtype=a.dtype, device=a.device)
    index = torch.empty((n, k), dtype=torch.int64, device=a.device)
    value[a_order], index[a_order] = torch.cat(values), torch.cat(indices)
    return value, index


class _RowBlock:
    """A block of rows: the running K smallest exact values and their columns, and the
    GEMM threshold under which a pair is a candidate."""

    def __init__(self, rows: Any, rows_aug: Any, bound: Any, b: Any, chunks: _Chunks, k: int) -> None:
        self.rows, self.rows_aug, self.bound = rows, rows_aug, bound
        self.b, self.chunks, self.k = b, chunks, k
        self.value = rows.new_empty((rows.shape[0], 0))
        self.index = torch.empty((rows.shape[0], 0), dtype=torch.int64, device=rows.device)
        self.threshold: Any = None

    def visit(self, ids: Any, per_tile: int, buffer: Any) -> None:
        """Merge the chunks ``ids`` (ascending), ``per_tile`` in a GEMM tile written to
        ``buffer``; the first tile holds at least K columns."""
        ti, aug = self.rows.shape[0], self.chunks.aug
        for c0 in range(0, ids.shape[0], per_tile):
            tile_ids = ids[c0 : c0 + per_tile]
            lo, hi = int(tile_ids[0]), int(tile_ids[-1]) + 1
            # consecutive chunks (all of them, in high dimension) are a view, not a copy
            cols = aug[:, lo:hi] if hi - lo == tile_ids.shape[0] else aug.index_select(1, tile_ids)
            width = tile_ids.shape[0] * CHUNK
            g = torch.mm(
                self.rows_aug, cols.reshape(aug.shape[0], -1), out=buffer[: ti * width].view(ti, width)
            )
            g = g.view(ti, tile_ids.shape[0], CHUNK)
            minima = g.amin(-1)
            if self.threshold is None:
                self.threshold = self.first_threshold(g, minima)
            hit_row, hit_chunk = (minima <= self.threshold[:, None]).nonzero().unbind(-1)
            vals = g.view(-1, CHUNK).index_select(0, hit_row * g.shape[1] + hit_chunk)
            sub, pos = (vals <= self.threshold.index_select(0, hit_row)[:, None]).nonzero().unbind(-1)
            if sub.numel():
                chunk = tile_ids.index_select(0, hit_chunk.index_select(0, sub))
                col = self.chunks.order.index_select(0, chunk * CHUNK + pos)
                self.merge(hit_row.index_select(0, sub), col)

    def first_threshold(self, g: Any, minima: Any) -> Any:
        """t_K + 2 e_i, t_K the smaller of two upper bounds of the K-th smallest GEMM value
        of the first tile: over its chunks with the smallest minima (tight where the
        neighbours gather in a few chunks, in low dimension), and its K-th smallest chunk
        minimum (K values of distinct columns, tight where they scatter); kept under the
        padding column's value, so that it is never a candidate."""
        q = min(minima.shape[1], -(-self.k // CHUNK) + NEAREST)
        low, near = torch.topk(minima, min(minima.shape[1], max(q, self.k)), dim=-1, largest=False)
        vals = torch.gather(g, 1, near[:, :q, None].expand(-1, -1, CHUNK)).reshape(g.shape[0], -1)
        t_k = torch.topk(vals, self.k, dim=-1, largest=False, sorted=False)[0].amax(-1)
        if low.shape[1] >= self.k:
            t_k = torch.minimum(t_k, low[:, self.k - 1])
        limit = torch.finfo(g.dtype).max / 8
        return torch.clamp(_rounded_up(t_k.double() + self.bound, g.dtype), max=limit)

    def merge(self, row: Any, col: Any) -> None:
        """Merge candidate pairs (``row``, ``col``; by row, then column, as ``nonzero``
        lists them) by (exact value, index): every row has at least K candidates in the
        first merge (those under t_K); lower the threshold to v_K + 2 e_i."""
        ti, k, held = self.rows.shape[0], self.k, self.value.shape[-1]
        count = torch.bincount(row, minlength=ti)
        rank = torch.arange(row.shape[0], device=row.device) - (torch.cumsum(count, 0) - count)[row]
        width = held + int(count.max())
        value = self.value.new_full((ti, width), float("inf"))
        index = self.index.new_full((ti, width), self.b.shape[0])  # after every real column
        value[:, :held], index[:, :held] = self.value, self.index
        value[row, held + rank] = exact_sqdist(self.rows.index_select(0, row), self.b.index_select(0, col))
        index[row, held + rank] = col
        # by (value, index): sort by index, then stably by value
        by_index = torch.sort(index, dim=-1)[1]
        value, index = torch.gather(value, -1, by_index), torch.gather(index, -1, by_index)
        by_value = torch.sort(value, dim=-1, stable=True)[1][:, :k]
        self.value, self.index = torch.gather(value, -1, by_value), torch.gather(index, -1, by_value)
        v_k = _rounded_up(self.value[:, -1].double() + self.bound, value.dtype)
        self.threshold = torch.minimum(self.threshold, v_k)
