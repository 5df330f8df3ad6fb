"""KeOps' legacy high-level kernels: ``Kernel("gaussian(x,y) * linear(u,v)**2")`` and
``kernel_product(params, x, y, b)``.

A kernel expression combines named kernels of pairs of points with ``*``, ``+``, ``-``,
``/``, integer powers and numbers. Each call names its i-point and j-point (``x, y`` for
the first pair of arrays given to :func:`kernel_product`, ``u, v`` for the second, in the
order of first appearance). With r2 = |x - y|^2_gamma (``WeightedSqDist``: gamma a
scalar, a diagonal (D,) or a full (D*D,) metric):

=========================  ==============================
``gaussian(x,y)``          exp(-r2)
``laplacian(x,y)``         exp(-sqrt(r2))
``cauchy(x,y)``            1 / (1 + r2)
``inverse_multiquadric``   1 / sqrt(1 + r2)
``distance(x,y)``          sqrt(r2)
``linear(x,y)``            <x, y> (no gamma)
=========================  ==============================

``params["gamma"]`` holds one gamma per call, in order of appearance (a single value for
a one-call expression; a call of ``linear`` takes None, or is skipped when the tuple only
lists the others). ``kernel_product(params, x, y, b)`` is sum_j K(x_i, y_j) b_j, and
``kernel_product(params, (x, u), (y, v), b)`` feeds each pair to its names. The result
is differentiable like any lazymat reduction (gradients of any order).
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any

from lazymat.ir import functions as fn
from lazymat.ir.algebra import add, div, mul, neg, sub
from lazymat.ir.leaves import Const
from lazymat.ir.node import Node
from lazymat.ir.vector import dot, weightedsqnorm
from lazymat.lazymatrix import LazyMatrix, Pm, Vi, Vj

from .formula import FormulaError


def _r2(x: Node, y: Node, g: Node | None) -> Node:
    if g is None:
        raise ValueError("this kernel needs a gamma")
    return weightedsqnorm(g, sub(x, y))


#: name -> (uses gamma, formula of (x, y, gamma))
KERNELS: dict[str, tuple[bool, Callable[[Node, Node, Node | None], Node]]] = {
    "gaussian": (True, lambda x, y, g: fn.Exp(neg(_r2(x, y, g)))),
    "laplacian": (True, lambda x, y, g: fn.Exp(neg(fn.Sqrt(_r2(x, y, g))))),
    "cauchy": (True, lambda x, y, g: div(Const(1.0), add(Const(1.0), _r2(x, y, g)))),
    "inverse_multiquadric": (True, lambda x, y, g: fn.Rsqrt(add(Const(1.0), _r2(x, y, g)))),
    "distance": (True, lambda x, y, g: fn.Sqrt(_r2(x, y, g))),
    "linear": (False, lambda x, y, g: dot(x, y)),
}


class Kernel:
    """A kernel expression such as ``"gaussian(x,y) * linear(u,v)**2"`` (see the module doc)."""

    def __init__(self, name: str) -> None:
        self.name = name
        try:
            self.tree = ast.parse(name.strip(), mode="eval").body
        except SyntaxError as exc:
            raise FormulaError(
                f"syntax error at column {exc.offset} of the kernel {name!r}: {exc.msg}"
            ) from None
        self.calls: list[tuple[str, str, str]] = []
        self.points: list[str] = []  # i-point names, in order of appearance
        self._check(self.tree)

    def _check(self, node: ast.AST) -> None:
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in KERNELS:
                token = ast.get_source_segment(self.name, node.func)
                raise FormulaError(
                    f"unknown kernel {token!r} at column {node.col_offset + 1} of {self.name!r}; "
                    f"expected one of {sorted(KERNELS)}"
                )
            if len(node.args) != 2 or not all(isinstance(a, ast.Name) for a in node.args):
                raise FormulaError(
                    f"{node.func.id} takes two point names, e.g. {node.func.id}(x,y), in {self.name!r}"
                )
            x, y = (a.id for a in node.args)  # type: ignore[attr-defined]
            self.calls.append((node.func.id, x, y))
            if x not in self.points:
                self.points.append(x)
            return
        if isinstance(node, ast.BinOp) and isinstance(
            node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow)
        ):
            self._check(node.left)
            if isinstance(node.op, ast.Pow):
                if not (isinstance(node.right, ast.Constant) and type(node.right.value) is int):
                    raise FormulaError(f"kernel powers are integers, in {self.name!r}")
                return
            self._check(node.right)
            return
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            self._check(node.operand)
            return
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return
        token = ast.get_source_segment(self.name, node) or type(node).__name__
        raise FormulaError(
            f"{token!r} at column {getattr(node, 'col_offset', 0) + 1} is not part of a kernel expression"
        )

    def formula(self, points: dict[str, tuple[Node, Node]], gammas: list[Node | None]) -> Node:
        """The kernel's IR over (x_i, y_j) formulas per point name and one gamma per call."""
        it = iter(gammas)

        def build(node: ast.AST) -> Node:
            if isinstance(node, ast.Call):
                name = node.func.id  # type: ignore[attr-defined]
                x_name = node.args[0].id  # type: ignore[attr-defined]  # the pair of this i-point
                return KERNELS[name][1](*points[x_name], next(it))
            if isinstance(node, ast.BinOp):
                if isinstance(node.op, ast.Pow):
                    return fn.power(build(node.left), float(node.right.value))  # type: ignore[attr-defined]
                ops = {ast.Add: add, ast.Sub: sub, ast.Mult: mul, ast.Div: div}
                return ops[type(node.op)](build(node.left), build(node.right))
            if isinstance(node, ast.UnaryOp):
                return neg(build(node.operand))
            return Const(float(node.value))  # type: ignore[attr-defined]

        return build(self.tree)

    def __repr__(self) -> str:
        return f"Kernel({self.name!r})"


def _gammas(kernel: Kernel, gamma: Any) -> list[Any]:
    """One gamma (or None) per call of the expression."""
    uses = [KERNELS[name][0] for name, _, _ in kernel.calls]
    if not isinstance(gamma, (tuple, list)):
        gamma = [gamma]
    gamma = list(gamma)
    if len(gamma) == len(uses):
        return gamma
    if len(gamma) == sum(uses):
        it = iter(gamma)
        return [next(it) if u else None for u in uses]
    raise ValueError(
        f"kernel {kernel.name!r} has {len(uses)} calls ({sum(uses)} with a gamma), "
        f"but params['gamma'] has {len(gamma)} entries"
    )


def kernel_product(
    params: dict[str, Any], x: Any, y: Any, *bs: Any, mode: str | None = None, **_: Any
) -> Any:
    """sum_j K(x_i, y_j) b_j for the kernel ``params["id"]`` (module doc)."""
    kernel = params.get("id")
    if not isinstance(kernel, Kernel):
        raise TypeError("params['id'] must be a lazymat.keops Kernel, e.g. Kernel('gaussian(x,y)')")
    mode = mode or params.get("mode", "sum")
    if mode != "sum":
        raise NotImplementedError(f"kernel_product mode {mode!r}: lazymat computes mode='sum' only")
    if len(bs) != 1:
        raise ValueError(f"kernel_product takes one signal b, got {len(bs)}")
    xs = tuple(x) if isinstance(x, (tuple, list)) else (x,)
    ys = tuple(y) if isinstance(y, (tuple, list)) else (y,)
    if not len(xs) == len(ys) == len(kernel.points):
        raise ValueError(
            f"kernel {kernel.name!r} names {len(kernel.points)} pair(s) of points {kernel.points}, "
            f"got {len(xs)} i-array(s) and {len(ys)} j-array(s)"
        )
    lazy = [(Vi(a), Vj(b)) for a, b in zip(xs, ys, strict=True)]
    gammas = [None if g is None else Pm(g) for g in _gammas(kernel, params.get("gamma"))]
    operands: list[LazyMatrix] = [m for pair in lazy for m in pair] + [g for g in gammas if g is not None]
    names = kernel.points

    def build(*formulas: Node) -> Node:
        pairs = {names[k]: (formulas[2 * k], formulas[2 * k + 1]) for k in range(len(names))}
        rest = iter(formulas[2 * len(names) :])
        return kernel.formula(pairs, [None if g is None else next(rest) for g in gammas])

    K = operands[0]._combine(tuple(operands[1:]), build)
    return (K * Vj(bs[0])).sum(axis=1)
