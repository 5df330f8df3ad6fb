"""KeOps' formula language, parsed into lazymat's IR.

A KeOps formula is an expression in Python's syntax (KeOps itself evaluates it with its
operation classes in scope): calls of operations (``Exp(-SqDist(x, y))``), the operators
``+ - * /``, ``**`` with an integer exponent, ``|`` (scalar product), unary ``-``, the
comparisons ``< > <= >=``, integer literals (floats are accepted too), lists of integers
(``Kron``/``TensorDot`` shapes) and names. Names are declared by aliases:
``"x = Vi(3)"`` (the next argument, dimension 3), ``"x = Vi(2, 3)"`` (argument 2),
``"Vj(4)"``, ``"Var(1, 3, 0)"``; categories ``Vi``/``Vx`` (i-indexed, 0), ``Vj``/``Vy``
(j-indexed, 1), ``Pm`` (parameter, 2). A formula may also name arguments directly with
``Var(position, dim, cat)`` or ``Vi(position, dim)``: every argument the formula or the
aliases mention becomes an input of the operation, by position.

:func:`parse` uses Python's own parser for the syntax (so positions are exact) and walks
the tree with the table :data:`OPERATIONS`, which covers the operations of KeOps' API
(maths functions, vector and tensor operations, comparisons, complex numbers in KeOps'
interleaved layout, symbolic derivatives ``Grad``, ``Diff``, ``GradMatrix``,
``Divergence``, ``Laplacian``). Every error is a :class:`FormulaError` naming the token
and its column.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lazymat.ir import functions as fn
from lazymat.ir import special as sp
from lazymat.ir import vector as vec
from lazymat.ir.algebra import add, div, mul, neg, sub, sum_dim
from lazymat.ir.leaves import Const, Var
from lazymat.ir.node import Node

from . import composite as cp

CATEGORIES = {"Vi": "i", "Vx": "i", "Vj": "j", "Vy": "j", "Pm": "p"}
_CAT_NUMBERS = {0: "i", 1: "j", 2: "p"}


class FormulaError(ValueError):
    """A KeOps formula or alias that lazymat cannot read; the message names the token and column."""


@dataclass(frozen=True)
class Argument:
    """One input of a KeOps operation: its alias (if any), category ("i", "j", "p"), dimension, position."""

    name: str | None
    cat: str
    dim: int
    position: int

    @property
    def var(self) -> Var:
        return Var(self.position, self.cat, self.dim)


_ALIAS = re.compile(r"^(?:([A-Za-z_]\w*)=)?(Vi|Vj|Vx|Vy|Pm)\((\d+)(?:,(\d+))?\)$")
_VAR = re.compile(r"^(?:([A-Za-z_]\w*)=)?Var\((\d+),(\d+),(\d+)\)$")


def parse_alias(text: str, position: int) -> Argument:
    """An alias (``"x = Vi(3)"``, ``"x = Vi(pos, 3)"``, ``"Vj(3)"``, ``"Var(pos, dim, cat)"``) read."""
    compact = re.sub(r"\s+", "", text)
    m = _ALIAS.match(compact)
    if m is not None:
        name, kind, first, second = m.groups()
        pos, dim = (int(first), int(second)) if second is not None else (position, int(first))
        return Argument(name, CATEGORIES[kind], dim, pos)
    m = _VAR.match(compact)
    if m is not None:
        name, at, size, cat = m.groups()
        if int(cat) not in _CAT_NUMBERS:
            raise FormulaError(f"alias {text!r}: the category of Var(pos, dim, cat) is 0, 1 or 2, got {cat}")
        return Argument(name, _CAT_NUMBERS[int(cat)], int(size), int(at))
    raise FormulaError(
        f"alias {text!r} (argument {position}) is not of the form 'x = Vi(dim)', 'x = Vi(pos, dim)', "
        "'Vj(dim)' or 'Var(pos, dim, cat)' with Vi, Vj or Pm"
    )


# -- the operation table ------------------------------------------------------------------------
#
# Each entry: (signature, builder). Signature letters: f a formula, v a variable, i an integer,
# l a list of integers; letters after "|" are optional.


def _broadcast_to(a: Node, dim: int) -> Node:
    if a.dim != 1:
        raise ValueError(f"SumT repeats a scalar formula, got inner dimension {a.dim}")
    return mul(a, Const(1.0, dim))


def _elem_t(a: Node, n: int, m: int) -> Node:
    if a.dim != 1 or not 0 <= m < n:
        raise ValueError(f"ElemT(f, n, m) puts a scalar f at index m < n, got dim {a.dim}, n={n}, m={m}")
    return _extract_t(a, m, n)


def _extract_t(a: Node, start: int, dim: int) -> Node:
    if start < 0 or start + a.dim > dim:
        raise ValueError(
            f"ExtractT: a formula of dimension {a.dim} at {start} does not fit in dimension {dim}"
        )
    parts = [Const(0.0, start)] if start else []
    parts.append(a)
    if dim - start - a.dim:
        parts.append(Const(0.0, dim - start - a.dim))
    return cp.concat_all(parts)


def _pow_int(a: Node, n: int) -> Node:
    return fn.power(a, float(n))


def _powf(a: Node, b: Node) -> Node:
    return fn.Exp(mul(b, fn.Log(a)))


def _clamp_int(a: Node, lo: int, hi: int) -> Node:
    return vec.clamp(a, Const(float(lo)), Const(float(hi)))


def _diff_clamp_int(a: Node, lo: int, hi: int) -> Node:
    return mul(sp.LessOrEqual(Const(float(lo)), a), sp.LessOrEqual(a, Const(float(hi))))


def _var(pos: int, dim: int, cat: int) -> Var:
    if cat not in _CAT_NUMBERS:
        raise ValueError(f"the category of Var(pos, dim, cat) is 0 (i), 1 (j) or 2 (parameter), got {cat}")
    return Var(pos, _CAT_NUMBERS[cat], dim)


def _complex(op: Callable[..., Any], complex_out: bool = True) -> Callable[..., Node]:
    """A builder applying ``op`` to complex operands in KeOps' interleaved layout."""

    def build(*args: Node) -> Node:
        out = op(*(cp.split_complex(a) for a in args))
        return cp.join_complex(out) if complex_out else out

    return build


def _complex_binary(op: Callable[[cp.Complex, cp.Complex], cp.Complex]) -> Callable[[Node, Node], Node]:
    """KeOps' complex binary operations broadcast a complex scalar (dim 2) against a vector."""

    def build(a: Node, b: Node) -> Node:
        za, zb = cp.split_complex(a), cp.split_complex(b)
        if za.dim == 1 and zb.dim > 1:
            za = za.broadcast(zb.dim)
        elif zb.dim == 1 and za.dim > 1:
            zb = zb.broadcast(za.dim)
        return cp.join_complex(op(za, zb))

    return build


def _complex_real_scal(a: Node, b: Node) -> Node:
    real, z = (a, b) if a.dim == 1 else (b, a)
    if real.dim != 1:
        raise ValueError("ComplexRealScal multiplies a complex formula by a real scalar (dim 1)")
    return cp.join_complex(cp.split_complex(z).scale(real))


def _grad_saved(f: Node, v: Node, e: Node, _result: Node) -> Node:
    return cp.grad(f, v, e)


def _diff_saved(f: Node, v: Node, u: Node, _result: Node) -> Node:
    return cp.diff(f, v, u)


OPERATIONS: dict[str, tuple[str, Callable[..., Node]]] = {
    # arithmetic and the inner vector
    "Add": ("ff", add),
    "Subtract": ("ff", sub),
    "Mult": ("ff", mul),
    "Divide": ("ff", div),
    "Minus": ("f", neg),
    "Scalprod": ("ff", vec.dot),
    "Sum": ("f", sum_dim),
    "SumT": ("fi", _broadcast_to),
    "Concat": ("ff", vec.Concat),
    "Elem": ("fi", vec.elem),
    "ElemT": ("fii", _elem_t),
    "Extract": ("fii", lambda a, start, d: vec.Slice(a, start, start + d)),
    "ExtractT": ("fii", _extract_t),
    "Max": ("f", cp.inner_max),
    "Min": ("f", cp.inner_min),
    "ArgMax": ("f", cp.inner_argmax),
    "ArgMin": ("f", cp.inner_argmin),
    "OneHot": ("fi", vec.OneHot),
    # element-wise maths
    "Exp": ("f", fn.Exp),
    "Log": ("f", fn.Log),
    "Sin": ("f", fn.Sin),
    "Cos": ("f", fn.Cos),
    "Sqrt": ("f", fn.Sqrt),
    "Rsqrt": ("f", fn.Rsqrt),
    "Abs": ("f", fn.Abs),
    "Sign": ("f", fn.Sign),
    "Step": ("f", fn.Step),
    "ReLU": ("f", fn.Relu),
    "Square": ("f", fn.Square),
    "Inv": ("f", lambda a: div(Const(1.0), a)),
    "IntInv": ("i", lambda n: Const(1.0 / n)),
    "Pow": ("fi", _pow_int),
    "Powf": ("ff", _powf),
    "Atan": ("f", sp.Atan),
    "Acos": ("f", sp.Acos),
    "Asin": ("f", sp.Asin),
    "Atan2": ("ff", fn.Atan2),
    "SinXDivX": ("f", sp.SinXDivX),
    "XLogX": ("f", sp.XLogX),
    "Floor": ("f", sp.Floor),
    "Round": ("fi", sp.round_to),
    "Mod": ("fff", sp.mod),
    "Clamp": ("fff", vec.clamp),
    "ClampInt": ("fii", _clamp_int),
    "DiffClampInt": ("fii", _diff_clamp_int),
    "IfElse": ("fff", fn.IfElse),
    "Equal": ("ff", sp.Equal),
    "NotEqual": ("ff", sp.NotEqual),
    "LessThan": ("ff", sp.LessThan),
    "LessOrEqual": ("ff", sp.LessOrEqual),
    # norms and distances
    "SqNorm2": ("f", vec.sqnorm2),
    "Norm2": ("f", vec.norm2),
    "Normalize": ("f", vec.normalize),
    "SqDist": ("ff", vec.sqdist),
    "SqNormIso": ("ff", lambda s, x: mul(s, vec.sqnorm2(x))),
    "SqNormDiag": ("ff", lambda s, x: sum_dim(mul(s, fn.Square(x)))),
    "SymSqNorm": ("ff", lambda A, x: sum_dim(mul(A, vec.TensorProd(x, x)))),
    "WeightedSqNorm": ("ff", vec.weightedsqnorm),
    "WeightedSqDist": ("fff", lambda s, x, y: vec.weightedsqnorm(s, sub(x, y))),
    "SoftDTW_SqDist": ("fff", cp.soft_dtw_sqdist),
    "BSpline": ("ffi", cp.bspline),
    # small matrices and tensors
    "MatVecMult": ("ff", vec.MatVecMult),
    "VecMatMult": ("ff", vec.VecMatMult),
    "TensorProd": ("ff", vec.TensorProd),
    "Kron": ("ffll", cp.kron),
    "TensorDot": ("ffllll|l", cp.tensordot),
    # variables and constants
    "Var": ("iii", _var),
    "Vi": ("ii", lambda pos, dim: Var(pos, "i", dim)),
    "Vj": ("ii", lambda pos, dim: Var(pos, "j", dim)),
    "Pm": ("ii", lambda pos, dim: Var(pos, "p", dim)),
    "IntCst": ("i", lambda n: Const(float(n))),
    "RatCst": ("ii", lambda p, q: Const(p / q)),
    "Zero": ("i", lambda d: Const(0.0, d)),
    # symbolic derivatives
    "Grad": ("fvf", cp.grad),
    "Grad_WithSavedForward": ("fvff", _grad_saved),
    "Diff": ("fvf", cp.diff),
    "Diff_WithSavedForward": ("fvff", _diff_saved),
    "GradMatrix": ("fv", cp.grad_matrix),
    "Divergence": ("fv", cp.divergence),
    "Laplacian": ("fv", cp.laplacian),
    "Factorize": ("ff", lambda f, g: f),
    "AutoFactorize": ("f", lambda f: f),
    # complex numbers, interleaved [re0, im0, re1, im1, ...]
    "ComplexAdd": ("ff", _complex_binary(lambda a, b: a + b)),
    "ComplexSubtract": ("ff", _complex_binary(lambda a, b: a - b)),
    "ComplexMult": ("ff", _complex_binary(lambda a, b: a * b)),
    "ComplexDivide": ("ff", _complex_binary(lambda a, b: a / b)),
    "ComplexRealScal": ("ff", _complex_real_scal),
    "ComplexExp": ("f", _complex(lambda z: z.exp())),
    "Conj": ("f", _complex(lambda z: z.conj())),
    "ComplexSum": ("f", _complex(lambda z: z.sum())),
    "ComplexSumT": ("fi", lambda a, d: cp.join_complex(cp.split_complex(a).broadcast(d // 2))),
    "ComplexAbs": ("f", _complex(lambda z: z.abs(), complex_out=False)),
    "ComplexSquareAbs": ("f", _complex(lambda z: z.abs2(), complex_out=False)),
    "ComplexAngle": ("f", _complex(lambda z: z.angle(), complex_out=False)),
    "ComplexReal": ("f", _complex(lambda z: z.re, complex_out=False)),
    "ComplexImag": ("f", _complex(lambda z: z.im, complex_out=False)),
    "ComplexExp1j": ("f", lambda a: cp.join_complex(cp.exp1j(a))),
    "Real2Complex": ("f", lambda a: cp.join_complex(cp.real(a))),
    "Imag2Complex": ("f", lambda a: cp.join_complex(cp.imag(a))),
}

_BINARY: dict[type[ast.operator], Callable[[Node, Node], Node]] = {
    ast.Add: add,
    ast.Sub: sub,
    ast.Mult: mul,
    ast.Div: div,
    ast.BitOr: vec.dot,
}
_COMPARE: dict[type[ast.cmpop], Callable[[Node, Node], Node]] = {
    ast.Lt: sp.LessThan,
    ast.LtE: sp.LessOrEqual,
    ast.Gt: lambda a, b: sp.LessThan(b, a),
    ast.GtE: lambda a, b: sp.LessOrEqual(b, a),
}


class _Parser:
    """One formula: the walk over Python's syntax tree, with the arguments it declares."""

    def __init__(self, text: str, arguments: dict[str, Var], declared: dict[int, Argument]) -> None:
        self.text = text
        self.names = arguments
        self.declared = declared

    def error(self, node: ast.AST, message: str) -> FormulaError:
        col = getattr(node, "col_offset", 0)
        token = ast.get_source_segment(self.text, node) or type(node).__name__
        return FormulaError(f"{message}: {token!r} at column {col + 1} of the formula {self.text!r}")

    def formula(self, node: ast.AST) -> Node:
        value = self.value(node)
        if isinstance(value, (int, float)):
            return Const(float(value))
        if not isinstance(value, Node):
            raise self.error(node, "expected a formula, got a list")
        return value

    def value(self, node: ast.AST) -> Node | int | float | list[int]:
        """A formula, or a number or list where an operation takes one."""
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.List):
            items = [self.value(e) for e in node.elts]
            if not all(type(v) is int for v in items):
                raise self.error(node, "a list in a formula holds integers only")
            return items  # type: ignore[return-value]
        if isinstance(node, ast.Name):
            if node.id not in self.names:
                known = ", ".join(sorted(self.names)) or "none"
                raise self.error(node, f"unknown name (the aliases declare: {known})")
            return self.names[node.id]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            inner = self.value(node.operand)
            if isinstance(inner, list):
                raise self.error(node, "cannot negate a list")
            if isinstance(inner, (int, float)):
                return -inner if isinstance(node.op, ast.USub) else inner
            return neg(inner) if isinstance(node.op, ast.USub) else inner
        if isinstance(node, ast.BinOp):
            return self.binary(node)
        if isinstance(node, ast.Compare):
            if len(node.ops) != 1 or type(node.ops[0]) not in _COMPARE:
                raise self.error(node, "comparisons take two operands and one of < > <= >=")
            return self.build(node, _COMPARE[type(node.ops[0])], [node.left, node.comparators[0]])
        if isinstance(node, ast.Call):
            return self.call(node)
        raise self.error(node, "not part of KeOps' formula syntax")

    def binary(self, node: ast.BinOp) -> Node:
        if isinstance(node.op, ast.Pow):
            exponent = self.value(node.right)
            if not isinstance(exponent, int):
                raise self.error(node.right, "the exponent of ** is an integer (use Powf for others)")
            return self.build(node, lambda a: fn.power(a, float(exponent)), [node.left])
        if type(node.op) not in _BINARY:
            raise self.error(node, "unknown operator")
        return self.build(node, _BINARY[type(node.op)], [node.left, node.right])

    def build(self, node: ast.AST, builder: Callable[..., Node], operands: list[ast.AST]) -> Node:
        values = [self.formula(o) for o in operands]
        try:
            return builder(*values)
        except (ValueError, TypeError, IndexError) as exc:
            raise self.error(node, str(exc)) from None

    def call(self, node: ast.Call) -> Node:
        if not isinstance(node.func, ast.Name):
            raise self.error(node.func, "an operation is called by its name")
        name = node.func.id
        if name not in OPERATIONS:
            raise self.error(node.func, "unknown operation")
        if node.keywords:
            raise self.error(node.keywords[0].value, f"{name} takes positional arguments only")
        signature, builder = OPERATIONS[name]
        required, _, optional = signature.partition("|")
        if not len(required) <= len(node.args) <= len(required) + len(optional):
            expected = f"{len(required)}" + (f" to {len(required) + len(optional)}" if optional else "")
            raise self.error(node, f"{name} takes {expected} arguments, got {len(node.args)}")
        args: list[Any] = []
        for kind, arg in zip(required + optional, node.args, strict=False):
            value = self.value(arg)
            if kind in "fv":
                if isinstance(value, list):
                    raise self.error(arg, f"{name} expects a formula here, got a list")
                value = Const(float(value)) if isinstance(value, (int, float)) else value
                if kind == "v" and not isinstance(value, Var):
                    raise self.error(arg, f"{name} differentiates with respect to a variable")
            elif kind == "i" and type(value) is not int:
                raise self.error(arg, f"{name} expects an integer here")
            elif kind == "l" and not isinstance(value, list):
                raise self.error(arg, f"{name} expects a list of integers here")
            args.append(value)
        try:
            out = builder(*args)
        except (ValueError, TypeError, IndexError) as exc:
            raise self.error(node, str(exc)) from None
        if isinstance(out, Var):
            self.declare(node, out)
        return out

    def declare(self, node: ast.AST, v: Var) -> None:
        """An argument named in the formula (``Var(pos, dim, cat)``): consistent with the others."""
        known = self.declared.get(v.index)
        if known is None:
            self.declared[v.index] = Argument(None, v.cat, v.dim, v.index)
        elif (known.cat, known.dim) != (v.cat, v.dim):
            raise self.error(
                node,
                f"argument {v.index} is declared as V{known.cat}({known.dim}) elsewhere, "
                f"here as V{v.cat}({v.dim})",
            )


def parse_aliases(aliases: Sequence[str]) -> list[Argument]:
    """The arguments that aliases declare, each at its position (checked for clashes)."""
    found: dict[int, Argument] = {}
    names: set[str] = set()
    for k, text in enumerate(aliases):
        arg = parse_alias(text, k)
        if arg.name is not None:
            if arg.name in names or arg.name in OPERATIONS:
                raise FormulaError(f"alias {text!r}: the name {arg.name!r} is already taken")
            names.add(arg.name)
        if arg.position in found and found[arg.position] != arg:
            raise FormulaError(f"alias {text!r}: argument {arg.position} is already declared")
        found[arg.position] = arg
    return list(found.values())


def parse(formula: str, aliases: Sequence[str] = (), *more: str) -> tuple[list[Node], list[Argument]]:
    """The IR of ``formula`` (and of the ``more`` formulas sharing its aliases), and every
    argument by position: what the aliases declare and what the formulas name with ``Var``.

    In the IR, argument k is the variable ``Var(k, cat, dim)``.
    """
    declared = {a.position: a for a in parse_aliases(aliases)}
    names = {a.name: a.var for a in declared.values() if a.name is not None}
    nodes = []
    for text in (formula, *more):
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            raise FormulaError(
                f"syntax error at column {exc.offset} of the formula {text!r}: {exc.msg}"
            ) from None
        parser = _Parser(text.strip(), names, declared)
        nodes.append(parser.formula(tree.body))
    missing = [k for k in range(max(declared, default=-1) + 1) if k not in declared]
    if missing:
        raise FormulaError(
            f"arguments {missing} are never declared (aliases and Var(...) must number "
            f"the inputs 0, 1, 2, ... without gaps)"
        )
    return nodes, [declared[k] for k in sorted(declared)]
