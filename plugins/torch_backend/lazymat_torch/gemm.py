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
from lazymat.ir.functions import Log, PowConst, Rsqrt, Sqrt, Square
from lazymat.ir.leaves import Var
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
        a_sq = (a * a).sum(-1, keepdim=True)
        b_sq = (b * b).sum(-1, keepdim=True)
        a_aug = torch.cat((a, a_sq, torch.ones_like(a_sq)), dim=-1)
        b_aug = torch.cat((-2.0 * b, torch.ones_like(b_sq), b_sq), dim=-1)
        # rounding can push |a|^2 + |b|^2 - 2<a, b> below zero for nearby points
        return _matmul_t(a_aug, b_aug).clamp_min_(0.0)[..., None]


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
