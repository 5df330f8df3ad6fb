"""K-min and min of a squared distance |a_i - b_j|^2: GEMM candidates, exact values.

The exact evaluation of ``|a_i - b_j|^2`` makes several passes over a (Ti, Tj, D)
difference per tile; a GEMM (:class:`~lazymat_torch.gemm.SqDistGemm`) makes one, but
rounds differently, so its order could differ from the exact one between near-ties. This
module keeps the exact result and uses GEMM only to choose candidates:

1. per tile, the K' = 2K smallest GEMM values of each row: ``topk`` over the columns of
   the K' chunks (of CHUNK columns) with the smallest minima, which hold them, so that
   the full-width pass is a vectorised ``amin``, not a selection;
2. the exact value g~ and the GEMM value g of a pair differ by at most ``e_i``, a rigorous
   bound of the rounding of both (see :func:`row_bounds`), so every pair among the K
   exact smallest (ties at the K-th included) has ``g <= t_K + 2 e_i``, with ``t_K`` the
   K-th smallest GEMM value of the row; where the K'-th GEMM value of the chosen chunks
   and the smallest minimum of the other chunks exceed that threshold, the K' candidates
   hold all of them;
3. the candidates' exact values, computed as the exact evaluation does (differences
   squared and summed over d in order), are sorted by (value, index) and the first K kept.

Rows where the check of step 2 fails (K'-th GEMM value within ``2 e_i`` of the K-th)
are evaluated exactly over the whole tile. Non-finite or huge inputs take the exact path
(:func:`usable` checks), as the bound then says nothing. The loop here serves dense
requests without batch dimensions; others run the exact evaluation.
"""

from __future__ import annotations

from typing import Any

import torch

from lazymat.ir.algebra import Sub, SumDim
from lazymat.ir.functions import Square
from lazymat.ir.node import Node

from .gemm import sides, split_sides
from .merges import KMinReducer

#: columns per chunk of the candidate pre-selection (a multiple of the SIMD width)
CHUNK = 64
#: pairs per tile, at most: one thread on a quiet core prefers 2^20 (10^4 x 10^4 K-min:
#: 0.21 s, 0.25 s with 2^22), two threads on busy cores 2^22 (1.1 to 2.5 s, against 2.6 to
#: 9 s with 2^20: every op waits for the threads' wake-ups, and a tile makes ~30 ops)
TILE_PAIRS = 2**22
#: widest tile: whole rows up to 32768 columns spare the K-list merges between j-tiles
#: (3 * 10^4 points, K = 10, one thread: 1.1 s, against 2.3 s with 16384)
MAX_TILE_J = 32768


def sqdist_operands(formula: Node) -> tuple[Node, Node] | None:
    """(a, b) when ``formula`` is ``|a - b|^2`` with a depending on i only and b on j only."""
    if not isinstance(formula, SumDim) or formula.children[0].dim < 2:
        return None
    inner = formula.children[0]
    if not (isinstance(inner, Square) and isinstance(inner.children[0], Sub)):
        return None
    a, b = inner.children[0].children
    return split_sides(a, b, sides(formula)) if a.dim == b.dim else None


def exact_sqdist(a: Any, b: Any) -> Any:
    """sum_d (a_d - b_d)^2 of broadcast (..., D) arrays, summed over d in order (as the
    exact evaluation does), without a D-wide intermediate."""
    out = torch.sub(a[..., 0], b[..., 0])
    out.mul_(out)
    if a.shape[-1] > 1:
        tmp = torch.empty_like(out)
        for d in range(1, a.shape[-1]):
            torch.sub(a[..., d], b[..., d], out=tmp)
            out.add_(tmp.mul_(tmp))
    return out


def _reach(a: Any, b: Any) -> Any:
    """(|a_i| + max_j |b_j|)^2 per row i, in float64."""
    b_max = torch.linalg.vector_norm(b.double(), dim=-1).max()
    return (torch.linalg.vector_norm(a.double(), dim=-1) + b_max).square()


def usable(a: Any, b: Any) -> bool:
    """Whether the candidate bound holds: finite operands, distances far from overflow."""
    if a.shape[0] == 0 or b.shape[0] == 0:
        return False
    return bool(_reach(a, b).max() < torch.finfo(a.dtype).max / 16)


def row_bounds(a: Any, b: Any) -> Any:
    """Per row i, a bound e_i on |GEMM value - exact value| of |a_i - b_j|^2 over all j
    (float64).

    With u the unit roundoff and g_n = n u / (1 - n u): the norms |a|^2, |b|^2 carry
    g_D relative errors, the (D + 2)-term GEMM dot product g_(D+2) times the sum of its
    terms' magnitudes, at most (|a| + |b|)^2 (Cauchy-Schwarz), and the exact evaluation
    g_(D+3) of the distance, at most (|a| + |b|)^2 too: in all less than
    (3D + 6) u (1 + O(u)) (|a_i| + |b_j|)^2. Doubling that covers the O(u) terms and the
    rounding of the thresholds that add the bound.
    """
    u = torch.finfo(a.dtype).eps / 2
    return 2.0 * (3 * a.shape[-1] + 6) * u * _reach(a, b)


def _augmented(a: Any, b: Any, m_pad: int) -> tuple[Any, Any]:
    """[a, |a|^2, 1] (N, D + 2) and [-2b, 1, |b|^2]^T (D + 2, m_pad): their product is the
    GEMM |a_i - b_j|^2; padding columns (j >= M) come out huge, never candidates."""
    a_sq = (a * a).sum(-1, keepdim=True)
    a_aug = torch.cat((a, a_sq, torch.ones_like(a_sq)), dim=-1)
    b_aug = torch.zeros((m_pad, b.shape[-1] + 2), dtype=b.dtype, device=b.device)
    b_aug[: b.shape[0], :-2] = -2.0 * b
    b_aug[: b.shape[0], -2] = 1.0
    b_aug[: b.shape[0], -1] = (b * b).sum(-1)
    b_aug[b.shape[0] :, -1] = torch.finfo(b.dtype).max / 4
    return a_aug, b_aug.T.contiguous()


def sqdist_kmin(a: Any, b: Any, k: int, tile_bytes: int) -> tuple[Any, Any]:
    """The K smallest |a_i - b_j|^2 over j (N, K) and their indices, sorted by (value,
    index), the values of the exact evaluation; a (N, D) and b (M, D) finite
    (:func:`usable`), K <= M; GEMM tiles of at most ``tile_bytes``."""
    n, m = a.shape[0], b.shape[0]
    tj = min(MAX_TILE_J, -(-m // CHUNK) * CHUNK)
    m_pad = -(-m // tj) * tj
    ti = max(1, min(TILE_PAIRS, tile_bytes // a.element_size()) // tj)
    a_aug, b_aug = _augmented(a, b, m_pad)
    bound = 2.0 * row_bounds(a, b)  # the threshold above t_K: 2 e_i
    reducer = KMinReducer(k)
    g = torch.empty((ti, tj), dtype=a.dtype, device=a.device)
    values, indices = [], []
    for i0 in range(0, n, ti):
        i1 = min(n, i0 + ti)
        state = None
        for j0 in range(0, m_pad, tj):
            tile = torch.mm(a_aug[i0:i1], b_aug[:, j0 : j0 + tj], out=g[: i1 - i0])
            t_val, t_idx = _tile_kmin(tile, a[i0:i1], b, j0, k, bound[i0:i1])
            state = reducer.merge_sorted(state, t_val, t_idx)
        assert state is not None
        values.append(state[0])
        indices.append(state[1])
    return torch.cat(values), torch.cat(indices)


def _tile_kmin(g: Any, a: Any, b: Any, j0: int, k: int, bound: Any) -> tuple[Any, Any]:
    """The K smallest exact values of the rows of a (Ti, Tj) GEMM tile of columns j0:,
    sorted by (value, index), with their column indices."""
    ti, tj = g.shape
    n_chunks = tj // CHUNK
    m_tile = min(tj, b.shape[0] - j0)  # real columns; the padding ones come last
    k = min(k, m_tile)
    wide = min(k + 1 + k // 2, m_tile)
    picked = min(n_chunks, wide + 1)  # one more chunk than needed: its minimum bounds the rest
    minima = g.view(ti, n_chunks, CHUNK).amin(-1)
    chunk_min, chunk = torch.topk(minima, picked, dim=-1, largest=False, sorted=True)
    if picked > wide:
        rest, chunk = chunk_min[:, -1], chunk[:, :-1]
    else:
        rest = torch.full((ti,), float("inf"), dtype=g.dtype, device=g.device)
    cols = (chunk[:, :, None] * CHUNK + torch.arange(CHUNK, device=g.device)).reshape(ti, -1)
    top_g, pos = torch.topk(torch.gather(g, 1, cols), wide, dim=-1, largest=False, sorted=True)
    top_j = torch.gather(cols, 1, pos)
    if wide == m_tile:  # every real column is a candidate
        ok = torch.ones(ti, dtype=torch.bool, device=g.device)
    else:  # the other columns of the chosen chunks are >= top_g[:, -1], those of others >= rest
        rest = torch.minimum(rest, top_g[:, -1])
        ok = rest.double() > top_g[:, k - 1].double() + bound
    near = b.index_select(0, (top_j + j0).reshape(-1)).view(ti, wide, -1)
    exact = exact_sqdist(a[:, None, :], near)
    # sort the candidates by (exact value, index): by index, then stably by value
    by_index = torch.sort(top_j, dim=-1)[1]
    exact, top_j = torch.gather(exact, -1, by_index), torch.gather(top_j, -1, by_index)
    by_value = torch.sort(exact, dim=-1, stable=True)[1][:, :k]
    t_val, t_idx = torch.gather(exact, -1, by_value), torch.gather(top_j, -1, by_value)
    redo = (~ok).nonzero()[:, 0]
    if redo.numel():
        full = exact_sqdist(a[redo][:, None, :], b[None, j0 : j0 + m_tile])
        t_val[redo], t_idx[redo] = KMinReducer(k).tile_kmin(full, 0)
    return t_val, t_idx + j0
