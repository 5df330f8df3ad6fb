"""Log-sum-exp of ``s * |a_i - b_j|^2 + t_j`` (an :class:`~lazymat_torch.gemm.ExpArgGemm`
root: the softmin of Sinkhorn) in a few cheap passes per tile: one GEMM, a clamp, exp2 in
place, a row sum.

The online reducer of :mod:`lazymat_torch.merges` needs each tile's row maxima before its
exponentials: max, shift, exp, sum. Here each row's shift ``m_i`` is known before its first
tile: the row's largest value over a sample of at most :data:`SAMPLE_COLUMNS` evenly spaced
columns, a lower bound of the row's max that is usually close to it. The shift rides on
the GEMM as one more column, and the whole right operand is scaled by log2(e),
``[a, |a|^2, 1, -m_i] . log2(e) [-2 s b, s, s |b|^2 + t, 1]``, so that the tile comes out
as ``(v_ij - m_i) log2(e)`` and ``exp2`` gives the terms ``exp(v_ij - m_i)``.

Speed: the exponential of a float below the smallest normal result takes a slow path in
torch's CPU kernels (measured: 13x slower per entry for exp(-200), 38x for a subnormal
result, than for exp(-5)), and a softmin's tile is mostly such entries. The tile is
clamped at -:data:`EXP2_FLOOR` first, so that every entry takes the fast path, and exp2 is
cheaper than exp (about 2.3 vs 4.2 ms per 4.2 M floats, one core).

Exactness: the sampled maximum is one of the row's terms, so a row's sum is at least about
1, and a clamped term weighs at most 2^-126 of it (M of them, less than 1e-30 relative for
M up to 1e8). A row whose sum is not finite after a tile (a value more than about 88
above the sampled max, +inf, NaN), or whose shift is not finite (a sample of -inf values,
NaN), takes the exact merge of :class:`~lazymat_torch.merges.LogSumExpReducer` for that
tile, recomputed for those rows only with the exact difference. Both keep the same
state, (shift, sum of exp(v - shift)), so such a row's later tiles go on with the fast
path, shifted by its exact max. The rows that the GEMM's rounding bound rules out, or
that hold a non-finite coordinate (``GemmOperands.exact_rows``, :mod:`lazymat_torch.centred`),
take the exact merge on every tile; a non-finite column makes the tile's sums non-finite
where it matters, and those rows are redone the same way.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .gemm import GemmOperands
from .merges import LogSumExpReducer

#: most columns of the sample that sets each row's shift (evenly spaced over the M columns)
SAMPLE_COLUMNS = 512
#: the tile's base-2 exponents are clamped at -EXP2_FLOOR: 2^-126, the smallest normal float32
EXP2_FLOOR = 126.0


def lse_operands(gemm: GemmOperands) -> tuple[Any, Any]:
    """The GEMM operands (N, D + 3) and (D + 3, M) of the tiles ``a_i . b_j = v_ij - m_i``,
    the row shifts' column (the last of ``a``) at 0, from the prepared GEMM of the root
    (without batch dimensions)."""
    a_aug, b_aug = gemm.a_aug[0], gemm.b_aug[0]
    a_shift = torch.cat((a_aug, a_aug.new_zeros((a_aug.shape[0], 1))), dim=-1)
    b_shift = torch.cat((b_aug, b_aug.new_ones((b_aug.shape[0], 1))), dim=-1)
    return a_shift, b_shift.T.contiguous()


def lse_exp_gemm(gemm: GemmOperands, ti: int, tj: int) -> Any:
    """log sum_j exp(v_ij) (N,) over tiles of at most ``ti`` x ``tj`` pairs, for the
    prepared GEMM ``gemm`` of ``v_ij = s |a_i - b_j|^2 + t_j``: the GEMM's exact rows, and
    the rows that the fast path cannot hold, merge the exact values."""
    a, b = lse_operands(gemm)
    n, m_cols = a.shape[0], b.shape[1]
    exact = LogSumExpReducer()
    b2 = b * math.log2(math.e)  # the tiles in base 2
    sample = b[:, :: -(-m_cols // SAMPLE_COLUMNS)]  # at most SAMPLE_COLUMNS
    out = a.new_empty(n)
    buf = a.new_empty(min(ti, n) * min(tj, m_cols))
    for i0 in range(0, n, ti):
        rows = a[i0 : i0 + ti]
        gemm_rows = ~gemm.exact_rows[i0 : i0 + ti]
        shifted = rows.clone()
        shift = torch.mm(rows, sample).amax(-1)
        fast = torch.isfinite(shift) & gemm_rows
        shift = torch.where(fast, shift, -float("inf"))  # the exact rows start empty
        total = torch.zeros_like(shift)
        shifted[:, -1] = -torch.where(fast, shift, 0.0)
        for j0 in range(0, m_cols, tj):
            j1 = min(m_cols, j0 + tj)
            tile = torch.mm(shifted, b2[:, j0:j1], out=buf[: rows.shape[0] * (j1 - j0)].view(-1, j1 - j0))
            new_total = total + tile.clamp_(min=-EXP2_FLOOR).exp2_().sum(-1)
            ok = fast & torch.isfinite(new_total)
            if bool(ok.all()):
                total = new_total
                continue
            total = torch.where(ok, new_total, total)
            redo = torch.nonzero(~ok)[:, 0]
            vals = gemm.exact(redo + i0, slice(j0, j1))[..., None]  # (1, k, Tj, 1)
            state = (shift[redo][None, :, None], total[redo][None, :, None])
            new_shift, new_sum = exact.merge(state, vals, True, j0)
            shift[redo], total[redo] = new_shift[0, :, 0], new_sum[0, :, 0]
            fast[redo] = torch.isfinite(shift[redo]) & gemm_rows[redo]
            shifted[redo, -1] = -torch.where(fast[redo], shift[redo], 0.0)
        out[i0 : i0 + ti] = exact.finish((shift, total))["value"]
    return out
