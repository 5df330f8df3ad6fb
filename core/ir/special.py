"""More element-wise functions: inverse trigonometry, sin(x)/x and x log x, rounding, comparisons.

These complete KeOps' list of scalar operations (``Atan``, ``Acos``, ``Asin``, ``SinXDivX``,
``XLogX``, ``Floor``, ``Round``, ``Equal``, ``NotEqual``, ``LessThan``, ``LessOrEqual``),
with KeOps' values at the special points: sin(x)/x is 1 at 0, x log x is 0 at 0, rounding
goes half away from zero (C's ``round``), comparisons give 1.0 or 0.0 (0.0 with a NaN
operand, but 1.0 for ``NaN != x``). ``mod`` and ``round_to`` build KeOps' ``Mod`` and
``Round(x, d)`` from them.

The ``eval`` of each uses only functions of lazymat's namespace contract
(:data:`lazymat.namespace.REQUIRED_FUNCTIONS`): atan, asin and acos through ``atan2``, floor
through ``round``, so that a backend's namespace needs nothing new. Floor, rounding and the
comparisons are piecewise constant: their derivative is zero almost everywhere, as in KeOps.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .algebra import add, div, mul, sub
from .functions import Cos, Log, Rsqrt, Square, Unary
from .leaves import Const
from .node import Node, broadcast_dim


def _one_minus_square(xp: Any, a: Any) -> Any:
    """1 - a^2 as (1 - a)(1 + a): no cancellation near a = +-1."""
    return (1.0 - a) * (1.0 + a)


class Atan(Unary):
    """arctan(a)."""

    c, keops = "lm_atan({0})", "Atan({0})"

    def eval(self, ctx: Any, a: Any) -> Any:
        return ctx.xp.atan2(a, ctx.xp.full_like(a, 1.0))

    def dense(self, grid: Any, a: np.ndarray) -> np.ndarray:
        return np.arctan(a)

    def derivative(self) -> Node | None:
        return div(Const(1.0), add(Const(1.0), Square(self.children[0])))


class Asin(Unary):
    """arcsin(a), NaN outside [-1, 1]."""

    c, keops = "lm_asin({0})", "Asin({0})"

    def eval(self, ctx: Any, a: Any) -> Any:
        return ctx.xp.atan2(a, ctx.xp.sqrt(_one_minus_square(ctx.xp, a)))

    def dense(self, grid: Any, a: np.ndarray) -> np.ndarray:
        return np.arcsin(a)

    def derivative(self) -> Node | None:
        return Rsqrt(sub(Const(1.0), Square(self.children[0])))


class Acos(Unary):
    """arccos(a), NaN outside [-1, 1]."""

    c, keops = "lm_acos({0})", "Acos({0})"

    def eval(self, ctx: Any, a: Any) -> Any:
        return ctx.xp.atan2(ctx.xp.sqrt(_one_minus_square(ctx.xp, a)), a)

    def dense(self, grid: Any, a: np.ndarray) -> np.ndarray:
        return np.arccos(a)

    def derivative(self) -> Node | None:
        return mul(Const(-1.0), Rsqrt(sub(Const(1.0), Square(self.children[0]))))


class SinXDivX(Unary):
    """sin(a) / a, equal to 1 at a = 0 (sinc(x) is SinXDivX(pi x))."""

    c, keops = "({0} != 0 ? lm_sin({0}) / {0} : (lm_real)1)", "SinXDivX({0})"

    def eval(self, ctx: Any, a: Any) -> Any:
        xp = ctx.xp
        zero, one = a == 0, xp.full_like(a, 1.0)
        return xp.where(zero, one, xp.sin(a) / xp.where(zero, one, a))

    def dense(self, grid: Any, a: np.ndarray) -> np.ndarray:
        return np.sinc(a / np.pi)

    def derivative(self) -> Node | None:
        # (cos a - sin(a)/a) / a, written so that it is 0 (its limit) at a = 0
        a = self.children[0]
        return div(sub(Cos(a), self), add(a, Equal(a, Const(0.0))))


class XLogX(Unary):
    """a log(a), equal to 0 at a = 0 (NaN for a < 0)."""

    c, keops = "({0} != 0 ? {0} * lm_log({0}) : (lm_real)0)", "XLogX({0})"

    def eval(self, ctx: Any, a: Any) -> Any:
        xp = ctx.xp
        zero = a == 0
        return xp.where(zero, xp.zeros_like(a), a * xp.log(xp.where(zero, xp.full_like(a, 1.0), a)))

    def dense(self, grid: Any, a: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(a == 0, 0.0, a * np.log(a))

    def derivative(self) -> Node | None:
        return add(Log(self.children[0]), Const(1.0))


def _floor(xp: Any, a: Any) -> Any:
    """floor(a) from round-half-to-even: one less where rounding went up."""
    r = xp.round(a)
    return xp.where(r > a, r - 1.0, r)


class Floor(Unary):
    """floor(a); derivative zero almost everywhere."""

    differentiable = False
    c, keops = "lm_floor({0})", "Floor({0})"

    def eval(self, ctx: Any, a: Any) -> Any:
        return _floor(ctx.xp, a)

    def dense(self, grid: Any, a: np.ndarray) -> np.ndarray:
        return np.floor(a)

    def derivative(self) -> Node | None:
        return None


class Round(Unary):
    """a rounded to the nearest integer, halves away from zero (C's ``round``, KeOps' ``Round``)."""

    differentiable = False
    c, keops = "lm_round({0})", "Round({0},0)"

    def eval(self, ctx: Any, a: Any) -> Any:
        xp = ctx.xp
        m = xp.abs(a)
        f = _floor(xp, m)
        up = xp.astype(m - f >= 0.5, a.dtype)  # m - f is exact
        return xp.sign(a) * (f + up)

    def dense(self, grid: Any, a: np.ndarray) -> np.ndarray:
        t = np.trunc(a)
        return np.where(np.abs(a - t) >= 0.5, t + np.sign(a), t)

    def derivative(self) -> Node | None:
        return None


class _Comparison(Node):
    """1.0 where the comparison of ``a`` with ``b`` holds, else 0.0; derivative zero."""

    arity = 2
    differentiable = False

    def __init__(self, a: Node, b: Node) -> None:
        super().__init__(a, b, dim=broadcast_dim(type(self).__name__, a, b))

    def holds(self, a: Any, b: Any) -> Any:
        """The boolean comparison, with the operators every array library has."""
        raise NotImplementedError

    def eval(self, ctx: Any, a: Any, b: Any) -> Any:
        return ctx.xp.astype(self.holds(a, b), ctx.dtype)

    def vjp(self, cot: Node) -> tuple[Node | None, ...]:
        return (None, None)


class Equal(_Comparison):
    """a == b."""

    c, keops = "(lm_real)({0} == {1})", "Equal({0},{1})"

    def holds(self, a: Any, b: Any) -> Any:
        return a == b

    def dense(self, grid: Any, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.equal(a, b).astype(np.float64)


class NotEqual(_Comparison):
    """a != b (true where either is NaN)."""

    c, keops = "(lm_real)({0} != {1})", "NotEqual({0},{1})"

    def holds(self, a: Any, b: Any) -> Any:
        return a != b

    def dense(self, grid: Any, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.not_equal(a, b).astype(np.float64)


class LessThan(_Comparison):
    """a < b."""

    c, keops = "(lm_real)({0} < {1})", "LessThan({0},{1})"

    def holds(self, a: Any, b: Any) -> Any:
        return a < b

    def dense(self, grid: Any, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.less(a, b).astype(np.float64)


class LessOrEqual(_Comparison):
    """a <= b."""

    c, keops = "(lm_real)({0} <= {1})", "LessOrEqual({0},{1})"

    def holds(self, a: Any, b: Any) -> Any:
        return a <= b

    def dense(self, grid: Any, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.less_equal(a, b).astype(np.float64)


# -- constructors of derived operations ---------------------------------------------------


def mod(a: Node, n: Node, offset: Node) -> Node:
    """KeOps' ``Mod(a, n, d)`` = a - n floor((a - d) / n): a in [d, d + n) for n > 0."""
    return sub(a, mul(n, Floor(div(sub(a, offset), n))))


def round_to(a: Node, decimals: int) -> Node:
    """KeOps' ``Round(a, d)``: a rounded to ``decimals`` decimal places (halves away from zero)."""
    if decimals == 0:
        return Round(a)
    scale = Const(10.0**decimals)
    return div(Round(mul(a, scale)), scale)
