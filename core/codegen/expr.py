"""The per-formula expression emitter: a formula as straight-line scalar C code.

Every IR node of dimension d becomes d scalar temporaries ``t<id>_<c>`` of type
``lm_real`` (integer index arrays: ``lm_index``), computed once even when the node is
shared (the formula's DAG is walked in topological order, so common sub-expressions are
emitted once). Constants are inlined as exact hexadecimal literals, concatenation and
slicing only rename components. The code calls the ``lm_*`` functions of
:mod:`lazymat.codegen.mathlib` and nothing else, so it compiles for any target whose
skeleton includes that prelude (C on the CPU, CUDA C on a GPU).

Where the variables live is the skeleton's business: it passes a :class:`Names` object
that spells the C expression of component ``c`` of a variable and of the current i or j
index. :class:`FormulaEmitter` keeps its table of emitted nodes between calls, which lets a
skeleton hoist the sub-formulas that do not depend on j out of its inner loop: emit them
first (``emit`` + ``take_lines`` in the outer loop), then the whole formula (only the
j-dependent rest comes out).

Semantics follow ``Node.eval`` exactly, special values included: minimum/maximum/relu
propagate NaN as numpy does, Step(NaN) and Step(inf) are NaN (the reference computes
``(a >= 0) + 0 * a``), Sign(NaN) is NaN, OneHot rounds half to even (``rint``),
IndexMatch compares the index with the truncated selector.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

from ..ir import algebra as alg
from ..ir import functions as fn
from ..ir import vector as vec
from ..ir.leaves import Const, Var
from ..ir.node import Node

#: integer exponents of PowConst computed with multiplications (and one division)
_SMALL_POWERS = (-4.0, -3.0, -2.0, 3.0, 4.0)

#: the operations without a C template (``Node.c``) that the emitter lays out itself
STRUCTURAL: frozenset[type] = frozenset(
    {
        Var,
        Const,
        alg.SumDim,
        fn.PowConst,
        vec.Concat,
        vec.Slice,
        vec.MatVecMult,
        vec.VecMatMult,
        vec.TensorProd,
        vec.OneHot,
        vec.IndexMatch,
    }
)


def has_rule(kind: type) -> bool:
    """True when the emitter can write ``kind``: a C template of its own, or a layout rule here."""
    return kind in STRUCTURAL or getattr(kind, "c", None) is not None


class Names(Protocol):
    """How a skeleton names its data: the emitter's only view of memory and loops."""

    def var(self, v: Var, c: int) -> str:
        """C expression of component ``c`` of variable ``v`` at the current (i, j)."""
        ...

    def is_integer(self, v: Var) -> bool:
        """True when ``v`` is bound to an int64 index array (it feeds IndexMatch)."""
        ...

    def index(self, axis: str) -> str:
        """C expression (``lm_index``) of the current i (``axis="i"``) or j index."""
        ...


def literal(value: float) -> str:
    """An exact C literal of type ``lm_real`` (hexadecimal: no decimal rounding)."""
    if math.isnan(value):
        return "((lm_real)NAN)"
    if math.isinf(value):
        return "((lm_real)INFINITY)" if value > 0 else "(-(lm_real)INFINITY)"
    return f"((lm_real){value.hex()})"


def unsupported(formula: Node) -> str | None:
    """Why the emitter cannot compile ``formula`` (an unknown node type), or None."""
    for node in formula.walk():
        if not has_rule(type(node)):
            return f"the C code generator has no rule for {type(node).__name__}"
    return None


def scalar_count(formula: Node) -> int:
    """Number of scalar temporaries the formula's code holds (its straight-line size)."""
    return sum(n.dim for n in formula.walk() if not isinstance(n, (Const, vec.Concat, vec.Slice)))


def formula_problem(formula: Node, engine: str, max_scalars: int) -> str | None:
    """Why an engine built on this emitter declines ``formula`` (unknown node, too large), or None."""
    reason = unsupported(formula)
    size = scalar_count(formula)
    if reason is None and size > max_scalars:
        reason = f"the formula needs {size} scalar temporaries ({engine} compiles up to {max_scalars})"
    return reason


def depends_on(formula: Node, axis: str) -> set[Node]:
    """Nodes of ``formula`` whose value changes with the ``axis`` ("i" or "j") index."""
    dep: set[Node] = set()
    for node in formula.walk():
        if (
            (isinstance(node, Var) and node.cat == axis)
            or (isinstance(node, vec.IndexMatch) and node.axis == axis)
            or any(c in dep for c in node.children)
        ):
            dep.add(node)
    return dep


def _tree_sum(terms: list[str]) -> str:
    """Pairwise sum: shorter dependency chains and smaller round-off than a left fold."""
    while len(terms) > 1:
        pairs = [f"({terms[k]} + {terms[k + 1]})" for k in range(0, len(terms) - 1, 2)]
        terms = pairs + ([terms[-1]] if len(terms) % 2 else [])
    return terms[0]


#: sums of more terms than this run as _CHAINS interleaved accumulators (few live values)
_TREE_MAX = 8
_CHAINS = 4

Term = Callable[[], str]


class FormulaEmitter:
    """Emits C statements for formulas, remembering what it has emitted (CSE, hoisting).

    Emission is demand-driven and per component: component c of a node is written right
    before its first use, so long vectors are computed component by component (load y_k,
    subtract, square, accumulate, next k) instead of node by node. That keeps the number
    of live values small, which is what lets a compiler keep a D = 200 formula in
    registers instead of spilling hundreds of temporaries.
    """

    def __init__(
        self,
        names: Names,
        prefix: str = "t",
        chains: int = _CHAINS,
        swap: Callable[[Node], bool] | None = None,
    ) -> None:
        """``chains``: accumulators of a long sum. ``swap(sub)``: emit the difference of a
        squared ``Sub`` as b - a (the square is the same, bit for bit), for a skeleton
        whose compiler reads the second operand from memory (see ``CpuSkeleton``)."""
        self.names = names
        self.prefix = prefix
        self.chains = chains
        self.swap = swap
        self._done: dict[tuple[Node, int], str] = {}
        self._ids: dict[Node, int] = {}
        #: components held as lm_index (integer index arrays and their slices)
        self._integer: set[tuple[Node, int]] = set()
        self._lines: list[str] = []

    def take_lines(self) -> list[str]:
        """The statements emitted since the last call."""
        lines, self._lines = self._lines, []
        return lines

    def emit(self, formula: Node) -> list[str]:
        """C expressions of the components of ``formula`` (statements go to ``take_lines``)."""
        return [self.component(formula, c) for c in range(formula.dim)]

    def component(self, node: Node, c: int) -> str:
        """C expression of component ``c`` of ``node``, emitting what it needs first."""
        key = (node, c)
        found = self._done.get(key)
        if found is None:
            found = self._rule(node, c)
            self._done[key] = found
        return found

    # -- helpers --------------------------------------------------------------------------
    def _name(self, node: Node, c: int, suffix: str = "") -> str:
        ident = self._ids.setdefault(node, len(self._ids))
        return f"{self.prefix}{ident}_{c}{suffix}"

    def _assign(self, node: Node, c: int, expr: str, ctype: str = "lm_real", suffix: str = "") -> str:
        name = self._name(node, c, suffix)
        self._lines.append(f"const {ctype} {name} = {expr};")
        return name

    def _value(self, child: Node, c: int) -> str:
        """Component ``c`` of a child as a real (dim-1 children broadcast)."""
        c = c if child.dim > 1 else 0
        expr = self.component(child, c)
        return f"((lm_real){expr})" if (child, c) in self._integer else expr

    def _map(self, node: Node, c: int, template: str) -> str:
        """A template over component c of the children: ``{0}``, ``{1}``, ... are the children."""
        return self._assign(node, c, template.format(*(self._value(ch, c) for ch in node.children)))

    def _sum(self, node: Node, c: int, terms: list[Term]) -> str:
        """Sum of lazily emitted terms: a tree when short, interleaved chains when long."""
        if len(terms) <= _TREE_MAX:
            return self._assign(node, c, _tree_sum([t() for t in terms]))
        chains: list[str] = []
        for k, term in enumerate(terms):
            expr = term() if k < self.chains else f"{chains[k % self.chains]} + {term()}"
            name = self._assign(node, c, expr, suffix=f"_s{k}")
            if k < self.chains:
                chains.append(name)
            else:
                chains[k % self.chains] = name
        return self._assign(node, c, _tree_sum(chains))

    # -- the operation's own template, or one layout rule per structural node type -------
    def _rule(self, node: Node, c: int) -> str:
        kind = type(node)
        if isinstance(node, Var):
            expr = self.names.var(node, c)
            if self.names.is_integer(node):
                self._integer.add((node, c))
                return self._assign(node, c, expr, "lm_index")
            return self._assign(node, c, expr)
        if isinstance(node, Const):
            return literal(node.value)
        if isinstance(node, fn.Square) and self.swap is not None:
            child = node.children[0]
            if isinstance(child, alg.Sub) and self.swap(child):
                a, b = child.children
                diff = self._assign(child, c, f"{self._value(b, c)} - {self._value(a, c)}", suffix="_swap")
                return self._assign(node, c, f"{diff} * {diff}")
        if node.c is not None:
            return self._map(node, c, node.c)
        if isinstance(node, alg.SumDim):
            child = node.children[0]
            return self._sum(node, c, [self._term(child, k) for k in range(child.dim)])
        if isinstance(node, fn.PowConst):
            return self._power(node, c)
        if isinstance(node, (vec.Concat, vec.Slice)):
            child, k = self._source(node, c)
            found = self.component(child, k)
            if (child, k) in self._integer:  # index arrays stay integers (IndexMatch reads them)
                self._integer.add((node, c))
            return found
        if isinstance(node, vec.MatVecMult):
            A, v = node.children
            e = v.dim
            return self._sum(node, c, [self._product(A, c * e + k, v, k) for k in range(e)])
        if isinstance(node, vec.VecMatMult):
            u, A = node.children
            e = node.dim
            return self._sum(node, c, [self._product(u, r, A, r * e + c) for r in range(u.dim)])
        if isinstance(node, vec.TensorProd):
            a, b = node.children
            return self._assign(node, c, f"{self._value(a, c // b.dim)} * {self._value(b, c % b.dim)}")
        if isinstance(node, vec.OneHot):
            rounded = self._done.get((node, -1))
            if rounded is None:
                rounded = self._assign(node, 0, f"lm_rint({self._value(node.children[0], 0)})", suffix="_r")
                self._done[(node, -1)] = rounded
            return self._assign(node, c, f"(lm_real)({rounded} == (lm_real){c})")
        if isinstance(node, vec.IndexMatch):
            return self._index_match(node, c)
        raise NotImplementedError(f"the C code generator has no rule for {kind.__name__}")

    def _term(self, node: Node, c: int) -> Term:
        return lambda: self._value(node, c)

    def _product(self, a: Node, ca: int, b: Node, cb: int) -> Term:
        return lambda: f"{self._value(a, ca)} * {self._value(b, cb)}"

    @staticmethod
    def _source(node: Node, c: int) -> tuple[Node, int]:
        """The child and component that component c of a Concat or Slice is."""
        if isinstance(node, vec.Slice):
            return node.children[0], node.start + c
        a, b = node.children
        return (a, c) if c < a.dim else (b, c - a.dim)

    def _power(self, node: fn.PowConst, c: int) -> str:
        p = node.p
        if p not in _SMALL_POWERS:
            return self._map(node, c, f"lm_pow({{0}}, {literal(p)})")
        k = int(abs(p))
        product = " * ".join(["{0}"] * k)
        return self._map(node, c, product if p > 0 else f"(lm_real)1 / ({product})")

    def _index_match(self, node: vec.IndexMatch, c: int) -> str:
        sel = node.children[0]
        k = c if sel.dim > 1 else 0
        s = self.component(sel, k)
        if (sel, k) not in self._integer:  # a real-valued selector is truncated, as astype does
            s = f"(({s} == {s} && lm_fabs({s}) < (lm_real)9.2e18) ? (lm_index){s} : INT64_MIN)"
        return self._assign(node, c, f"(lm_real)({self.names.index(node.axis)} == {s})")


def emit_formula(formula: Node, names: Names, prefix: str = "t") -> tuple[list[str], list[str]]:
    """Straight-line C for ``formula``: (statements, C expressions of its components)."""
    emitter = FormulaEmitter(names, prefix)
    out = emitter.emit(formula)
    return emitter.take_lines(), out
