"""One fused reduction of a scalar LazyMatrix and of its derivatives in its i-variables.

Kernel Hamiltonians and kernel losses need, for a scalar matrix E_ij built from a few
arrays (points q, momenta p, ...), the row sums

    sum_j E_ij   and   sum_j dE_ij / dv_i   for some i-indexed arrays v,

evaluated again and again on new arrays (every step of a geodesic shooting), and the
vector-Jacobian product of these sums (the adjoint of the shooting, Hessian-vector
products of the Hamiltonian). :class:`RowReduction` builds the formula once, with the
core's symbolic differentiation (:func:`lazymat.ir.transform.vjp`), concatenates the
pieces into one formula (one reduction per evaluation, the i-side derivatives
sharing every sub-expression), and rebinds its arrays on each call. Every call goes
through ``Backend.reduce``, so it is differentiable to any order on backends with
autodiff, and its VJP (:meth:`RowReduction.vjp`) is again a reduction on every backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lazymat.dispatch import make_call, reduce
from lazymat.ir.leaves import Const
from lazymat.ir.node import Node
from lazymat.ir.transform import vjp
from lazymat.ir.vector import concat
from lazymat.lazymatrix import LazyMatrix
from lazymat.request import ReductionSpec


class RowReduction:
    """sum_j [E_ij (if ``value``), dE_ij/dv_i for v in ``wrt``] as one reduction over j.

    ``E`` is a LazyMatrix (scalar when ``wrt`` is not empty) built from the arrays
    ``inputs`` (and possibly other, fixed arrays such as kernel parameters); ``wrt`` lists
    positions in ``inputs`` of arrays wrapped as i-variables. Calling the object with new
    arrays (same shapes, in the order of ``inputs``) returns the pieces, shapes
    (*batch, N, E.dim) for the value and (*batch, N, D_v) for each derivative.
    """

    def __init__(self, E: LazyMatrix, inputs: Sequence[Any], wrt: Sequence[int], value: bool = False):
        if not isinstance(E, LazyMatrix) or (wrt and E.dim != 1):
            raise TypeError(f"expected a {'scalar ' if wrt else ''}LazyMatrix, got {E!r}")
        if E.backend is None:
            raise ValueError("the matrix is not bound to any array")
        ids = [id(a) for a in inputs]
        if len(set(ids)) != len(ids):
            raise ValueError("RowReduction needs distinct input arrays")
        spec, args = E.prepare("sum", 1)
        self.backend = E.backend
        self.args = tuple(args)
        self.roles = [ids.index(id(a)) if id(a) in ids else None for a in args]
        formula = spec.formula
        parts: list[Node] = [formula] if value else []
        self.widths: list[int] = [E.dim] if value else []
        for k in wrt:
            v = next(
                (v for v, r in zip(spec.variables, self.roles, strict=True) if r == k and v.cat == "i"), None
            )
            if v is None:
                raise ValueError(f"input {k} is not an i-indexed variable of the matrix")
            g = vjp(formula, v, Const(1.0))
            parts.append(Const(0.0, v.dim) if g is None else g)
            self.widths.append(v.dim)
        out = parts[0]
        for piece in parts[1:]:
            out = concat(out, piece)
        self.spec = ReductionSpec(out, "sum", signature=tuple(spec.variables))

    def _bind(self, arrays: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(a if r is None else arrays[r] for a, r in zip(self.args, self.roles, strict=True))

    def _split(self, out: Any) -> tuple[Any, ...]:
        pieces, start = [], 0
        for w in self.widths:
            pieces.append(out[..., start : start + w])
            start += w
        return tuple(pieces)

    def __call__(self, *arrays: Any) -> tuple[Any, ...]:
        return self._split(reduce(self.spec, self._bind(arrays), backend=self.backend)[0])

    def vjp(self, arrays: Sequence[Any], cotangents: Sequence[Any]) -> list[Any]:
        """Gradient of sum_pieces <cotangent, piece> with respect to each of ``arrays``.

        One cotangent per piece (same shapes as the pieces); returns one array per input
        (zeros where the pieces do not depend on it).
        """
        xp = self.backend.namespace(cotangents[0])
        cot = cotangents[0] if len(cotangents) == 1 else xp.concat(list(cotangents), axis=-1)
        args = self._bind(arrays)
        wanted = [r is not None for r in self.roles]
        grads = make_call(self.spec, self.backend).vjp(args, (), [cot], wanted)
        out = [xp.zeros_like(a) for a in arrays]
        for g, r in zip(grads, self.roles, strict=True):
            if g is not None and r is not None:
                out[r] = out[r] + g
        return out
