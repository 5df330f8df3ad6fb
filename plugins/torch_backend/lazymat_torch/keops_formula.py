"""Translation of a lazymat formula into a KeOps formula string (pure Python).

Variables keep their positions (``v0=Vi(3)``, ``v1=Vj(3)``, ...). Constants become
extra parameters rather than literals, so that the compiled kernel does not depend on
their values (a Gaussian kernel compiles once for every bandwidth). Each operation spells
itself (``Node.keops``, rewrites included: ``minimum(a, b) = IfElse(b - a, a, b)``,
``tanh(a) = 1 - 2 / (exp(2a) + 1)``); this module writes the leaves and the operations that
need extra arguments: a one-hot encoding compares ``Round(a)`` with the parameter
(0, 1, ..., size - 1), and the index mask of the min/K-min gradients compares its operand
with an extra variable holding the reduced index (``IndexMatch`` -> ``Equal(sel, j)``),
which is exact while indices fit the float mantissa.

A formula KeOps cannot express raises :class:`UnsupportedFormulaError` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lazymat.plugin import Const, IndexMatch, Node, OneHot, PowConst, ReductionSpec, Var

#: longest formula string handed to KeOps (strings expand shared sub-formulas)
MAX_FORMULA_CHARS = 20000

_CATS = {"i": "Vi", "j": "Vj", "p": "Pm"}


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
        """The string of ``node`` given the strings ``s`` of its children.

        An operation spells itself (``Node.keops``); leaves and the operations whose KeOps
        form needs extra arguments (constants, the reduced index) are written here.
        """
        if isinstance(node, Var):
            return f"v{node.index}"
        if isinstance(node, Const):
            return self.constant((node.value,) * node.dim)
        if node.keops is not None:
            return node.keops.format(*s, node=node)
        if isinstance(node, PowConst):
            p = node.p
            if p == int(p):
                n = int(p)
                return f"Pow({s[0]},{n})" if n >= 0 else f"Inv(Pow({s[0]},{-n}))"
            if p == 0.5:
                return f"Sqrt({s[0]})"
            # not KeOps' Powf, which calls C's single-precision powf on the CPU in every dtype
            # (float64 results off by 1e-8 relative, pykeops 2.3); exp(p log a) keeps the dtype
            return f"Exp({self.constant((p,))}*Log({s[0]}))"
        if isinstance(node, OneHot):
            classes = self.constant(tuple(float(c) for c in range(node.size)))
            return f"Equal(Round({s[0]},0),{classes})"
        if isinstance(node, IndexMatch):
            return f"Equal({s[0]},{self.index(node.axis)})"
        raise UnsupportedFormulaError(f"KeOps has no translation of the operation {type(node).__name__}")


def translate(spec: ReductionSpec) -> KeOpsFormula:
    """The KeOps formula of a spec; raises :class:`UnsupportedFormulaError` with the reason."""
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
    return KeOpsFormula(formula, spec.kind.keops, aliases, t.constants, t.index_vars)
