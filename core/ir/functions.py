"""Element-wise mathematical functions, each with its own derivative.

Non-smooth functions (abs, sign, step, relu, min/max, ifelse) take the usual
almost-everywhere derivative; ties in min/max send the gradient to the first operand.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .algebra import add, div, mul, neg, sub, unbroadcast
from .leaves import Const
from .node import Node, broadcast_dim


class Unary(Node):
    """An element-wise function of one formula; subclasses give ``derivative`` and its spellings."""

    arity = 1

    def __init__(self, a: Node) -> None:
        super().__init__(a, dim=a.dim)

    def derivative(self) -> Node | None:
        """f'(a) as a formula, or None when it is zero almost everywhere."""
        raise NotImplementedError

    def vjp(self, cot: Node) -> tuple[Node | None, ...]:
        d = self.derivative()
        return (None if d is None else mul(cot, d),)


class Exp(Unary):
    """exp(a)."""

    array_api, c, keops = "exp", "lm_exp({0})", "Exp({0})"

    def dense(self, grid: Any, a: np.ndarray) -> np.ndarray:
        return np.exp(a)

    def derivative(self) -> Node | None:
        return self


class Log(Unary):
    """log(a) (NaN below 0, -inf at 0)."""

    array_api, c, keops = "log", "lm_log({0})", "Log({0})"

    def dense(self, grid: Any, a: np.ndarray) -> np.ndarray:
        return np.log(a)

    def derivative(self) -> Node | None:
        return div(Const(1.0), self.children[0])


class Sin(Unary):
    """sin(a)."""

    array_api, c, keops = "sin", "lm_sin({0})", "Sin({0})"

    def dense(self, grid: Any, a: np.ndarray) -> np.ndarray:
        return np.sin(a)

    def derivative(self) -> Node | None:
        return Cos(self.children[0])


class Cos(Unary):
    """cos(a)."""

    array_api, c, keops = "cos", "lm_cos({0})", "Cos({0})"

    def dense(self, grid: Any, a: np.ndarray) -> np.ndarray:
        return np.cos(a)

    def derivative(self) -> Node | None:
        return neg(Sin(self.children[0]))


class Sqrt(Unary):
    """sqrt(a) (NaN below 0)."""

    array_api, c, keops = "sqrt", "lm_sqrt({0})", "Sqrt({0})"

    def dense(self, grid: Any, a: np.ndarray) -> np.ndarray:
        return np.sqrt(a)

    def derivative(self) -> Node | None:
        return mul(Const(0.5), Rsqrt(self.children[0]))


class Rsqrt(Unary):
    """1 / sqrt(a)."""

    c, keops = "(lm_real)1 / lm_sqrt({0})", "Rsqrt({0})"

    def eval(self, ctx: Any, a: Any) -> Any:
        return 1.0 / ctx.xp.sqrt(a)

    def dense(self, grid: Any, a: np.ndarray) -> np.ndarray:
        return np.reciprocal(np.sqrt(a))

    def derivative(self) -> Node | None:
        return mul(Const(-0.5), div(self, self.children[0]))


class Abs(Unary):
    """``|a|``."""

    array_api, c, keops = "abs", "lm_fabs({0})", "Abs({0})"

    def dense(self, grid: Any, a: np.ndarray) -> np.ndarray:
        return np.abs(a)

    def derivative(self) -> Node | None:
        return Sign(self.children[0])


class Sign(Unary):
    """-1, 0 or 1 (NaN stays NaN)."""

    differentiable = False
    array_api, keops = "sign", "Sign({0})"
    c = "({0} > 0 ? (lm_real)1 : ({0} < 0 ? (lm_real)-1 : {0}))"

    def dense(self, grid: Any, a: np.ndarray) -> np.ndarray:
        return np.sign(a)

    def derivative(self) -> Node | None:
        return None


class Step(Unary):
    """1 where a >= 0, else 0 (NaN stays NaN)."""

    differentiable = False
    c, keops = "(lm_real)({0} >= 0) + (lm_real)0 * {0}", "Step({0})"

    def eval(self, ctx: Any, a: Any) -> Any:
        return ctx.xp.astype(a >= 0, a.dtype) + 0 * a

    def dense(self, grid: Any, a: np.ndarray) -> np.ndarray:
        return np.greater_equal(a, 0).astype(a.dtype) + 0.0 * a  # 0 * inf: Step(+-inf) is NaN too

    def derivative(self) -> Node | None:
        return None


class Relu(Unary):
    """max(a, 0) (NaN stays NaN)."""

    c, keops = "(({0} > 0 || {0} != {0}) ? {0} : (lm_real)0)", "ReLU({0})"

    def eval(self, ctx: Any, a: Any) -> Any:
        return ctx.xp.maximum(a, ctx.xp.zeros_like(a))

    def dense(self, grid: Any, a: np.ndarray) -> np.ndarray:
        return np.maximum(a, 0.0)  # propagates NaN

    def derivative(self) -> Node | None:
        return Step(self.children[0])


class Square(Unary):
    """a * a."""

    array_api, c, keops = "square", "{0} * {0}", "Square({0})"

    def dense(self, grid: Any, a: np.ndarray) -> np.ndarray:
        return np.power(a, 2)

    def derivative(self) -> Node | None:
        return mul(Const(2.0), self.children[0])


class Tanh(Unary):
    """tanh(a)."""

    array_api, c = "tanh", "lm_tanh({0})"
    #: KeOps has no Tanh: 1 - 2 / (exp(2a) + 1)
    keops = "(IntCst(1)-IntCst(2)/(Exp(IntCst(2)*{0})+IntCst(1)))"

    def dense(self, grid: Any, a: np.ndarray) -> np.ndarray:
        return np.tanh(a)

    def derivative(self) -> Node | None:
        return sub(Const(1.0), Square(self))


class PowConst(Node):
    """a ** p for a constant real exponent p (integer exponents accept negative a)."""

    __slots__ = ("p",)
    p: float
    arity = 1

    def __init__(self, a: Node, p: float) -> None:
        object.__setattr__(self, "p", float(p))
        super().__init__(a, dim=a.dim)

    def static(self) -> tuple[Any, ...]:
        return (self.p,)

    def eval(self, ctx: Any, a: Any) -> Any:
        return ctx.xp.pow(a, self.p)

    def dense(self, grid: Any, a: np.ndarray) -> np.ndarray:
        return np.power(a, self.p)

    def vjp(self, cot: Node) -> tuple[Node | None, ...]:
        a = self.children[0]
        return (mul(cot, mul(Const(self.p), power(a, self.p - 1.0))),)


class Minimum(Node):
    """Element-wise minimum (ties send the gradient to ``a``; NaN wins)."""

    arity = 2
    array_api, c = "minimum", "(({0} < {1} || {0} != {0}) ? {0} : {1})"
    keops = "IfElse(({1}-{0}),{0},{1})"

    def __init__(self, a: Node, b: Node) -> None:
        super().__init__(a, b, dim=broadcast_dim("minimum", a, b))

    def dense(self, grid: Any, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.minimum(a, b)

    def vjp(self, cot: Node) -> tuple[Node | None, ...]:
        a, b = self.children
        first = sub(b, a)  # >= 0 where a is selected
        return (
            unbroadcast(IfElse(first, cot, Const(0.0, cot.dim)), a.dim),
            unbroadcast(IfElse(first, Const(0.0, cot.dim), cot), b.dim),
        )


class Maximum(Node):
    """Element-wise maximum (ties send the gradient to ``a``; NaN wins)."""

    arity = 2
    array_api, c = "maximum", "(({0} > {1} || {0} != {0}) ? {0} : {1})"
    keops = "IfElse(({0}-{1}),{0},{1})"

    def __init__(self, a: Node, b: Node) -> None:
        super().__init__(a, b, dim=broadcast_dim("maximum", a, b))

    def dense(self, grid: Any, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.maximum(a, b)

    def vjp(self, cot: Node) -> tuple[Node | None, ...]:
        a, b = self.children
        first = sub(a, b)
        return (
            unbroadcast(IfElse(first, cot, Const(0.0, cot.dim)), a.dim),
            unbroadcast(IfElse(first, Const(0.0, cot.dim), cot), b.dim),
        )


class Atan2(Node):
    """atan2(a, b): the angle of the point (b, a)."""

    arity = 2
    array_api, c, keops = "atan2", "lm_atan2({0}, {1})", "Atan2({0},{1})"

    def __init__(self, a: Node, b: Node) -> None:
        super().__init__(a, b, dim=broadcast_dim("atan2", a, b))

    def dense(self, grid: Any, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.arctan2(a, b)

    def vjp(self, cot: Node) -> tuple[Node | None, ...]:
        a, b = self.children
        r2 = add(Square(a), Square(b))
        return (
            unbroadcast(mul(cot, div(b, r2)), a.dim),
            unbroadcast(neg(mul(cot, div(a, r2))), b.dim),
        )


class IfElse(Node):
    """``a`` where ``cond >= 0``, else ``b`` (KeOps' IfElse)."""

    arity = 3
    c, keops = "({0} >= 0 ? {1} : {2})", "IfElse({0},{1},{2})"

    def __init__(self, cond: Node, a: Node, b: Node) -> None:
        dim = broadcast_dim("ifelse", a, b)
        if cond.dim not in (1, dim):
            broadcast_dim("ifelse", cond, a)
        super().__init__(cond, a, b, dim=max(dim, cond.dim))

    def eval(self, ctx: Any, cond: Any, a: Any, b: Any) -> Any:
        return ctx.xp.where(cond >= 0, a, b)

    def dense(self, grid: Any, cond: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.where(np.greater_equal(cond, 0), a, b)

    def vjp(self, cot: Node) -> tuple[Node | None, ...]:
        cond, a, b = self.children
        zero = Const(0.0, cot.dim)
        return (
            None,
            unbroadcast(IfElse(cond, cot, zero), a.dim),
            unbroadcast(IfElse(cond, zero, cot), b.dim),
        )


def power(a: Node, p: float) -> Node:
    """a ** p with the usual special cases (p = 0, 1, 2, 0.5, -0.5, -1)."""
    p = float(p)
    if isinstance(a, Const):
        return Const(a.value**p, a.dim)
    if p == 0.0:
        return Const(1.0, a.dim)
    if p == 1.0:
        return a
    if p == 2.0:
        return Square(a)
    if p == 0.5:
        return Sqrt(a)
    if p == -0.5:
        return Rsqrt(a)
    if p == -1.0:
        return div(Const(1.0), a)
    return PowConst(a, p)
