"""Element-wise mathematical functions, each with its own derivative.

Non-smooth functions (abs, sign, step, relu, min/max, ifelse) take the usual
almost-everywhere derivative; ties in min/max send the gradient to the first operand.
"""

from __future__ import annotations

from typing import Any

from .algebra import add, div, mul, neg, sub, unbroadcast
from .leaves import Const
from .node import Node, broadcast_dim


class Unary(Node):
    """An element-wise function of one formula; subclasses give ``fn`` and ``derivative``."""

    arity = 1

    def __init__(self, a: Node) -> None:
        super().__init__(a, dim=a.dim)

    def fn(self, xp: Any, a: Any) -> Any:
        raise NotImplementedError

    def derivative(self) -> Node | None:
        """f'(a) as a formula, or None when it is zero almost everywhere."""
        raise NotImplementedError

    def eval(self, ctx: Any, a: Any) -> Any:
        return self.fn(ctx.xp, a)

    def vjp(self, cot: Node) -> tuple[Node | None, ...]:
        d = self.derivative()
        return (None if d is None else mul(cot, d),)


class Exp(Unary):
    def fn(self, xp: Any, a: Any) -> Any:
        return xp.exp(a)

    def derivative(self) -> Node | None:
        return self


class Log(Unary):
    def fn(self, xp: Any, a: Any) -> Any:
        return xp.log(a)

    def derivative(self) -> Node | None:
        return div(Const(1.0), self.children[0])


class Sin(Unary):
    def fn(self, xp: Any, a: Any) -> Any:
        return xp.sin(a)

    def derivative(self) -> Node | None:
        return Cos(self.children[0])


class Cos(Unary):
    def fn(self, xp: Any, a: Any) -> Any:
        return xp.cos(a)

    def derivative(self) -> Node | None:
        return neg(Sin(self.children[0]))


class Sqrt(Unary):
    def fn(self, xp: Any, a: Any) -> Any:
        return xp.sqrt(a)

    def derivative(self) -> Node | None:
        return mul(Const(0.5), Rsqrt(self.children[0]))


class Rsqrt(Unary):
    """1 / sqrt(a)."""

    def fn(self, xp: Any, a: Any) -> Any:
        return 1.0 / xp.sqrt(a)

    def derivative(self) -> Node | None:
        return mul(Const(-0.5), div(self, self.children[0]))


class Abs(Unary):
    def fn(self, xp: Any, a: Any) -> Any:
        return xp.abs(a)

    def derivative(self) -> Node | None:
        return Sign(self.children[0])


class Sign(Unary):
    differentiable = False

    def fn(self, xp: Any, a: Any) -> Any:
        return xp.sign(a)

    def derivative(self) -> Node | None:
        return None


class Step(Unary):
    """1 where a >= 0, else 0 (NaN stays NaN)."""

    differentiable = False

    def fn(self, xp: Any, a: Any) -> Any:
        return xp.astype(a >= 0, a.dtype) + 0 * a

    def derivative(self) -> Node | None:
        return None


class Relu(Unary):
    def fn(self, xp: Any, a: Any) -> Any:
        return xp.maximum(a, xp.zeros_like(a))

    def derivative(self) -> Node | None:
        return Step(self.children[0])


class Square(Unary):
    def fn(self, xp: Any, a: Any) -> Any:
        return a * a

    def derivative(self) -> Node | None:
        return mul(Const(2.0), self.children[0])


class Tanh(Unary):
    def fn(self, xp: Any, a: Any) -> Any:
        return xp.tanh(a)

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

    def vjp(self, cot: Node) -> tuple[Node | None, ...]:
        a = self.children[0]
        return (mul(cot, mul(Const(self.p), power(a, self.p - 1.0))),)


class Minimum(Node):
    """Element-wise minimum (ties send the gradient to ``a``)."""

    arity = 2

    def __init__(self, a: Node, b: Node) -> None:
        super().__init__(a, b, dim=broadcast_dim("minimum", a, b))

    def eval(self, ctx: Any, a: Any, b: Any) -> Any:
        return ctx.xp.minimum(a, b)

    def vjp(self, cot: Node) -> tuple[Node | None, ...]:
        a, b = self.children
        first = sub(b, a)  # >= 0 where a is selected
        return (
            unbroadcast(IfElse(first, cot, Const(0.0, cot.dim)), a.dim),
            unbroadcast(IfElse(first, Const(0.0, cot.dim), cot), b.dim),
        )


class Maximum(Node):
    """Element-wise maximum (ties send the gradient to ``a``)."""

    arity = 2

    def __init__(self, a: Node, b: Node) -> None:
        super().__init__(a, b, dim=broadcast_dim("maximum", a, b))

    def eval(self, ctx: Any, a: Any, b: Any) -> Any:
        return ctx.xp.maximum(a, b)

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

    def __init__(self, a: Node, b: Node) -> None:
        super().__init__(a, b, dim=broadcast_dim("atan2", a, b))

    def eval(self, ctx: Any, a: Any, b: Any) -> Any:
        return ctx.xp.atan2(a, b)

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

    def __init__(self, cond: Node, a: Node, b: Node) -> None:
        dim = broadcast_dim("ifelse", a, b)
        if cond.dim not in (1, dim):
            broadcast_dim("ifelse", cond, a)
        super().__init__(cond, a, b, dim=max(dim, cond.dim))

    def eval(self, ctx: Any, cond: Any, a: Any, b: Any) -> Any:
        return ctx.xp.where(cond >= 0, a, b)

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
