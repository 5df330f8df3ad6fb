"""Operations on the inner vector: concatenation, slicing, small matrix products,
one-hot encoding, and the index mask used by the gradients of min/argmin and K-min.

Matrices of size d-by-e are stored row-major in a vector of dimension d*e, as in KeOps.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .algebra import mul, sub, sum_dim
from .functions import Maximum, Minimum, Rsqrt, Sqrt, power
from .leaves import Const
from .node import DimensionError, Node


class Concat(Node):
    """[a, b]: dims add up."""

    arity = 2
    keops = "Concat({0},{1})"

    def __init__(self, a: Node, b: Node) -> None:
        super().__init__(a, b, dim=a.dim + b.dim)

    def dense(self, grid: Any, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        lead = np.broadcast_shapes(a.shape[:-1], b.shape[:-1])
        return np.concatenate(
            [np.broadcast_to(a, (*lead, a.shape[-1])), np.broadcast_to(b, (*lead, b.shape[-1]))], -1
        )

    def eval(self, ctx: Any, a: Any, b: Any) -> Any:
        xp = ctx.xp
        lead_a, lead_b = tuple(a.shape[:-1]), tuple(b.shape[:-1])
        ndim = max(len(lead_a), len(lead_b))
        lead_a = (1,) * (ndim - len(lead_a)) + lead_a
        lead_b = (1,) * (ndim - len(lead_b)) + lead_b
        shape = tuple(max(s, t) for s, t in zip(lead_a, lead_b, strict=True))
        a = xp.broadcast_to(a, (*shape, a.shape[-1]))
        b = xp.broadcast_to(b, (*shape, b.shape[-1]))
        return xp.concat((a, b), axis=-1)

    def vjp(self, cot: Node) -> tuple[Node | None, ...]:
        a, b = self.children
        return Slice(cot, 0, a.dim), Slice(cot, a.dim, a.dim + b.dim)


class Slice(Node):
    """a[start:stop] of the inner vector."""

    __slots__ = ("start", "stop")
    start: int
    stop: int
    arity = 1
    keops = "Extract({0},{node.start},{node.dim})"

    def __init__(self, a: Node, start: int, stop: int) -> None:
        if not 0 <= start < stop <= a.dim:
            raise IndexError(
                f"slice [{start}:{stop}] is out of range for a formula of inner dimension {a.dim}"
            )
        object.__setattr__(self, "start", int(start))
        object.__setattr__(self, "stop", int(stop))
        super().__init__(a, dim=stop - start)

    def static(self) -> tuple[Any, ...]:
        return (self.start, self.stop)

    def eval(self, ctx: Any, a: Any) -> Any:
        return a[..., self.start : self.stop]

    def dense(self, grid: Any, a: np.ndarray) -> np.ndarray:
        return np.take(a, np.arange(self.start, self.stop), axis=-1)

    def vjp(self, cot: Node) -> tuple[Node | None, ...]:
        a = self.children[0]
        out = cot
        if self.start > 0:
            out = Concat(Const(0.0, self.start), out)
        if self.stop < a.dim:
            out = Concat(out, Const(0.0, a.dim - self.stop))
        return (out,)


def _other_side(A: Node, v: Node, op: str) -> int:
    """The matrix's other dimension: A.dim / v.dim for a row-major matrix A multiplied by v."""
    if A.dim % v.dim:
        raise DimensionError(f"{op}: matrix of dim {A.dim} is not a multiple of the vector's dim {v.dim}")
    return A.dim // v.dim


class MatVecMult(Node):
    """A @ v with A a d-by-e matrix (dim d*e, row-major) and v of dim e: result dim d."""

    arity = 2
    keops = "MatVecMult({0},{1})"

    def __init__(self, A: Node, v: Node) -> None:
        super().__init__(A, v, dim=_other_side(A, v, "matvecmult"))

    def dense(self, grid: Any, A: np.ndarray, v: np.ndarray) -> np.ndarray:
        matrix = A.reshape(*A.shape[:-1], self.dim, v.shape[-1])
        return np.einsum("...de,...e->...d", matrix, v)

    def eval(self, ctx: Any, A: Any, v: Any) -> Any:
        xp = ctx.xp
        d, e = self.dim, self.children[1].dim
        A = xp.reshape(A, A.shape[:-1] + (d, e))
        return xp.sum(A * v[..., None, :], axis=-1)

    def vjp(self, cot: Node) -> tuple[Node | None, ...]:
        A, v = self.children
        return TensorProd(cot, v), VecMatMult(cot, A)


class VecMatMult(Node):
    """u @ A with u of dim d and A a d-by-e matrix (dim d*e): result dim e."""

    arity = 2
    keops = "VecMatMult({0},{1})"

    def __init__(self, u: Node, A: Node) -> None:
        super().__init__(u, A, dim=_other_side(A, u, "vecmatmult"))

    def dense(self, grid: Any, u: np.ndarray, A: np.ndarray) -> np.ndarray:
        matrix = A.reshape(*A.shape[:-1], u.shape[-1], self.dim)
        return np.einsum("...d,...de->...e", u, matrix)

    def eval(self, ctx: Any, u: Any, A: Any) -> Any:
        xp = ctx.xp
        d, e = self.children[0].dim, self.dim
        A = xp.reshape(A, A.shape[:-1] + (d, e))
        return xp.sum(A * u[..., :, None], axis=-2)

    def vjp(self, cot: Node) -> tuple[Node | None, ...]:
        u, A = self.children
        return MatVecMult(A, cot), TensorProd(u, cot)


class TensorProd(Node):
    """Outer product a b^T (dims d and e): result dim d*e, row-major."""

    arity = 2
    keops = "TensorProd({0},{1})"

    def __init__(self, a: Node, b: Node) -> None:
        super().__init__(a, b, dim=a.dim * b.dim)

    def dense(self, grid: Any, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        outer = np.einsum("...d,...e->...de", a, b)
        return outer.reshape(*outer.shape[:-2], self.dim)

    def eval(self, ctx: Any, a: Any, b: Any) -> Any:
        xp = ctx.xp
        out = a[..., :, None] * b[..., None, :]
        return xp.reshape(out, out.shape[:-2] + (self.dim,))

    def vjp(self, cot: Node) -> tuple[Node | None, ...]:
        a, b = self.children
        return MatVecMult(cot, b), VecMatMult(a, cot)


class OneHot(Node):
    """One-hot encoding of round(a) (a of dim 1) in ``dim`` classes; not differentiable."""

    __slots__ = ("size",)
    size: int
    arity = 1
    differentiable = False

    def __init__(self, a: Node, size: int) -> None:
        if a.dim != 1:
            raise DimensionError(f"one_hot expects a formula of inner dimension 1, got {a.dim}")
        object.__setattr__(self, "size", int(size))
        super().__init__(a, dim=int(size))

    def static(self) -> tuple[Any, ...]:
        return (self.size,)

    def eval(self, ctx: Any, a: Any) -> Any:
        xp = ctx.xp
        classes = xp.arange(self.size, dtype=a.dtype, device=ctx.device)
        return xp.astype(xp.round(a) == classes, a.dtype)

    def dense(self, grid: Any, a: np.ndarray) -> np.ndarray:
        return np.equal(np.rint(a), np.arange(self.size)).astype(a.dtype)

    def vjp(self, cot: Node) -> tuple[Node | None, ...]:
        return (None,)


class IndexMatch(Node):
    """1.0 where the reduced index equals an entry of ``sel``, else 0.0.

    ``sel`` is an integer-valued variable indexed like the output (K entries per row);
    ``axis`` names the reduced index ("j" for a reduction over j). The result has the
    dimension of ``sel``: entry k is 1 where j == sel[k]. Used by the gradients of
    min/argmin and K-min, which flow through the selected indices only.
    """

    __slots__ = ("axis",)
    axis: str
    arity = 1
    differentiable = False

    def __init__(self, sel: Node, axis: str) -> None:
        if axis not in ("i", "j"):
            raise ValueError(f"IndexMatch axis must be 'i' or 'j', got {axis!r}")
        object.__setattr__(self, "axis", axis)
        super().__init__(sel, dim=sel.dim)

    def static(self) -> tuple[Any, ...]:
        return (self.axis,)

    def eval(self, ctx: Any, sel: Any) -> Any:
        xp = ctx.xp
        index = ctx.index(self.axis)  # integer array, broadcastable to the tile
        return xp.astype(index == xp.astype(sel, index.dtype), ctx.dtype)

    def dense(self, grid: Any, sel: np.ndarray) -> np.ndarray:
        return np.equal(grid.index(self.axis), np.trunc(sel)).astype(np.float64)

    def vjp(self, cot: Node) -> tuple[Node | None, ...]:
        return (None,)


# -- constructors of derived operations ---------------------------------------------------


def dot(a: Node, b: Node) -> Node:
    """<a, b>: dim 1."""
    if a.dim != b.dim:
        raise DimensionError(f"dot product of formulas of inner dimension {a.dim} and {b.dim}")
    return sum_dim(mul(a, b))


def sqnorm2(a: Node) -> Node:
    return sum_dim(power(a, 2.0))


def norm2(a: Node) -> Node:
    return Sqrt(sqnorm2(a))


def normalize(a: Node) -> Node:
    return mul(a, Rsqrt(sqnorm2(a)))


def sqdist(a: Node, b: Node) -> Node:
    if a.dim != b.dim:
        raise DimensionError(f"sqdist of formulas of inner dimension {a.dim} and {b.dim}")
    return sqnorm2(sub(a, b))


def weightedsqnorm(s: Node, x: Node) -> Node:
    """<x, S x> with S a scalar (dim 1), a diagonal (dim d) or a full d-by-d matrix."""
    d = x.dim
    if s.dim == 1:
        return mul(s, sqnorm2(x))
    if s.dim == d:
        return sum_dim(mul(s, power(x, 2.0)))
    if s.dim == d * d:
        return dot(x, MatVecMult(s, x))
    raise DimensionError(
        f"weightedsqnorm: weights of dim {s.dim} do not fit a vector of dim {d} (expected 1, {d} or {d * d})"
    )


def concat(a: Node, b: Node) -> Node:
    return Concat(a, b)


def elem(a: Node, k: int) -> Node:
    return Slice(a, k, k + 1)


def clamp(a: Node, lo: Node, hi: Node) -> Node:
    return Minimum(Maximum(a, lo), hi)
