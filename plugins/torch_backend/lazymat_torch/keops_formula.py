"""Translation of a lazymat formula into a KeOps formula string (pure Python).

Variables keep their positions (``v0=Vi(3)``, ``v1=Vj(3)``, ...). Constants become
extra parameters rather than literals, so that the compiled kernel does not depend on
their values (a Gaussian kernel compiles once for every bandwidth). Operations KeOps has
no name for are rewritten: ``minimum(a, b) = IfElse(b - a, a, b)``,
``tanh(a) = 1 - 2 / (exp(2a) + 1)``, a one-hot encoding compares ``Round(a)`` with the
parameter (0, 1, ..., size - 1), and the index mask of the min/K-min gradients compares
its operand with an extra variable holding the reduced index (``IndexMatch`` ->
``Equal(sel, j)``), which is exact while indices fit the float mantissa.

A formula KeOps cannot express raises :class:`UnsupportedFormulaError` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lazymat.ir import algebra, functions, vector
from lazymat.ir.leaves import Const, Var
from lazymat.ir.node import Node
from lazymat.request import ReductionSpec

#: longest formula string handed to KeOps (strings expand shared sub-formulas)
MAX_FORMULA_CHARS = 20000

#: lazymat reduction -> the KeOps reduction that computes it (min, argmin and min_argmin
#: share one kernel, and so do the max and K-min families)
REDUCTIONS: dict[str, str] = {
    "sum": "Sum",
    "lse": "LogSumExp",
    "min": "Min_ArgMin",
    "argmin": "Min_ArgMin",
    "min_argmin": "Min_ArgMin",
    "max": "Max_ArgMax",
    "argmax": "Max_ArgMax",
    "max_argmax": "Max_ArgMax",
    "kmin": "KMin_ArgKMin",
    "argkmin": "KMin_ArgKMin",
    "kmin_argkmin": "KMin_ArgKMin",
}

_CATS = {"i": "Vi", "j": "Vj", "p": "Pm"}
_UNARY = {
    functions.Exp: "Exp",
    functions.Log: "Log",
    functions.Sin: "Sin",
    functions.Cos: "Cos",
    functions.Sqrt: "Sqrt",
    functions.Rsqrt: "Rsqrt",
    functions.Abs: "Abs",
    functions.Sign: "Sign",
    functions.Step: "Step",
    functions.Relu: "ReLU",
    functions.Square: "Square",
    algebra.Neg: "Minus",
    algebra.SumDim: "Sum",
}
_INFIX = {algebra.Add: "+", algebra.Sub: "-", algebra.Mul: "*", algebra.Div: "/"}
_CALL2 = {
    functions.Atan2: "Atan2",
    vector.Concat: "Concat",
    vector.MatVecMult: "MatVecMult",
    vector.VecMatMult: "VecMatMult",
    vector.TensorProd: "TensorProd",
}


class UnsupportedFormulaError(ValueError):
    """The formula or reduction has no KeOps translation; the message says why."""


@dataclass
class KeOpsFormula:
    """A KeOps formula string, its aliases (in argument order) and the extra arguments.

    Arguments are the request's arrays, then ``constants`` (value, dim) as parameters, then
    the index variables named in ``index_vars`` ("i", "j") holding 0, 1, 2, ...
    """

    formula: str
    reduction: str
    aliases: list[str] = field(default_factory=list)
    constants: list[tuple[tuple[float, ...], int]] = field(default_factory=list)
    index_vars: list[str] = field(default_factory=list)


class _Translator:
    def __init__(self, spec: ReductionSpec) -> None:
        self.aliases = [f"v{v.index}={_CATS[v.cat]}({v.dim})" for v in spec.variables]
        self.constants: list[tuple[tuple[float, ...], int]] = []
        self.index_vars: list[str] = []

    def constant(self, values: tuple[float, ...]) -> str:
        """The name of a parameter holding ``values`` (one per distinct tuple)."""
        entry = (values, len(values))
        if entry not in self.constants:
            self.constants.append(entry)
        return f"c{self.constants.index(entry)}"

    def index(self, axis: str) -> str:
        if axis not in self.index_vars:
            self.index_vars.append(axis)
        return f"{axis}{axis}"

    def node(self, node: Node, s: list[str]) -> str:
        """The string of ``node`` given the strings ``s`` of its children."""
        kind = type(node)
        if isinstance(node, Var):
            return f"v{node.index}"
        if isinstance(node, Const):
            return self.constant((node.value,) * node.dim)
        if kind in _UNARY:
            return f"{_UNARY[kind]}({s[0]})"
        if kind in _INFIX:
            return f"({s[0]}{_INFIX[kind]}{s[1]})"
        if kind in _CALL2:
            return f"{_CALL2[kind]}({s[0]},{s[1]})"
        return self._special(node, s)

    def _special(self, node: Node, s: list[str]) -> str:
        if isinstance(node, functions.Tanh):
            one, two = self.constant((1.0,)), self.constant((2.0,))
            return f"({one}-{two}/(Exp({two}*{s[0]})+{one}))"
        if isinstance(node, functions.PowConst):
            p = node.p
            if p == int(p):
                n = int(p)
                return f"Pow({s[0]},{n})" if n >= 0 else f"Inv(Pow({s[0]},{-n}))"
            return f"Powf({s[0]},{self.constant((p,))})"
        if isinstance(node, functions.Minimum):
            return f"IfElse(({s[1]}-{s[0]}),{s[0]},{s[1]})"
        if isinstance(node, functions.Maximum):
            return f"IfElse(({s[0]}-{s[1]}),{s[0]},{s[1]})"
        if isinstance(node, functions.IfElse):
            return f"IfElse({s[0]},{s[1]},{s[2]})"
        if isinstance(node, vector.Slice):
            return f"Extract({s[0]},{node.start},{node.stop - node.start})"
        if isinstance(node, vector.OneHot):
            classes = self.constant(tuple(float(c) for c in range(node.size)))
            return f"Equal(Round({s[0]},0),{classes})"
        if isinstance(node, vector.IndexMatch):
            return f"Equal({s[0]},{self.index(node.axis)})"
        raise UnsupportedFormulaError(f"KeOps has no translation of the operation {type(node).__name__}")


def translate(spec: ReductionSpec) -> KeOpsFormula:
    """The KeOps formula of a spec; raises :class:`UnsupportedFormulaError` with the reason."""
    if spec.reduction not in REDUCTIONS:
        raise UnsupportedFormulaError(f"KeOps has no reduction for {spec.reduction!r}")
    if spec.reduction == "lse" and spec.formula.dim != 1:
        raise UnsupportedFormulaError(
            f"KeOps' LogSumExp takes scalar formulas only, this one has inner dimension {spec.formula.dim}"
        )
    t = _Translator(spec)
    strings: dict[Node, str] = {}
    for node in spec.formula.walk():
        strings[node] = t.node(node, [strings[c] for c in node.children])
    formula = strings[spec.formula]
    if len(formula) > MAX_FORMULA_CHARS:
        raise UnsupportedFormulaError(
            f"the KeOps formula string would have {len(formula)} characters "
            f"(more than {MAX_FORMULA_CHARS}): too large to compile"
        )
    aliases = list(t.aliases)
    aliases += [f"c{k}=Pm({dim})" for k, (_, dim) in enumerate(t.constants)]
    aliases += [f"{axis}{axis}={_CATS[axis]}(1)" for axis in t.index_vars]
    return KeOpsFormula(formula, REDUCTIONS[spec.reduction], aliases, t.constants, t.index_vars)
