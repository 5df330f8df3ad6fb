"""KeOps operations written with several IR nodes: permutations, tensor contractions,
extrema over the inner vector, complex arithmetic and symbolic derivatives.

KeOps has one class per operation; lazymat's IR keeps a smaller set of primitives and
builds the rest here, from nodes every engine already handles (the C code generator lays
slices and concatenations out as renamings, so a permutation costs nothing in a compiled
kernel). Gradients then come from the primitives' own derivatives.

- :func:`permute` reorders the inner vector (runs of consecutive entries become one slice);
- :func:`tensordot` is KeOps' ``TensorDot(a, b, dimfa, dimfb, contfa, contfb, perm)``:
  both operands reordered into matrices, then one vector-matrix product per row of ``a``
  (a tensor product when nothing is contracted), then the output permutation. KeOps'
  ``perm`` lists where each axis of the plain contraction goes: the result is
  ``pre.transpose(argsort(perm))`` with ``pre`` laid out as numpy's ``tensordot``;
  :func:`kron` is the tensor dot that interleaves the axes;
- :func:`inner_max`, :func:`inner_argmax` and their min twins reduce the inner vector
  (the first extremum wins ties, as in KeOps);
- a complex formula is a pair (real part, imaginary part) of real formulas
  (:class:`Complex`); KeOps' interleaved layout [re0, im0, re1, im1, ...] converts with
  :func:`split_complex` and :func:`join_complex`;
- :func:`grad`, :func:`diff`, :func:`grad_matrix`, :func:`divergence` and
  :func:`laplacian` are KeOps' ``Grad``, ``Diff``, ``GradMatrix``, ``Divergence`` and
  ``Laplacian``, from the IR's symbolic VJP.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lazymat.autodiff import directional_derivative
from lazymat.ir import functions as fn
from lazymat.ir import special as sp
from lazymat.ir.algebra import add, div, mul, neg, sub, sum_dim
from lazymat.ir.leaves import Const, Var
from lazymat.ir.node import DimensionError, Node
from lazymat.ir.transform import substitute, vjp
from lazymat.ir.vector import Concat, Slice, TensorProd, VecMatMult


def concat_all(parts: Sequence[Node]) -> Node:
    """The concatenation of ``parts`` as a balanced tree (short dependency chains)."""
    if len(parts) == 1:
        return parts[0]
    half = len(parts) // 2
    return Concat(concat_all(parts[:half]), concat_all(parts[half:]))


def scalars(a: Node) -> list[Node]:
    """The entries of the inner vector, as formulas of dimension 1."""
    return [a] if a.dim == 1 else [Slice(a, k, k + 1) for k in range(a.dim)]


def permute(a: Node, order: Any) -> Node:
    """out[k] = a[order[k]] for a sequence of ints ``order`` (any index map: runs of
    consecutive indices become one slice)."""
    order = [int(k) for k in order]
    if order == list(range(a.dim)):
        return a
    if any(not 0 <= k < a.dim for k in order):
        raise IndexError(f"permutation {order} out of range for a formula of inner dimension {a.dim}")
    parts: list[Node] = []
    start = 0
    for k in range(1, len(order) + 1):
        if k == len(order) or order[k] != order[k - 1] + 1:
            lo, hi = order[start], order[k - 1] + 1
            parts.append(a if (lo, hi) == (0, a.dim) else Slice(a, lo, hi))
            start = k
    return concat_all(parts)


# -- tensor contractions --------------------------------------------------------------------


def _check_shape(a: Node, dims: Sequence[int], name: str) -> None:
    if int(np.prod(dims)) != a.dim or any(d < 1 for d in dims):
        raise DimensionError(f"{name}: shape {list(dims)} does not fit a formula of inner dimension {a.dim}")


def tensordot(
    a: Node,
    b: Node,
    dimfa: Sequence[int],
    dimfb: Sequence[int],
    contfa: Sequence[int],
    contfb: Sequence[int],
    perm: Sequence[int] | None = None,
) -> Node:
    """KeOps' ``TensorDot``: ``a`` and ``b`` seen as row-major tensors of shapes ``dimfa`` and
    ``dimfb``, contracted over the axis pairs (``contfa[k]``, ``contfb[k]``); see the module doc."""
    dimfa, dimfb = [int(d) for d in dimfa], [int(d) for d in dimfb]
    contfa, contfb = [int(c) for c in contfa], [int(c) for c in contfb]
    _check_shape(a, dimfa, "TensorDot")
    _check_shape(b, dimfb, "TensorDot")
    if len(contfa) != len(contfb) or any(dimfa[p] != dimfb[q] for p, q in zip(contfa, contfb, strict=True)):
        raise DimensionError(
            f"TensorDot: contracted axes {contfa} of {dimfa} and {contfb} of {dimfb} do not match in size"
        )
    keep_a = [k for k in range(len(dimfa)) if k not in contfa]
    keep_b = [k for k in range(len(dimfb)) if k not in contfb]
    n_out = len(keep_a) + len(keep_b)
    perm = list(range(n_out)) if perm is None or len(perm) == 0 else [int(p) for p in perm]
    if sorted(perm) != list(range(n_out)):
        raise ValueError(f"TensorDot: {perm} is not a permutation of the {n_out} output axes")
    contracted = int(np.prod([dimfa[k] for k in contfa]))
    rows = int(np.prod([dimfa[k] for k in keep_a]))
    # a as a (rows x contracted) matrix, b as a (contracted x cols) matrix, both row-major
    a_mat = permute(a, np.arange(a.dim).reshape(dimfa).transpose(keep_a + contfa).reshape(-1))
    b_mat = permute(b, np.arange(b.dim).reshape(dimfb).transpose(contfb + keep_b).reshape(-1))
    if contracted == 1:
        pre = TensorProd(a_mat, b_mat)
    else:
        pre = concat_all(
            [VecMatMult(Slice(a_mat, r * contracted, (r + 1) * contracted), b_mat) for r in range(rows)]
        )
    pre_shape = [dimfa[k] for k in keep_a] + [dimfb[k] for k in keep_b]
    if not pre_shape:
        return pre
    order = np.arange(pre.dim).reshape(pre_shape).transpose(np.argsort(perm)).reshape(-1)
    return permute(pre, order)


def kron(a: Node, b: Node, dimfa: Sequence[int], dimfb: Sequence[int]) -> Node:
    """KeOps' ``Kron``: the Kronecker product of tensors with the same number of axes (numpy's kron)."""
    if len(dimfa) != len(dimfb):
        raise DimensionError(f"Kron: shapes {list(dimfa)} and {list(dimfb)} have different numbers of axes")
    n = len(dimfa)
    return tensordot(a, b, dimfa, dimfb, [], [], list(range(0, 2 * n, 2)) + list(range(1, 2 * n, 2)))


# -- extrema over the inner vector ------------------------------------------------------------


def _tree(parts: list[Node], combine: Callable[[Node, Node], Node]) -> Node:
    while len(parts) > 1:
        parts = [combine(parts[k], parts[k + 1]) for k in range(0, len(parts) - 1, 2)] + (
            [parts[-1]] if len(parts) % 2 else []
        )
    return parts[0]


def inner_max(a: Node) -> Node:
    """max over the entries of the inner vector (dim 1)."""
    return _tree(scalars(a), fn.Maximum)


def inner_min(a: Node) -> Node:
    return _tree(scalars(a), fn.Minimum)


def _inner_arg(a: Node, better: Callable[[Node, Node], Node]) -> Node:
    entries = scalars(a)
    best, index = entries[0], Const(0.0)
    for k, entry in enumerate(entries[1:], start=1):
        wins = better(entry, best)  # 1.0 where strictly better: the first extremum keeps ties
        index = add(index, mul(wins, sub(Const(float(k)), index)))
        best = fn.IfElse(sub(wins, Const(0.5)), entry, best)
    return index


def inner_argmax(a: Node) -> Node:
    """The index (a float, as KeOps') of the first largest entry of the inner vector."""
    return _inner_arg(a, lambda u, v: sp.LessThan(v, u))


def inner_argmin(a: Node) -> Node:
    return _inner_arg(a, sp.LessThan)


# -- complex formulas -----------------------------------------------------------------------


@dataclass(frozen=True)
class Complex:
    """A complex formula: its real and imaginary parts (real formulas of equal dimension)."""

    re: Node
    im: Node

    @property
    def dim(self) -> int:
        """The number of complex entries."""
        return self.re.dim

    def __add__(self, o: Complex) -> Complex:
        return Complex(add(self.re, o.re), add(self.im, o.im))

    def __sub__(self, o: Complex) -> Complex:
        return Complex(sub(self.re, o.re), sub(self.im, o.im))

    def __mul__(self, o: Complex) -> Complex:
        return Complex(
            sub(mul(self.re, o.re), mul(self.im, o.im)), add(mul(self.re, o.im), mul(self.im, o.re))
        )

    def __truediv__(self, o: Complex) -> Complex:
        return (self * o.conj()).scale(div(Const(1.0), o.abs2()))

    def __neg__(self) -> Complex:
        return Complex(neg(self.re), neg(self.im))

    def scale(self, r: Node) -> Complex:
        """Times a real formula."""
        return Complex(mul(self.re, r), mul(self.im, r))

    def conj(self) -> Complex:
        return Complex(self.re, neg(self.im))

    def abs2(self) -> Node:
        return add(fn.Square(self.re), fn.Square(self.im))

    def abs(self) -> Node:
        return fn.Sqrt(self.abs2())

    def angle(self) -> Node:
        return fn.Atan2(self.im, self.re)

    def exp(self) -> Complex:
        return exp1j(self.im).scale(fn.Exp(self.re))

    def sum(self) -> Complex:
        return Complex(sum_dim(self.re), sum_dim(self.im))

    def broadcast(self, dim: int) -> Complex:
        """A complex scalar repeated ``dim`` times (KeOps' ``ComplexSumT``)."""
        one = Const(1.0, dim)
        return Complex(mul(self.re, one), mul(self.im, one))

    def stacked(self) -> Node:
        """[re, im]: the layout in which lazymat reduces complex formulas."""
        return Concat(self.re, self.im)


def real(a: Node) -> Complex:
    return Complex(a, Const(0.0, a.dim))


def imag(a: Node) -> Complex:
    return Complex(Const(0.0, a.dim), a)


def exp1j(a: Node) -> Complex:
    """exp(1j a) for a real formula."""
    return Complex(fn.Cos(a), fn.Sin(a))


def split_complex(a: Node) -> Complex:
    """KeOps' interleaved layout [re0, im0, re1, im1, ...] as a :class:`Complex`."""
    if a.dim % 2:
        raise DimensionError(f"a complex formula has an even inner dimension, got {a.dim}")
    return Complex(permute(a, range(0, a.dim, 2)), permute(a, range(1, a.dim, 2)))


def join_complex(z: Complex) -> Node:
    """A :class:`Complex` in KeOps' interleaved layout."""
    order = [k // 2 + (k % 2) * z.dim for k in range(2 * z.dim)]
    return permute(Concat(z.re, z.im), order)


# -- symbolic derivatives ---------------------------------------------------------------------


def _as_var(v: Node, what: str) -> Var:
    if not isinstance(v, Var):
        raise TypeError(f"{what} differentiates with respect to a variable, got the formula {v!r}")
    return v


def grad(f: Node, v: Node, e: Node) -> Node:
    """KeOps' ``Grad(f, v, e)``: (df/dv)^T e, of dimension v.dim (zeros if f does not use v)."""
    var = _as_var(v, "Grad")
    if e.dim != f.dim:
        raise DimensionError(f"Grad: the input e has dimension {e.dim}, the formula {f.dim}")
    g = vjp(f, var, e)
    return Const(0.0, var.dim) if g is None else g


def diff(f: Node, v: Node, u: Node) -> Node:
    """KeOps' ``Diff(f, v, u)``: the differential of f at v applied to u (dimension f.dim)."""
    var = _as_var(v, "Diff")
    if u.dim != var.dim:
        raise DimensionError(f"Diff: the direction has dimension {u.dim}, the variable {var.dim}")
    probe = Var(-2, "i", var.dim)  # a placeholder direction, substituted below
    d = directional_derivative(f, [(var, probe)])
    if d is None:
        return Const(0.0, f.dim)
    return substitute(d, lambda n: u if n == probe else None)


def grad_matrix(f: Node, v: Node) -> Node:
    """KeOps' ``GradMatrix(f, v)``: the gradients of the f.dim entries of f, concatenated."""
    return concat_all([grad(f, v, unit(f.dim, k)) for k in range(f.dim)])


def unit(dim: int, k: int) -> Node:
    """The k-th vector of the standard basis of dimension ``dim``, as a constant formula."""
    parts = [Const(0.0, k)] if k else []
    parts.append(Const(1.0))
    if dim - k - 1:
        parts.append(Const(0.0, dim - k - 1))
    return concat_all(parts)


def divergence(f: Node, v: Node) -> Node:
    """KeOps' ``Divergence(f, v)``: sum_k d f_k / d v_k (f and v of the same dimension)."""
    var = _as_var(v, "Divergence")
    if f.dim != var.dim:
        raise DimensionError(f"Divergence: the formula has dimension {f.dim}, the variable {var.dim}")
    terms = [scalars(grad(f, var, unit(f.dim, k)))[k] for k in range(f.dim)]
    return _tree(terms, add)


def laplacian(f: Node, v: Node) -> Node:
    """KeOps' ``Laplacian(f, v)``: the divergence of the gradient of a scalar formula."""
    if f.dim != 1:
        raise DimensionError(f"Laplacian is for scalar formulas, got inner dimension {f.dim}")
    return divergence(grad(f, v, Const(1.0)), v)


# -- sequences and splines --------------------------------------------------------------------


def _softmin(values: Sequence[Node], gamma: Node) -> Node:
    """-gamma log sum exp(-v / gamma), shifted by the smallest v (KeOps' soft-DTW step)."""
    low = _tree(list(values), fn.Minimum)
    total = _tree([fn.Exp(div(sub(low, v), gamma)) for v in values], add)
    return sub(low, mul(gamma, fn.Log(total)))


def soft_dtw_sqdist(x: Node, y: Node, gamma: Node) -> Node:
    """KeOps' ``SoftDTW_SqDist(x, y, gamma)``: the soft dynamic-time-warping cost of the
    sequences x (x.dim samples) and y with squared differences, smoothing gamma (dim 1).

    r[i][j] = (x_i - y_j)^2 + softmin(r[i-1][j-1], r[i-1][j], r[i][j-1]); the first row and
    column accumulate plain sums, as in KeOps. The graph has x.dim * y.dim steps.
    """
    if gamma.dim != 1:
        raise DimensionError(f"SoftDTW_SqDist: gamma is a scalar, got inner dimension {gamma.dim}")
    xs, ys = scalars(x), scalars(y)
    cost = [[fn.Square(sub(a, b)) for b in ys] for a in xs]
    r: list[list[Node]] = [[cost[0][0]]]
    for i in range(1, len(xs)):
        r.append([add(cost[i][0], r[i - 1][0])])
    for j in range(1, len(ys)):
        r[0].append(add(cost[0][j], r[0][j - 1]))
        for i in range(1, len(xs)):
            r[i].append(add(cost[i][j], _softmin([r[i - 1][j - 1], r[i - 1][j], r[i][j - 1]], gamma)))
    return r[-1][-1]


def _ratio(x: Node, lo: Node, hi: Node) -> Node:
    """(x - lo) / (hi - lo) where lo < hi, else 0 (KeOps' De Boor ratio)."""
    ordered = sp.LessThan(lo, hi)
    return mul(ordered, div(sub(x, lo), add(sub(hi, lo), sp.Equal(lo, hi))))


def bspline(knots: Node, x: Node, order: int) -> Node:
    """KeOps' ``BSpline(knots, x, order)``: the knots.dim - order - 1 B-spline basis functions
    of degree ``order`` at the scalar x (De Boor's recursion, half-open support [t_j, t_j+1))."""
    if x.dim != 1 or order < 0 or knots.dim < order + 2:
        raise DimensionError(
            f"BSpline(knots, x, order) needs a scalar x, order >= 0 and at least order + 2 knots; "
            f"got x of dim {x.dim}, order {order}, {knots.dim} knots"
        )
    t = scalars(knots)
    basis = [mul(sp.LessOrEqual(t[j], x), sp.LessThan(x, t[j + 1])) for j in range(len(t) - 1)]
    for k in range(1, order + 1):
        basis = [
            add(
                mul(_ratio(x, t[i], t[i + k]), basis[i]),
                mul(sub(Const(1.0), _ratio(x, t[i + 1], t[i + k + 1])), basis[i + 1]),
            )
            for i in range(len(basis) - 1)
        ]
    return concat_all(basis)
