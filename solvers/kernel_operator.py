"""A square, symmetric, scalar LazyMatrix seen as a linear operator on (*batch, N, E) arrays.

The kernel solvers (conjugate gradient, its preconditioners, its implicit gradient) need
more than ``K @ v``: they rebind the matrix to other arrays (the autodiff hook hands its
forward pass detached copies), read its diagonal and a few of its columns, and contract
its derivative with two vectors. :class:`KernelOperator` holds the matrix as a formula
over numbered variables plus the arrays bound to them, and builds each of these
reductions directly, so every one of them runs through ``Backend.reduce`` (on any
engine, differentiable wherever the backend is).

**The symmetry rule.** The solvers need ``K`` symmetric: ``K_ij = F(x_i, x_j)`` over *the
same points* on both sides. Checked when the operator is built:

1. every array bound to an i-variable is bound to a j-variable too, and the other way
   round (``Vi(x)`` and ``Vj(x)`` of the *same array object*; parameters are free);
2. the formula is symmetric: exactly, when transposing it
   (:func:`lazymat.ir.transform.transpose`) and matching each variable with its
   counterpart bound to the same array gives back the same formula; otherwise
   numerically, on the dense block of up to 32 evenly spaced points, to
   ``sqrt(eps)`` relative accuracy.

A formula that passes rule 2 only on the sampled block is not detected; positive
definiteness is not checked up front (conjugate gradient reports a negative curvature).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lazymat.backend import Backend
from lazymat.dispatch import make_call, reduce
from lazymat.ir.algebra import mul
from lazymat.ir.leaves import Var
from lazymat.ir.node import Node
from lazymat.ir.transform import renumber, substitute, transpose, variables
from lazymat.lazymatrix import LazyMatrix
from lazymat.request import ReductionSpec

#: points used by the numerical symmetry check
SYMMETRY_SAMPLE = 32
_SWAP = {"i": "j", "j": "i", "p": "p"}


def bind(formula: Node, pairs: Sequence[tuple[Var, Any]]) -> tuple[ReductionSpec, tuple[Any, ...]]:
    """A sum spec of ``formula`` whose variables are numbered in the order of ``pairs``.

    Every variable of ``pairs`` stays an argument even if the formula no longer uses it
    (its array still fixes a size), hence the explicit signature.
    """
    order = [v for v, _ in pairs]
    missing = set(variables(formula)) - set(order)
    if missing:
        raise ValueError(f"formula variables {sorted(map(repr, missing))} have no array")
    signature = tuple(Var(n, v.cat, v.dim) for n, v in enumerate(order))
    return ReductionSpec(renumber(formula, order), "sum", signature=signature), tuple(a for _, a in pairs)


class KernelOperator:
    """``v -> K @ v`` for a square symmetric scalar LazyMatrix, with its diagonal and columns."""

    def __init__(
        self,
        formula: Node,
        variables_: Sequence[Var],
        args: Sequence[Any],
        backend: Backend,
        twin: dict[Var, Var] | None = None,
    ):
        self.formula = formula
        self.variables = tuple(variables_)
        self.args = tuple(args)
        self.backend = backend
        data = next(a for v, a in zip(self.variables, self.args, strict=True) if v.cat == "i")
        self.xp = backend.namespace(data)
        self.n = int(data.shape[-2])
        self.dtype = data.dtype
        self.device = backend.device(data)
        self._specs: dict[int, ReductionSpec] = {}
        if twin is None:  # the variable bound to the same array on the other side (rule 1)
            by_array = {(id(a), v.cat): v for v, a in self.pairs()}
            twin = {v: by_array[(id(a), _SWAP[v.cat])] for v, a in self.pairs()}
        self.twin = twin

    # -- construction and checks ----------------------------------------------------------
    @classmethod
    def from_lazymatrix(cls, K: LazyMatrix, *, what: str = "cg") -> KernelOperator:
        """Check the symmetry rule (module doc) and build the operator; clear errors otherwise."""
        if not isinstance(K, LazyMatrix):
            raise TypeError(f"{what} expects a LazyMatrix, got {type(K).__module__}.{type(K).__name__}")
        if K.dim != 1:
            raise ValueError(
                f"{what} needs a scalar formula (inner dimension 1), got inner dimension {K.dim}"
            )
        spec, args = K.prepare("sum", 1)
        vars_ = spec.variables
        i_arrays = {id(a): a for v, a in zip(vars_, args, strict=True) if v.cat == "i"}
        j_arrays = {id(a): a for v, a in zip(vars_, args, strict=True) if v.cat == "j"}
        if not i_arrays or i_arrays.keys() != j_arrays.keys():
            only_i = [tuple(a.shape) for k, a in i_arrays.items() if k not in j_arrays]
            only_j = [tuple(a.shape) for k, a in j_arrays.items() if k not in i_arrays]
            raise ValueError(
                f"{what} needs a symmetric matrix K(x_i, x_j) over the same points on both sides: every "
                "array wrapped with Vi(...) must also be wrapped with Vj(...) (the same array object) and "
                f"the other way round; arrays only on the i side: shapes {only_i}, only on the j side: "
                f"shapes {only_j}"
            )
        backend = K.backend
        if backend is None:
            raise ValueError(f"{what} needs a matrix bound to arrays")
        op = cls(spec.formula, vars_, args, backend)
        op._check_symmetric(what)
        return op

    def with_args(self, args: Sequence[Any]) -> KernelOperator:
        """The same formula bound to other arrays (same order, shapes and library)."""
        return KernelOperator(self.formula, self.variables, args, self.backend, self.twin)

    def detached(self) -> KernelOperator:
        """The same operator on arrays cut from the autodiff graph."""
        cut: dict[int, Any] = {}
        return self.with_args([cut.setdefault(id(a), self.backend.stop_gradient(a)) for a in self.args])

    def pairs(self) -> list[tuple[Var, Any]]:
        """(variable, array) for every argument of the formula."""
        return list(zip(self.variables, self.args, strict=True))

    @property
    def batched(self) -> bool:
        """True when some array has batch dimensions."""
        return any(len(a.shape) > (1 if v.cat == "p" else 2) for v, a in self.pairs())

    def _transposed_formula(self) -> Node:
        """F^T with each variable renamed to its counterpart bound to the same array."""
        table = {Var(v.index, _SWAP[v.cat], v.dim): self.twin[v] for v in self.variables}
        return substitute(transpose(self.formula), lambda n: table.get(n) if isinstance(n, Var) else None)

    def _check_symmetric(self, what: str) -> None:
        if self._transposed_formula() == self.formula:
            return
        xp = self.xp
        s = min(self.n, SYMMETRY_SAMPLE)
        step = max(1, self.n // s)
        idx = xp.asarray(list(range(0, step * s, step)), dtype=xp.int64, device=self.device)
        block = self.detached().columns(idx, rows=idx)
        err = float(xp.max(xp.abs(block - xp.matrix_transpose(block))))
        scale = float(xp.max(xp.abs(block)))
        tol = float(xp.finfo(self.dtype).eps) ** 0.5 * max(scale, 1e-300)
        if not err <= tol:  # NaN fails too
            raise ValueError(
                f"{what} needs a symmetric formula, F(x_i, x_j) = F(x_j, x_i): the formula {self.formula!r} "
                f"is not symmetric under transposition, and on {s} sample points "
                f"max |K - K^T| = {err:.3g} > {tol:.3g}"
            )

    # -- reductions -----------------------------------------------------------------------
    def _matvec_spec(self, cols: int) -> ReductionSpec:
        """The spec of sum_j F_ij v_j for v of ``cols`` columns (cached per width)."""
        if cols not in self._specs:
            v = Var(-1, "j", cols)
            self._specs[cols] = bind(mul(self.formula, v), [*self.pairs(), (v, None)])[0]
        return self._specs[cols]

    def matvec(self, v: Any) -> Any:
        """K @ v for v of shape ``(*batch, N, E)`` (differentiable through the backend)."""
        spec = self._matvec_spec(int(v.shape[-1]))
        return reduce(spec, (*self.args, v), backend=self.backend)[0]

    def matvec_vjp(self, x: Any, cot: Any) -> list[Any | None]:
        """Gradient of <cot, K(args) @ x> with respect to each of ``args`` (None: no dependency).

        This is the term d/dA of the implicit-function rule: with A x = b, dL/dA = -lambda x^T
        contracts with dA/dtheta as ``-matvec_vjp(x, lambda)``.
        """
        spec = self._matvec_spec(int(x.shape[-1]))
        wanted = [self.backend.is_floating(a) for a in self.args] + [False]
        grads = make_call(spec, self.backend).vjp((*self.args, x), (), [cot], wanted)
        return list(grads[: len(self.args)])

    def diagonal(self) -> Any:
        """The diagonal K_ii = F(x_i, x_i), shape ``(*batch, N, 1)``."""
        xp = self.xp
        to_i = {v: w for v, w in self.twin.items() if v.cat == "j"}
        diag = substitute(self.formula, lambda node: to_i.get(node) if isinstance(node, Var) else None)
        one = Var(-1, "j", 1)
        pairs = [(v, a) for v, a in self.pairs() if v.cat != "j"]
        ones = xp.ones((1, 1), dtype=self.dtype, device=self.device)
        spec, args = bind(mul(diag, one), [*pairs, (one, ones)])
        return reduce(spec, args, backend=self.backend)[0]

    def columns(self, idx: Any, rows: Any = None) -> Any:
        """The columns ``K[:, idx]`` (shape ``(*batch, N, len(idx))``), or the block ``K[rows, idx]``."""
        xp = self.xp
        r = int(idx.shape[0])
        pairs = []
        for v, a in self.pairs():
            if v.cat == "j":
                a = xp.take(a, idx, axis=-2)
            elif v.cat == "i" and rows is not None:
                a = xp.take(a, rows, axis=-2)
            pairs.append((v, a))
        eye = xp.eye(r, dtype=self.dtype, device=self.device)
        e = Var(-1, "j", r)
        spec, args = bind(mul(self.formula, e), [*pairs, (e, eye)])
        return reduce(spec, args, backend=self.backend)[0]
