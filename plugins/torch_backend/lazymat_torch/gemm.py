"""Formula patterns that torch computes with matrix products (GEMM) instead of pair by pair.

Three shapes of formula are worth a GEMM on a tile of Ti x Tj pairs:

- ``|a_i - b_j|^2`` (``SumDim(Square(Sub(a, b)))``, a squared distance) is
  ``|a_i|^2 + |b_j|^2 - 2 <a_i, b_j>``: one ``addmm`` instead of a (Ti, Tj, D) difference;
- ``<a_i, b_j>`` (``SumDim(Mul(a, b))``) is one ``mm``;
- a sum reduction of ``k_ij * w_j`` (k scalar, w depending on j only: a kernel product
  ``K @ w``) is the product of the k-tile with the w-tile.

The first two are rewritten into the nodes :class:`SqDistGemm` and :class:`DotGemm`
(internal to this engine, never seen by the core); the third is split off the formula by
:func:`split_kernel_product`. Rewrites apply only to sums and log-sum-exps: GEMM rounds
differently from the pair-by-pair formula, which is harmless for sums but could flip
comparisons between equal values, so min/argmin and K-min keep the exact values (those
of a squared distance take GEMM candidates only: :mod:`lazymat_torch.sqdist_kmin`).

A squared distance's GEMM is built once per request (:class:`GemmOperands`, which the tile
plan prepares) on points moved to a common centre, with a rigorous bound of its rounding;
the pairs where that bound is too large for the kernel's scale, and the rows or columns
with a non-finite coordinate, take the exact difference (:mod:`lazymat_torch.centred`).
"""

from __future__ import annotations

from typing import Any

import torch

from lazymat.plugin import (
    Add,
    Const,
    Div,
    Exp,
    IndexMatch,
    Log,
    Mul,
    Neg,
    Node,
    PowConst,
    Rsqrt,
    Sqrt,
    Square,
    Sub,
    SumDim,
    Var,
    substitute,
)

from .centred import CentredPair, exact_sqdist, tolerance

#: the side of a node: the indices its value depends on ("i", "j"); parameters add none
Side = frozenset[str]
I_ONLY: Side = frozenset("i")
J_ONLY: Side = frozenset("j")
MIXED: Side = frozenset("ij")


def sides(formula: Node) -> dict[Node, Side]:
    """For every node, the indices (i, j) its value depends on.

    IndexMatch compares the reduced index with its operand, so it counts as mixed.
    """
    out: dict[Node, Side] = {}
    for node in formula.walk():
        if isinstance(node, Var):
            out[node] = frozenset() if node.cat == "p" else frozenset(node.cat)
        elif isinstance(node, IndexMatch):
            out[node] = MIXED
        else:
            out[node] = frozenset().union(*(out[c] for c in node.children))
    return out


def _rows(a: Any) -> Any:
    """An i-side tile (Ba, Ti, 1, D) as (Ba, Ti, D)."""
    return a[..., :, 0, :]


def _cols(b: Any) -> Any:
    """A j-side tile (Bb, 1, Tj, D) as (Bb, Tj, D)."""
    return b[..., 0, :, :]


def augmented_rows(a: Any) -> Any:
    """[a, |a|^2, 1] (..., D + 2): the left operand of a GEMM that yields |a - b|^2 (or an
    affine function of it) in one product, the norms riding on the last two columns."""
    a_sq = (a * a).sum(-1, keepdim=True)
    return torch.cat((a, a_sq, torch.ones_like(a_sq)), dim=-1)


def _matmul_t(a: Any, b: Any) -> Any:
    """``a @ b^T`` over a broadcast batch: a (Ba, Ti, K), b (Bb, Tj, K) -> (B, Ti, Tj)."""
    if a.shape[0] == 1 and b.shape[0] == 1:
        return torch.mm(a[0], b[0].T)[None]
    return torch.matmul(a, b.transpose(-1, -2))


class GemmOperands:
    """The GEMM of one node over a whole request, ``scale * |a_i - b_j|^2 + shift_j``:
    its augmented operands, built once on centred points (:mod:`lazymat_torch.centred`),
    and the pairs that the exact difference replaces.

    ``a_aug`` (B|1, N, K), ``b_aug`` (B|1, M, K): the tile of rows ``i0:i1`` and columns
    ``cols`` is ``a_aug[:, i0:i1] @ b_aug[:, cols]^T``. ``exact_rows`` (N,) and the pair's
    non-finite columns are evaluated exactly; so are the pairs whose GEMM value is under
    ``threshold`` (N,) of their row, when it is given (a bare distance: see the module
    :mod:`lazymat_torch.centred`).
    """

    def __init__(
        self,
        pair: CentredPair,
        operands: tuple[Any, Any],
        affine: tuple[Any, Any],
        exact_rows: Any,
        threshold: Any = None,
    ) -> None:
        self.pair = pair
        self.a_aug, self.b_aug = operands
        self.scale, self.shift = affine  # scale: (B|1, 1, 1) or a number; shift: (B|1, M) or a number
        self.exact_rows = exact_rows
        self.any_rows = bool(exact_rows.any())
        self.any_cols = bool(pair.bad_cols.any())
        self.threshold = threshold

    def exact(self, rows: Any, cols: Any) -> Any:
        """The node's values (B|1, k, l) for rows and columns (slices or index tensors),
        through the exact difference."""
        values = self.pair.exact(rows, cols) * self.scale
        return values + (self.shift if isinstance(self.shift, float) else self.shift[:, None, cols])

    def tile(self, i0: int, i1: int, cols: Any) -> Any:
        """The node's values (B, Ti, Tj) on rows ``i0:i1`` and columns ``cols`` (a slice,
        or the increasing indices of a block-sparse tile)."""
        g = _matmul_t(self.a_aug[:, i0:i1], self.b_aug[:, cols])
        if self.threshold is not None:
            self._redo_pairs(g, i0, cols)
        if self.any_rows:
            rows = self.exact_rows[i0:i1].nonzero()[:, 0]
            if rows.numel():
                g[:, rows] = self.exact(rows + i0, cols)
        if self.any_cols:
            bad = self.pair.bad_cols[cols].nonzero()[:, 0]
            if bad.numel():
                g[:, :, bad] = self.exact(slice(i0, i1), _column_ids(cols, bad))
        return g

    def _redo_pairs(self, g: Any, i0: int, cols: Any) -> None:
        """Replace the GEMM values under their row's threshold (NaN included) by exact ones:
        the rows whose minimum is under it first (a cheap pass), then their pairs."""
        thr = self.threshold[i0 : i0 + g.shape[1]]
        rows = (g.amin(-1) >= thr).logical_not_().any(0).nonzero()[:, 0]
        if rows.numel() == 0:
            return
        low = (g[:, rows] >= thr[rows, None]).logical_not_()
        batch, pos, col = low.nonzero().unbind(-1)
        row = rows[pos]
        a, b = self.pair.a, self.pair.b
        a_rows = a[batch if a.shape[0] > 1 else 0, row + i0]
        b_rows = b[batch if b.shape[0] > 1 else 0, _column_ids(cols, col)]
        g[batch, row, col] = exact_sqdist(a_rows, b_rows)


def _column_ids(cols: Any, pos: Any) -> Any:
    """The column indices of the tile positions ``pos``: ``cols`` is a slice or the indices."""
    return pos + cols.start if isinstance(cols, slice) else cols[pos]


class SqDistGemm(Node):
    """|a - b|^2 for ``a`` depending on i only and ``b`` on j only, through one GEMM.

    The GEMM runs on augmented rows of centred points, [a, |a|^2, 1] . [-2b, 1, |b|^2], so
    that the tile comes out complete from one matrix product. The node's scale is unknown
    (what reads it may be any function), so each pair keeps the GEMM value only where the
    rounding bound is at most ``tolerance`` of it; the others (near pairs, where the
    expansion cancels, and negative values among them) take the exact difference.
    """

    arity = 2

    def __init__(self, a: Node, b: Node) -> None:
        super().__init__(a, b, dim=1)

    def prepare(self, a: Any, b: Any) -> GemmOperands:
        """The request's GEMM from the children's values over all rows (tile layout)."""
        pair = CentredPair(_rows(a), _cols(b))
        b_sq = (pair.b_c * pair.b_c).sum(-1, keepdim=True)
        b_aug = torch.cat((-2.0 * pair.b_c, torch.ones_like(b_sq), b_sq), dim=-1)
        threshold = (pair.error / tolerance(a.dtype)).to(a.dtype)
        operands = (augmented_rows(pair.a_c), b_aug)
        return GemmOperands(pair, operands, (1.0, 0.0), pair.bad_rows, threshold)


class ExpArgGemm(Node):
    """``scale * factor * |a - b|^2 + shift`` (shift depending on j only, or on parameters,
    or a constant; factor a scalar of parameters, or 1) through one GEMM, for the argument
    of an exponential (the Gaussian kernel, a softmin's log-sum-exp).

    The scale and shift ride on the augmented rows of centred points, [a, |a|^2, 1] .
    [-2 s b, s, s |b|^2 + t] (s = scale * factor), which saves the passes of the scalar
    steps over the tile. The kernel's scale is ``1 / |s|``: rows whose rounding bound times
    ``|s|`` exceeds ``tolerance`` take the exact difference (:mod:`lazymat_torch.centred`).
    There is no clamp: exp is smooth, and a distance that rounding takes a few ulps below
    zero moves the exponential as little as any other rounding of the GEMM.
    """

    __slots__ = ("scale",)
    scale: float
    arity = 4

    def __init__(self, a: Node, b: Node, shift: Node, factor: Node, scale: float) -> None:
        object.__setattr__(self, "scale", float(scale))
        super().__init__(a, b, shift, factor, dim=1)

    def static(self) -> tuple[Any, ...]:
        return (self.scale,)

    def prepare(self, a: Any, b: Any, shift: Any, factor: Any) -> GemmOperands:
        """The request's GEMM from the children's values over all rows (tile layout)."""
        pair = CentredPair(_rows(a), _cols(b))
        if shift.ndim == 4:  # (B|1, 1, M|1, 1): of j, or of parameters
            shift = _cols(shift)[..., 0]
            shift = shift.expand(shift.shape[0], pair.b.shape[-2])
        else:  # a constant
            shift = float(shift.reshape(()))
        scale = self.scale * factor.reshape(-1, 1, 1)  # (B|1, 1, 1)
        operands = self.augmented(pair.a_c, pair.b_c, shift, scale)
        loose = ~(float(scale.abs().max()) * pair.error <= tolerance(a.dtype))
        return GemmOperands(pair, operands, (scale, shift), pair.bad_rows | loose)

    def augmented(self, a: Any, b: Any, shift: Any, scale: Any) -> tuple[Any, Any]:
        """The GEMM's operands (B|1, N, D + 2) and (B|1, M, D + 2) from the centred points
        ``a`` (B|1, N, D), ``b`` (B|1, M, D), the ``shift`` (B|1, M) or a number and the
        ``scale`` (B|1, 1, 1)."""
        b_sq = (b * b).sum(-1, keepdim=True)
        last = scale * b_sq + (shift if isinstance(shift, float) else shift[..., None])
        batch = last.shape[0]  # the batch of b, scale and shift broadcast
        cols = (-2.0 * scale * b, scale.expand(batch, b.shape[-2], 1), last)
        b_aug = torch.cat([c.expand(batch, *c.shape[1:]) for c in cols], dim=-1)
        return augmented_rows(a), b_aug


def _affine(node: Node, side: dict[Node, Side]) -> tuple[SqDistGemm, float, Node | None, Node | None] | None:
    """(d, c, q, t) when ``node`` is ``c q d + t`` through scalar steps, with d a SqDistGemm,
    c a number, q None (1) or a scalar formula of parameters (its value known at run time),
    and t None (0) or a scalar formula of j only (or of parameters, or a constant), else None.
    (A zero shift stays None: ``0 * q`` would be NaN for an infinite parameter.)"""
    if isinstance(node, SqDistGemm):
        return node, 1.0, None, None
    if isinstance(node, Neg):
        inner = _affine(node.children[0], side)
        if inner is None:
            return None
        d, c, q, t = inner
        return d, -c, q, None if t is None else Neg(t)
    if not isinstance(node, (Add, Sub, Mul, Div)):
        return None
    a, b = node.children
    if isinstance(node, (Mul, Div)):  # times or over a factor of parameters (or a constant)
        for x, w in ((a, b), (b, a)) if isinstance(node, Mul) else ((a, b),):
            if w.dim != 1 or side[w] != frozenset():
                continue
            inner = _affine(x, side)
            if inner is None:
                continue
            d, c, q, t = inner
            t = None if t is None else type(node)(t, w)
            if isinstance(w, Const):
                return d, c * w.value if isinstance(node, Mul) else c / w.value, q, t
            if isinstance(node, Mul):
                return d, c, w if q is None else Mul(q, w), t
            return d, c, Div(Const(1.0) if q is None else q, w), t
        return None
    for x, w, x_first in ((a, b, True), (b, a, False)):  # plus or minus a shift
        if w.dim != 1 or side[w] not in (J_ONLY, frozenset()):
            continue
        inner = _affine(x, side)
        if inner is None:
            continue
        d, c, q, t = inner
        if isinstance(node, Add):
            return d, c, q, w if t is None else Add(t, w)
        if x_first:
            return d, c, q, Neg(w) if t is None else Sub(t, w)
        return d, -c, q, w if t is None else Sub(w, t)
    return None


def fold_exp_arguments(formula: Node, lse: bool) -> Node:
    """``formula`` (GEMM nodes in) with the arguments of its exponentials, and the whole
    formula for a log-sum-exp (``lse``), folded into :class:`ExpArgGemm` where they are
    affine in one squared distance."""
    side = sides(formula)

    def fold(node: Node) -> Node | None:
        found = _affine(node, side)
        if found is None:
            return None
        d, c, q, t = found
        shift, factor = Const(0.0) if t is None else t, Const(1.0) if q is None else q
        return ExpArgGemm(d.children[0], d.children[1], shift, factor, c)

    def match(node: Node) -> Node | None:
        if isinstance(node, Exp):
            folded = fold(node.children[0])
            return None if folded is None else Exp(folded)
        return None

    if lse:
        folded = fold(formula)
        if folded is not None:
            return folded
    return substitute(formula, match)


class DotGemm(Node):
    """<a, b> for ``a`` depending on i only and ``b`` on j only, through one GEMM."""

    arity = 2

    def __init__(self, a: Node, b: Node) -> None:
        super().__init__(a, b, dim=1)

    def eval(self, ctx: Any, a: Any, b: Any) -> Any:
        return _matmul_t(_rows(a), _cols(b))[..., None]


def split_sides(a: Node, b: Node, side: dict[Node, Side]) -> tuple[Node, Node] | None:
    """(i-side, j-side) when one operand depends on i only and the other on j only."""
    if side[a] == I_ONLY and side[b] == J_ONLY:
        return a, b
    if side[b] == I_ONLY and side[a] == J_ONLY:
        return b, a
    return None


def rewrite_gemm(formula: Node) -> Node:
    """``formula`` with its squared distances and dot products between i and j as GEMM nodes."""
    side = sides(formula)
    # |a|^2 + |b|^2 - 2<a, b> cancels near a = b; a square root (or a log) of it would
    # blow that rounding up (|x - y| in p = 1 costs and energy distances): keep those exact
    # (also through sums and products on the way, as in sqrt(|x - y|^2 + 1e-30))
    amplified: set[Node] = set()
    for node in reversed(formula.walk()):  # parents before children
        sensitive = isinstance(node, (Sqrt, Rsqrt, Log)) or (isinstance(node, PowConst) and node.p < 1)
        if sensitive or (node in amplified and isinstance(node, (Add, Sub, Neg, Mul, Div))):
            amplified.update(node.children)

    def match(node: Node) -> Node | None:
        if not isinstance(node, SumDim) or node.children[0].dim < 2 or node in amplified:
            return None
        inner = node.children[0]
        if isinstance(inner, Square) and isinstance(inner.children[0], Sub):
            a, b = inner.children[0].children
            pair = split_sides(a, b, side) if a.dim == b.dim else None
            return SqDistGemm(*pair) if pair else None
        if isinstance(inner, Mul):
            a, b = inner.children
            pair = split_sides(a, b, side) if a.dim == b.dim else None
            return DotGemm(*pair) if pair else None
        return None

    return substitute(formula, match)


def split_kernel_product(formula: Node) -> tuple[Node, Node] | None:
    """(k, w) when ``formula`` is ``k * w`` with k scalar and mixed, w depending on j only.

    A sum reduction of such a formula is a product of the k-tile with the w-tile.
    """
    if not isinstance(formula, Mul):
        return None
    side = sides(formula)
    a, b = formula.children
    for k, w in ((a, b), (b, a)):
        if k.dim == 1 and side[k] == MIXED and side[w] == J_ONLY and w.dim == formula.dim:
            return k, w
    return None
