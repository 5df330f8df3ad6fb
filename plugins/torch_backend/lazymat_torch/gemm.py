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
"""

from __future__ import annotations

from typing import Any

import torch

from lazymat.ir.algebra import Add, Div, Mul, Neg, Sub, SumDim
from lazymat.ir.functions import Exp, Log, PowConst, Rsqrt, Sqrt, Square
from lazymat.ir.leaves import Const, Var
from lazymat.ir.node import Node
from lazymat.ir.transform import substitute
from lazymat.ir.vector import IndexMatch

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


class SqDistGemm(Node):
    """|a - b|^2 for ``a`` depending on i only and ``b`` on j only, through one GEMM.

    The GEMM runs on augmented rows, [a, |a|^2, 1] . [-2b, 1, |b|^2], so that the tile
    comes out complete from one matrix product, without a second pass to add the norms.
    """

    arity = 2

    def __init__(self, a: Node, b: Node) -> None:
        super().__init__(a, b, dim=1)

    def eval(self, ctx: Any, a: Any, b: Any) -> Any:
        a, b = _rows(a), _cols(b)
        b_sq = (b * b).sum(-1, keepdim=True)
        a_aug = augmented_rows(a)
        b_aug = torch.cat((-2.0 * b, torch.ones_like(b_sq), b_sq), dim=-1)
        # rounding can push |a|^2 + |b|^2 - 2<a, b> below zero for nearby points
        return _matmul_t(a_aug, b_aug).clamp_min_(0.0)[..., None]


class ExpArgGemm(Node):
    """``scale * |a - b|^2 + shift`` (shift depending on j only, or a constant) through one
    GEMM, for the argument of an exponential (the Gaussian kernel, a softmin's log-sum-exp).

    The scale and shift ride on the augmented rows, [a, |a|^2, 1] .
    [-2 s b, s, s |b|^2 + t], which saves the passes of the scalar steps over the tile.
    Unlike :class:`SqDistGemm` there is no clamp: exp is smooth, and a distance that
    rounding takes a few ulps of |a|^2 below zero moves the exponential as little as any
    other rounding of the GEMM.
    """

    __slots__ = ("scale",)
    scale: float
    arity = 3

    def __init__(self, a: Node, b: Node, shift: Node, scale: float) -> None:
        object.__setattr__(self, "scale", float(scale))
        super().__init__(a, b, shift, dim=1)

    def static(self) -> tuple[Any, ...]:
        return (self.scale,)

    def eval(self, ctx: Any, a: Any, b: Any, shift: Any) -> Any:
        return _matmul_t(*self.augmented(a, b, shift))[..., None]

    def augmented(self, a: Any, b: Any, shift: Any) -> tuple[Any, Any]:
        """The GEMM's operands (B|1, Ti, D + 2) and (B|1, Tj, D + 2) from the tiles of the
        children: ``a`` (B|1, Ti, 1, D), ``b`` (B|1, 1, Tj, D), ``shift`` (B|1, 1|Tj, 1|Tj, 1)
        or a constant (1,)."""
        a, b, s = _rows(a), _cols(b), self.scale
        shift = _cols(shift) if shift.ndim == 4 else shift
        b_sq = (b * b).sum(-1, keepdim=True)
        a_aug = augmented_rows(a)
        b_aug = torch.cat((-2.0 * s * b, torch.full_like(b_sq, s), s * b_sq + shift), dim=-1)
        return a_aug, b_aug


def _affine(node: Node, side: dict[Node, Side]) -> tuple[SqDistGemm, float, Node] | None:
    """(d, s, t) when ``node`` is ``s * d + t`` through scalar steps, with d a SqDistGemm,
    s a number and t a scalar formula of j only (or a constant), else None."""
    if isinstance(node, SqDistGemm):
        return node, 1.0, Const(0.0)
    if isinstance(node, Neg):
        inner = _affine(node.children[0], side)
        return None if inner is None else (inner[0], -inner[1], Neg(inner[2]))
    if not isinstance(node, (Add, Sub, Mul, Div)):
        return None
    a, b = node.children
    if isinstance(node, (Mul, Div)) and isinstance(b, Const) and b.dim == 1:
        inner = _affine(a, side)
        if inner is None:
            return None
        c = b.value if isinstance(node, Mul) else 1.0 / b.value
        return inner[0], inner[1] * c, type(node)(inner[2], b)
    if isinstance(node, Mul) and isinstance(a, Const) and a.dim == 1:
        inner = _affine(b, side)
        return None if inner is None else (inner[0], inner[1] * a.value, Mul(a, inner[2]))
    if isinstance(node, (Add, Sub)):
        for x, w, x_first in ((a, b, True), (b, a, False)):
            if w.dim != 1 or side[w] not in (J_ONLY, frozenset()):
                continue
            inner = _affine(x, side)
            if inner is None:
                continue
            d, scale, t = inner
            if isinstance(node, Add):
                return d, scale, Add(t, w)
            return (d, scale, Sub(t, w)) if x_first else (d, -scale, Sub(w, t))
    return None


def fold_exp_arguments(formula: Node, lse: bool) -> Node:
    """``formula`` (GEMM nodes in) with the arguments of its exponentials, and the whole
    formula for a log-sum-exp (``lse``), folded into :class:`ExpArgGemm` where they are
    affine in one squared distance."""
    side = sides(formula)

    def fold(node: Node) -> Node | None:
        found = _affine(node, side)
        return (
            None
            if found is None
            else ExpArgGemm(found[0].children[0], found[0].children[1], found[2], found[1])
        )

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
