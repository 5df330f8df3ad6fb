"""KeOps' generic reductions: ``Genred``, the ``generic_*`` shortcuts and ``KernelSolve``.

``Genred(formula, aliases, reduction_op, axis, ...)`` parses the formula once
(:mod:`lazymat.keops.formula`); each call binds its arrays, argument k to the variable of
position k, and runs the reduction through lazymat's dispatch
(:mod:`lazymat.keops.reductions`), so it is differentiable wherever the arrays' library is
(torch autograd and torch.func, jax) and runs on lazymat's engines. A plain call (a reduction
of one lazymat kind, both sides among the arguments, default options, no ``ranges``/``out``/
``nbatchdims``) goes through the build-once form :class:`lazymat.build_once.Reduction`, built
with the Genred: the formula is bound and prepared once per signature of the arrays, not at
each call (the loops of pykeops code call one Genred thousands of times). The same classes serve
``lazymat.keops.torch`` and ``lazymat.keops.numpy``: the arrays say which library.

Arrays follow KeOps' layout: ``Vi(d)`` and ``Vj(d)`` arguments of shape (*batch, N, d),
``Pm(d)`` arguments of shape (d,) or (*batch, d); the result has shape (*batch, N, D) for a
reduction over j (axis=1) and (*batch, M, D) over i (axis=0). A formula without i- (or
j-) variables counts that side as one row, as KeOps does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lazymat.build_once import Reduction
from lazymat.ir.algebra import Mul
from lazymat.ir.leaves import Var
from lazymat.ir.node import Node
from lazymat.ir.transform import substitute, variables
from lazymat.lazymatrix import LazyMatrix, Pm, Vi, Vj

from .formula import Argument, FormulaError, parse, parse_alias
from .reductions import K_REDUCTIONS, Options, canonical, reduce

_WRAP = {"i": Vi, "j": Vj, "p": Pm}


def substituted(
    formulas: Sequence[Node], arguments: Sequence[Argument], matrices: Sequence[LazyMatrix], backend: Any
) -> list[LazyMatrix]:
    """The formulas as LazyMatrices, argument k's variable replaced by ``matrices[k]`` (a wrapped
    array, or a placeholder of the build-once form) after its declared dimension is checked."""
    table: dict[Var, Node] = {}
    bindings: dict[Var, Any] = {}
    for arg, wrapped in zip(arguments, matrices, strict=True):
        if wrapped.dim != arg.dim:
            label = arg.name or f"argument {arg.position}"
            raise ValueError(
                f"{label} is declared V{arg.cat}({arg.dim}) but its array has last dimension {wrapped.dim}"
            )
        table[arg.var] = wrapped.formula
        bindings.update(wrapped.bindings)
    return [
        LazyMatrix._new(
            substitute(f, lambda n: table.get(n) if isinstance(n, Var) else None), dict(bindings), backend
        )
        for f in formulas
    ]


def bind(formulas: Sequence[Node], arguments: Sequence[Argument], args: Sequence[Any]) -> list[LazyMatrix]:
    """The formulas as LazyMatrices over ``args`` (argument k bound to ``args[k]``)."""
    wrapped = [_WRAP[arg.cat](a) for arg, a in zip(arguments, args, strict=True)]
    backend = None
    for w in wrapped:
        if backend is not None and w.backend is not None and w.backend.name != backend.name:
            raise TypeError(f"arrays from several libraries: {backend.name} and {w.backend.name}")
        backend = backend or w.backend
    return substituted(formulas, arguments, wrapped, backend)


#: KeOps reductions that are one lazymat reduction, by their canonical names (K-mins: scalar formulas)
_ONE_REDUCTION = {
    "Sum": "sum",
    "LogSumExp": "lse",
    "Min": "min",
    "Max": "max",
    "ArgMin": "argmin",
    "ArgMax": "argmax",
    "Min_ArgMin": "min_argmin",
    "Max_ArgMax": "max_argmax",
    "KMin": "kmin",
    "ArgKMin": "argkmin",
    "KMin_ArgKMin": "kmin_argkmin",
}


class _Bound:
    """A parsed formula as the function of a build-once Reduction: the parsed variables
    replaced by the placeholders, their declared dimensions checked (picklable, as a Genred is)."""

    def __init__(self, node: Node, arguments: Sequence[Argument]) -> None:
        self.node, self.arguments = node, tuple(arguments)

    def __call__(self, *placeholders: LazyMatrix) -> LazyMatrix:
        return substituted([self.node], self.arguments, placeholders, None)[0]


def build_once(
    node: Node, arguments: Sequence[Argument], reduction: str, axis: int, k: int | None
) -> Reduction | None:
    """The build-once form of a plain Genred (see the module doc), or None if it has none: a
    reduction that is not one lazymat reduction, a K-min of a vector formula, or a side (i or
    j) without an argument (KeOps then counts that side as one row)."""
    name = _ONE_REDUCTION.get(reduction)
    cats = [arg.cat for arg in arguments]
    if name is None or "i" not in cats or "j" not in cats or (k is not None and node.dim != 1):
        return None

    return Reduction(_Bound(node, arguments), name, axis, inputs=cats, k=k or 0)


class Genred:
    """A KeOps generic reduction: ``Genred(formula, aliases, reduction_op="Sum", axis=0, ...)``,
    called on arrays (pykeops' signature; see the module doc)."""

    def __init__(
        self,
        formula: str,
        aliases: Sequence[str],
        reduction_op: str = "Sum",
        axis: int = 0,
        dtype: Any = None,
        opt_arg: int | None = None,
        formula2: str | None = None,
        cuda_type: Any = None,
        dtype_acc: str = "auto",
        use_double_acc: bool = False,
        sum_scheme: str = "auto",
        enable_chunks: bool = True,
        rec_multVar_highdim: Any = False,
        use_fast_math: bool = True,
    ) -> None:
        if axis not in (0, 1):
            raise ValueError(f"Genred reduces over axis 0 (i) or 1 (j), got axis={axis!r}")
        self.formula, self.formula2 = formula, formula2
        self.aliases = list(aliases)
        self.reduction_op = reduction_op
        self.reduction = canonical(reduction_op, formula2 is not None)
        self.axis, self.opt_arg = axis, opt_arg
        if self.reduction in K_REDUCTIONS and (not isinstance(opt_arg, int) or opt_arg < 1):
            raise ValueError(f"{reduction_op} needs opt_arg=K, an integer >= 1, got {opt_arg!r}")
        self.options = Options(
            sum_scheme=sum_scheme,
            dtype_acc=dtype_acc,
            use_double_acc=use_double_acc,
            enable_chunks=enable_chunks,
            use_fast_math=use_fast_math,
            rec_multVar_highdim=rec_multVar_highdim,
        )
        self.options.check(self.reduction)
        more = () if formula2 is None else (formula2,)
        self.nodes, self.arguments = parse(formula, self.aliases, *more)
        self.nargs = len(self.arguments)
        plain = formula2 is None and not self.options.float64_accumulation
        self._once = (
            build_once(self.nodes[0], self.arguments, self.reduction, axis, opt_arg) if plain else None
        )

    def __call__(
        self,
        *args: Any,
        backend: str = "auto",
        device_id: int = -1,
        ranges: Any = None,
        out: Any = None,
        nbatchdims: int | None = None,
    ) -> Any:
        if len(args) != self.nargs:
            raise ValueError(f"Genred takes {self.nargs} arrays (aliases {self.aliases}), got {len(args)}")
        plain = (
            backend == "auto" and device_id == -1 and ranges is None and out is None and nbatchdims is None
        )
        if plain and self._once is not None:
            return self._once(*args)
        bound = bind(self.nodes, self.arguments, args)
        options = Options(**{**vars(self.options), "backend": backend, "device_id": device_id})
        return reduce(
            bound[0],
            self.reduction,
            self.axis,
            k=self.opt_arg,
            weight=bound[1] if len(bound) > 1 else None,
            ranges=ranges,
            options=options,
            out=out,
            nbatchdims=nbatchdims,
        )

    def __repr__(self) -> str:
        red = f"reduction_op={self.reduction_op!r}, axis={self.axis}"
        return f"Genred({self.formula!r}, {self.aliases!r}, {red})"


def _output_axis(output: str) -> tuple[int, int]:
    """(axis, dim) of a ``generic_*`` output alias: ``"a = Vi(3)"`` reduces over j (axis 1)."""
    arg = parse_alias(output, 0)
    if arg.cat == "p":
        raise ValueError(f"the output {output!r} is indexed by i (Vi) or j (Vj), not a parameter")
    return (1 if arg.cat == "i" else 0), arg.dim


def generic_sum(formula: str, output: str, *aliases: str, **kwargs: Any) -> Genred:
    """``Genred(formula, aliases, "Sum")`` over the axis that the output alias is not indexed by."""
    return Genred(formula, list(aliases), reduction_op="Sum", axis=_output_axis(output)[0], **kwargs)


def generic_logsumexp(formula: str, output: str, *aliases: str, **kwargs: Any) -> Genred:
    return Genred(formula, list(aliases), reduction_op="LogSumExp", axis=_output_axis(output)[0], **kwargs)


def generic_argmin(formula: str, output: str, *aliases: str, **kwargs: Any) -> Genred:
    return Genred(formula, list(aliases), reduction_op="ArgMin", axis=_output_axis(output)[0], **kwargs)


def generic_argkmin(formula: str, output: str, *aliases: str, **kwargs: Any) -> Genred:
    """``Genred(..., "ArgKMin", opt_arg=K)`` with K the output alias's dimension."""
    axis, k = _output_axis(output)
    return Genred(formula, list(aliases), reduction_op="ArgKMin", axis=axis, opt_arg=k, **kwargs)


class KernelSolve:
    """KeOps' ``KernelSolve(formula, aliases, varinvalias, axis)``: the solution a of
    ``alpha a + sum_j K(x_i, y_j) a_j = b_i`` (axis=1; axis=0 sums over i) for a formula
    ``K(x, y) * a`` with a scalar kernel K, by lazymat's conjugate gradient (which needs the
    same points on both sides; differentiable in b, alpha and the kernel's arrays). The call
    takes the right-hand side b at the unknown's position."""

    def __init__(
        self,
        formula: str,
        aliases: Sequence[str],
        varinvalias: str,
        axis: int = 0,
        dtype_acc: str = "auto",
        use_double_acc: bool = False,
        sum_scheme: str = "auto",
        enable_chunks: bool = True,
        rec_multVar_highdim: Any = None,
        dtype: Any = None,
        cuda_type: Any = None,
        use_fast_math: bool = True,
    ) -> None:
        if axis not in (0, 1):
            raise ValueError(f"KernelSolve reduces over axis 0 (i) or 1 (j), got axis={axis!r}")
        self.formula, self.aliases, self.axis = formula, list(aliases), axis
        (node,), self.arguments = parse(formula, self.aliases)
        unknown = [a for a in self.arguments if a.name == varinvalias]
        if not unknown:
            raise FormulaError(f"KernelSolve: no alias named {varinvalias!r} among {self.aliases}")
        self.unknown = unknown[0]
        if self.unknown.cat != ("j" if axis == 1 else "i"):
            raise ValueError(
                f"KernelSolve over axis {axis}: the unknown {varinvalias!r} must be a "
                f"V{'j' if axis == 1 else 'i'} variable, got V{self.unknown.cat}"
            )
        self.kernel = _scalar_kernel(node, self.unknown.var, formula)
        self.nargs = len(self.arguments)
        self.options = Options(sum_scheme=sum_scheme, dtype_acc=dtype_acc, use_double_acc=use_double_acc)
        self.options.check("Sum")

    def __call__(
        self,
        *args: Any,
        backend: str = "auto",
        device_id: int = -1,
        alpha: Any = 1e-10,
        eps: float = 1e-6,
        ranges: Any = None,
    ) -> Any:
        if len(args) != self.nargs:
            raise ValueError(
                f"KernelSolve takes {self.nargs} arrays (aliases {self.aliases}), got {len(args)}"
            )
        if ranges is not None:
            raise NotImplementedError(
                "KernelSolve with ranges: lazymat's conjugate gradient runs on dense kernels"
            )
        Options(backend=backend, device_id=device_id).check("Sum")
        b = args[self.unknown.position]
        others = [(arg, a) for arg, a in zip(self.arguments, args, strict=True) if arg != self.unknown]
        (K,) = bind([self.kernel], [arg for arg, _ in others], [a for _, a in others])
        if self.axis == 0:
            K = K.T
        if hasattr(alpha, "shape") and tuple(alpha.shape) != ():
            alpha = alpha.reshape(())
        return K.solve(b, alpha=alpha, tol=eps)


def _scalar_kernel(formula: Node, unknown: Var, text: str) -> Node:
    """K of ``formula = K * unknown`` (either order) with K scalar and free of ``unknown``."""
    if isinstance(formula, Mul):
        for a, b in (formula.children, formula.children[::-1]):
            if b == unknown and a.dim == 1 and unknown not in variables(a):
                return a
    raise NotImplementedError(
        f"KernelSolve solves formulas of the form K(x, y) * {unknown!r} with a scalar kernel K; got {text!r}"
    )
