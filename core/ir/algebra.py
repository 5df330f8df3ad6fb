"""Arithmetic operations (+, -, *, /, negation, sum over the inner dimension).

Each class has a simplifying constructor function (``add``, ``mul``, ...) that folds
constants and removes neutral elements (x*1, x+0, 0*x); derivatives are written with these
functions so that symbolic gradients stay small.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .leaves import Const, is_const
from .node import Node, broadcast_dim


class SumDim(Node):
    """Sum of the entries of the inner vector: dim d -> dim 1."""

    arity = 1
    keops = "Sum({0})"

    def __init__(self, a: Node) -> None:
        super().__init__(a, dim=1)

    def eval(self, ctx: Any, a: Any) -> Any:
        return ctx.xp.sum(a, axis=-1, keepdims=True)

    def dense(self, grid: Any, a: np.ndarray) -> np.ndarray:
        return np.add.reduce(a, axis=-1, keepdims=True)

    def vjp(self, cot: Node) -> tuple[Node | None, ...]:
        return (broadcast_to(cot, self.children[0].dim),)


class Neg(Node):
    """-a."""

    arity = 1
    array_api, c, keops = "negative", "-{0}", "Minus({0})"

    def __init__(self, a: Node) -> None:
        super().__init__(a, dim=a.dim)

    def eval(self, ctx: Any, a: Any) -> Any:
        return -a

    def dense(self, grid: Any, a: np.ndarray) -> np.ndarray:
        return np.negative(a)

    def vjp(self, cot: Node) -> tuple[Node | None, ...]:
        return (neg(cot),)


class Add(Node):
    """a + b (inner dimensions equal, or one of them 1)."""

    arity = 2
    array_api, c, keops = "add", "{0} + {1}", "({0}+{1})"

    def __init__(self, a: Node, b: Node) -> None:
        super().__init__(a, b, dim=broadcast_dim("+", a, b))

    def eval(self, ctx: Any, a: Any, b: Any) -> Any:
        return a + b  # the operator form of ``array_api``

    def dense(self, grid: Any, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.add(a, b)

    def vjp(self, cot: Node) -> tuple[Node | None, ...]:
        a, b = self.children
        return unbroadcast(cot, a.dim), unbroadcast(cot, b.dim)


class Sub(Node):
    """a - b."""

    arity = 2
    array_api, c, keops = "subtract", "{0} - {1}", "({0}-{1})"

    def __init__(self, a: Node, b: Node) -> None:
        super().__init__(a, b, dim=broadcast_dim("-", a, b))

    def eval(self, ctx: Any, a: Any, b: Any) -> Any:
        return a - b  # the operator form of ``array_api``

    def dense(self, grid: Any, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.subtract(a, b)

    def vjp(self, cot: Node) -> tuple[Node | None, ...]:
        a, b = self.children
        return unbroadcast(cot, a.dim), unbroadcast(neg(cot), b.dim)


class Mul(Node):
    """a * b, element-wise."""

    arity = 2
    array_api, c, keops = "multiply", "{0} * {1}", "({0}*{1})"

    def __init__(self, a: Node, b: Node) -> None:
        super().__init__(a, b, dim=broadcast_dim("*", a, b))

    def eval(self, ctx: Any, a: Any, b: Any) -> Any:
        return a * b  # the operator form of ``array_api``

    def dense(self, grid: Any, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.multiply(a, b)

    def vjp(self, cot: Node) -> tuple[Node | None, ...]:
        a, b = self.children
        return unbroadcast(mul(cot, b), a.dim), unbroadcast(mul(cot, a), b.dim)


class Div(Node):
    """a / b, element-wise."""

    arity = 2
    array_api, c, keops = "divide", "{0} / {1}", "({0}/{1})"

    def __init__(self, a: Node, b: Node) -> None:
        super().__init__(a, b, dim=broadcast_dim("/", a, b))

    def eval(self, ctx: Any, a: Any, b: Any) -> Any:
        return a / b  # the operator form of ``array_api``

    def dense(self, grid: Any, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.divide(a, b)

    def vjp(self, cot: Node) -> tuple[Node | None, ...]:
        a, b = self.children
        da = div(cot, b)
        db = neg(div(mul(cot, self), b))
        return unbroadcast(da, a.dim), unbroadcast(db, b.dim)


# -- simplifying constructors -------------------------------------------------------------


def add(a: Node, b: Node) -> Node:
    """a + b, simplified (constants folded, + 0 dropped)."""
    dim = broadcast_dim("+", a, b)
    if isinstance(a, Const) and isinstance(b, Const):
        return Const(a.value + b.value, dim)
    if is_const(b, 0.0) and a.dim == dim:
        return a
    if is_const(a, 0.0) and b.dim == dim:
        return b
    if isinstance(b, Neg):
        return sub(a, b.children[0])
    return Add(a, b)


def sub(a: Node, b: Node) -> Node:
    """a - b, simplified."""
    dim = broadcast_dim("-", a, b)
    if isinstance(a, Const) and isinstance(b, Const):
        return Const(a.value - b.value, dim)
    if is_const(b, 0.0) and a.dim == dim:
        return a
    if is_const(a, 0.0) and b.dim == dim:
        return neg(b)
    return Sub(a, b)


def mul(a: Node, b: Node) -> Node:
    """a * b, simplified (constants first, * 1 dropped, * 0 folded)."""
    dim = broadcast_dim("*", a, b)
    if isinstance(a, Const) and isinstance(b, Const):
        return Const(a.value * b.value, dim)
    if is_const(a, 0.0) or is_const(b, 0.0):
        return Const(0.0, dim)
    if is_const(b, 1.0) and a.dim == dim:
        return a
    if is_const(a, 1.0) and b.dim == dim:
        return b
    if is_const(a, -1.0) and b.dim == dim:
        return neg(b)
    if is_const(b, -1.0) and a.dim == dim:
        return neg(a)
    if isinstance(b, Const) and not isinstance(a, Const):
        a, b = b, a  # constants first: a canonical order helps hashing
    return Mul(a, b)


def div(a: Node, b: Node) -> Node:
    """a / b, simplified."""
    dim = broadcast_dim("/", a, b)
    if isinstance(a, Const) and isinstance(b, Const) and b.value != 0.0:
        return Const(a.value / b.value, dim)
    if is_const(b, 1.0) and a.dim == dim:
        return a
    if is_const(a, 0.0) and b.dim <= dim:
        return Const(0.0, dim)
    return Div(a, b)


def neg(a: Node) -> Node:
    """-a, simplified (double negation dropped)."""
    if isinstance(a, Const):
        return Const(-a.value, a.dim)
    if isinstance(a, Neg):
        return a.children[0]
    return Neg(a)


def sum_dim(a: Node) -> Node:
    """The sum of the inner vector (identity on dimension 1)."""
    if a.dim == 1:
        return a
    if isinstance(a, Const):
        return Const(a.value * a.dim, 1)
    return SumDim(a)


def broadcast_to(a: Node, dim: int) -> Node:
    """A dim-1 formula repeated to ``dim`` entries (identity when dims already agree)."""
    if a.dim == dim:
        return a
    if isinstance(a, Const):
        return Const(a.value, dim)
    return mul(a, Const(1.0, dim)) if a.dim == 1 else a


def unbroadcast(cot: Node, dim: int) -> Node:
    """Cotangent of an operand of dimension ``dim`` that was broadcast to ``cot.dim``."""
    if cot.dim == dim:
        return cot
    return sum_dim(cot)
