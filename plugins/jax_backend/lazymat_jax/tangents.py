"""Forward-mode derivatives of reductions, as new reductions (symbolic, linear memory).

The core's IR knows reverse-mode derivatives only (``Node.vjp``). The directional
derivative dF[t] = sum_v (dF/dv) t_v of a formula follows from them by the double-VJP
identity: with a fresh variable u of F's dimension, G(u) = sum_v <(dF/dv)^T u, t_v> is
linear in u and its gradient in u is dF[t]. Symbolic differentiation in u removes u.

The tangent of a reduction R_i = red_j F_ij is then a *sum* reduction over j of a formula
linear in the tangents t: dF[t] itself for a sum, softmax weights times dF[t] for a
log-sum-exp, dF[t] at the selected index for min/max and K-min. Such a reduction is
transposed (for reverse mode) by ``lazymat.autodiff.reduction_vjp``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lazymat.autodiff import compact_reduction
from lazymat.ir.algebra import add, mul, sub
from lazymat.ir.functions import Exp
from lazymat.ir.leaves import Const, Var
from lazymat.ir.node import Node
from lazymat.ir.transform import variables, vjp
from lazymat.ir.vector import IndexMatch, dot
from lazymat.reductions import Reduction
from lazymat.request import ReductionSpec

#: reductions whose forward mode needs the selected indices, and the reduction giving
#: values and indices in one pass
WITH_INDEX = {"min": "min_argmin", "max": "max_argmax", "kmin": "kmin_argkmin"}


def directional_derivative(formula: Node, pairs: Sequence[tuple[Var, Var]]) -> Node | None:
    """Formula of dF[t] = sum over (v, t) of (dF/dv) t; None when F depends on none of the v."""
    u = Var(-1, "i", formula.dim)  # never bound to an array: it disappears below
    g: Node | None = None
    for v, t in pairs:
        h = vjp(formula, v, u)
        if h is not None:
            term = dot(h, t)
            g = term if g is None else add(g, term)
    if g is None:
        return None
    d = vjp(g, u, Const(1.0))
    if d is not None and u in variables(d):
        raise NotImplementedError(
            f"forward-mode derivative of {formula!r}: an operation's vjp is not linear in its cotangent"
        )
    return d


def tangent_weight(red: Reduction, formula: Node, d: Node, aux: Sequence[Var]) -> Node:
    """The formula whose sum over j is the tangent of ``red`` (``d`` = dF[t])."""
    name = red.name
    if name == "sum":
        return d
    if name == "lse":  # softmax weights exp(F - R), R the forward's log-sum-exp
        return mul(d, Exp(sub(formula, aux[0])))
    if name in ("min", "max", "min_argmin", "max_argmax"):  # dF at the selected j, per entry
        return mul(d, IndexMatch(aux[0], "j"))
    if name in ("kmin", "kmin_argkmin"):  # scalar dF at each of the K selected j
        return mul(IndexMatch(aux[0], "j"), d)
    raise NotImplementedError(f"no forward-mode derivative for the {name} reduction")


def tangent_reduction(
    spec: ReductionSpec,
    primals: Sequence[Any],
    tangents: dict[int, Any],
    aux: Sequence[Any],
) -> tuple[ReductionSpec, list[Any]] | None:
    """The sum reduction (spec and arrays) giving the tangent of ``spec``'s value output.

    It visits the same block-sparsity pattern (``spec.ranges``) as the reduction itself.
    ``tangents`` maps argument positions to their (non-zero) tangent arrays; ``aux`` are
    the arrays the reduction's derivative needs (log-sum-exp values, selected indices).
    None when the formula depends on none of the perturbed arguments.
    """
    signature = spec.variables
    n = len(signature)
    live = sorted(tangents)
    tvars = [Var(n + q, signature[k].cat, signature[k].dim) for q, k in enumerate(live)]
    aux_vars = [Var(n + len(live) + r, "i", int(a.shape[-1])) for r, a in enumerate(aux)]
    d = directional_derivative(spec.formula, [(signature[k], t) for k, t in zip(live, tvars, strict=True)])
    if d is None:
        return None
    weight = tangent_weight(spec.kind, spec.formula, d, aux_vars)
    arrays = [*primals, *(tangents[k] for k in live), *aux]
    return compact_reduction(weight, arrays, [*signature, *tvars, *aux_vars], spec.ranges)
