"""Gradients of reductions, built as new reductions (linear memory, any order).

For a j-reduction R_i = red_j F(x_i, y_j, p) with output cotangent G_i, the reduction
kind gives a weight formula W_ij (G_i for a sum, G_i exp(F_ij - R_i) for log-sum-exp,
G_i [j = argmin_i] for min, ...). Then, with H_v = (dF/dv)^T W:

- an i-variable x_i gets sum_j H_x (a j-reduction),
- a j-variable y_j gets sum_i H_y (an i-reduction: the transposed problem),
- a parameter p gets sum_i sum_j H_p (a j-reduction summed over i).

All i-side gradients share one reduction (their formulas are concatenated), and so do
all j-side ones.

Forward mode: the directional derivative dF[t] = sum_v (dF/dv) t_v of a formula follows
from the reverse-mode rules by the double-VJP identity: with a fresh variable u of F's
dimension, G(u) = sum_v <(dF/dv)^T u, t_v> is linear in u and its gradient in u is dF[t]
(symbolic differentiation in u removes u). The tangent of R_i = red_j F_ij is then a *sum*
reduction over j of a formula linear in the tangents, weighted by the kind
(``Reduction.jvp_weight``: softmax weights for a log-sum-exp, the selected index for
min/max and K-min).

All these reductions go through the call's backend hook again (``call.reduce``), so a
backend's autodiff differentiates them like any other reduction: derivatives of any
order, in either mode, need no extra code.

The derivative specs depend on the forward spec, which arguments are differentiated and
the widths of the cotangent and auxiliary arrays, never on the data: they are built once
per such key and cached (:mod:`lazymat.call_cache`), so a backward pass in a loop costs
its reductions only.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .block_sparse import BlockSparsity
from .call_cache import LRUCache
from .ir.algebra import add
from .ir.leaves import Const, Var
from .ir.node import Node
from .ir.transform import renumber, transpose, transpose_var, variables, vjp
from .ir.vector import Concat, dot
from .request import ReductionSpec

if TYPE_CHECKING:
    from .backend import Backend
    from .dispatch import ReductionCall

_MISSING = object()


def compact_reduction(
    formula: Node, args: Sequence[Any], signature: Sequence[Var], ranges: BlockSparsity | None
) -> tuple[ReductionSpec, list[Any]]:
    """The sum reduction of ``formula`` over the arrays it uses: its spec and those arrays.

    Derivative formulas (VJPs here, forward-mode tangents in backends such as lazymat-jax)
    are built over a long list of candidate arrays ``args`` (the primal arguments, the
    cotangents or tangents, the forward's auxiliary outputs), described by ``signature``
    (variable ``k`` is bound to ``args[k]``), and mention only some of them. This
    renumbers the variables that ``formula`` uses from 0 and keeps only their arrays, so
    that the engines see no unused argument. A side (i or j) that the formula no longer
    mentions keeps one variable of ``signature``, which fixes its length. The reduction
    visits the block-sparsity pattern ``ranges``.
    """
    used = sorted(variables(formula), key=lambda v: v.index)
    extra = [
        next(v for v in signature if v.cat == cat) for cat in ("i", "j") if all(v.cat != cat for v in used)
    ]
    order = used + extra
    sig = tuple(Var(n, v.cat, v.dim) for n, v in enumerate(order)) if extra else ()
    spec = ReductionSpec(renumber(formula, order), "sum", signature=sig, ranges=ranges)
    return spec, [args[v.index] for v in order]


def _unbroadcast(xp: Any, g: Any, shape: tuple[int, ...]) -> Any:
    """Sum ``g`` over the batch dimensions that were broadcast to reach it from ``shape``."""
    extra = len(g.shape) - len(shape)
    if extra > 0:
        g = xp.sum(g, axis=tuple(range(extra)))
    axes = tuple(k for k, (s, t) in enumerate(zip(shape, g.shape, strict=True)) if s == 1 and t != 1)
    if axes:
        g = xp.sum(g, axis=axes, keepdims=True)
    return g


def _concat_all(parts: list[Node]) -> Node:
    out = parts[0]
    for p in parts[1:]:
        out = Concat(out, p)
    return out


def _auxiliary(call: ReductionCall, args: Sequence[Any], outputs: Sequence[Any]) -> list[Any]:
    """The arrays a derivative of ``call`` needs besides the (co)tangents (lse values, indices)."""
    red = call.spec.kind
    aux = red.aux_from_outputs(tuple(outputs))
    if aux is None:
        assert red.aux_reduction is not None
        spec = call.spec
        aux_spec = ReductionSpec(spec.formula, red.aux_reduction, spec.k, spec.signature, spec.ranges)
        aux = list(call.reduce(aux_spec, args))
    return aux


@dataclass(frozen=True)
class _Piece:
    """One side's reduction of a VJP: its spec, the positions of its arrays among
    ``[*args, cotangent, *aux]``, and (argument, width, category) of each gradient it holds."""

    spec: ReductionSpec
    arrays: tuple[int, ...]
    grads: tuple[tuple[int, int, str], ...]


#: symbolic VJPs and JVPs of specs, by (spec, backend, dtypes, wanted arguments, extras' widths)
_DERIVATIVES = LRUCache("derivatives", 2048)


def _cached(key: Hashable, build: Callable[[], Any]) -> Any:
    """The derivative cached under ``key``, built (and kept) on the first request."""
    value = _DERIVATIVES.get(key, _MISSING)
    if value is _MISSING:
        value = build()
        _DERIVATIVES.put(key, value)
    return value


def _floating(backend: Backend, args: Sequence[Any]) -> tuple[bool, ...]:
    """Which arguments are floating-point arrays (once per backend and dtypes)."""
    return _cached(  # type: ignore[no-any-return]
        ("floating", backend, tuple(a.dtype for a in args)),
        lambda: tuple(backend.is_floating(a) for a in args),
    )


def _vjp_pieces(
    spec: ReductionSpec, wanted: tuple[bool, ...], cot_dim: int, aux_dims: tuple[int, ...]
) -> list[_Piece]:
    """The reductions of a VJP (i side, j side), built symbolically (see :func:`reduction_vjp`)."""
    red = spec.kind
    n = len(wanted)
    cot_var = Var(n, "i", cot_dim)
    aux_vars = [Var(n + 1 + k, "i", d) for k, d in enumerate(aux_dims)]
    weight = red.vjp_weight(spec.formula, cot_var, aux_vars)
    sides: dict[str, list[tuple[int, Var, Node]]] = {"i": [], "j": []}
    signature = [*spec.variables, cot_var, *aux_vars]
    for k, v in enumerate(spec.variables):
        if not wanted[k]:
            continue
        h = vjp(spec.formula, v, weight)
        if h is not None:
            sides["j" if v.cat == "j" else "i"].append((k, v, h))
    pieces = []
    for side, items in sides.items():
        if not items:
            continue
        formula = _concat_all([h for _, _, h in items])
        sig, ranges = signature, spec.ranges
        if side == "j":
            formula = transpose(formula)
            sig = [transpose_var(v) for v in signature]
            ranges = None if ranges is None else ranges.transpose()
        sub_spec, positions = compact_reduction(formula, range(len(signature)), sig, ranges)
        pieces.append(_Piece(sub_spec, tuple(positions), tuple((k, h.dim, v.cat) for k, v, h in items)))
    return pieces


def reduction_vjp(
    call: ReductionCall,
    args: Sequence[Any],
    outputs: Sequence[Any],
    cotangents: Sequence[Any | None],
    wanted: Sequence[bool],
) -> list[Any | None]:
    """Gradients of a reduction's outputs, contracted with ``cotangents``, per argument.

    Returns one array per entry of ``args`` (shaped like it), or None where ``wanted`` is
    False, the argument is an integer array, or the formula does not depend on it. The
    symbolic derivatives are built once per (spec, backend, dtypes, wanted arguments, widths
    of the cotangent and auxiliary arrays), not at every backward.
    """
    spec, backend = call.spec, call.backend
    red = spec.kind
    grads: list[Any | None] = [None] * len(args)
    if not red.differentiable:
        return grads
    cot = cotangents[red.outputs.index("value")]
    if cot is None:
        return grads
    floating = _floating(backend, args)
    xp = backend.namespace(cot)
    cot = xp.astype(cot, args[floating.index(True)].dtype)

    aux = _auxiliary(call, args, outputs)
    live = tuple(bool(w) and f for w, f in zip(wanted, floating, strict=True))
    widths = (int(cot.shape[-1]), tuple(int(a.shape[-1]) for a in aux))
    pieces = _cached(("vjp", spec, live, widths), lambda: _vjp_pieces(spec, live, *widths))
    all_args = [*args, cot, *aux]
    for piece in pieces:
        out = call.reduce(piece.spec, [all_args[k] for k in piece.arrays])[0]
        start = 0
        for k, width, cat in piece.grads:
            g = out[..., start : start + width]
            start += width
            if cat == "p":
                g = xp.sum(g, axis=-2)
            grads[k] = _unbroadcast(xp, g, tuple(args[k].shape))
    return grads


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


def reduction_jvp(
    call: ReductionCall,
    args: Sequence[Any],
    outputs: Sequence[Any],
    tangents: Sequence[Any | None],
    aux: Sequence[Any] | None = None,
) -> list[Any | None]:
    """Forward-mode tangents of a reduction's outputs: one per output, None for indices and zeros.

    ``tangents[k]`` is the tangent of argument k (None: zero). ``aux`` are the arrays the
    derivative needs when the caller has them already (the indices of a min computed with
    its argmin in one pass); by default they come from ``outputs`` or one more reduction.
    The tangent is a sum reduction over the same block-sparsity pattern as the forward.
    """
    spec, backend = call.spec, call.backend
    red = spec.kind
    result: list[Any | None] = [None] * len(red.outputs)
    floating = _floating(backend, args)
    live = tuple(k for k, t in enumerate(tangents) if t is not None and floating[k])
    if not red.differentiable or not live:
        return result
    signature = spec.variables
    n = len(signature)
    tvars = [Var(n + q, signature[k].cat, signature[k].dim) for q, k in enumerate(live)]
    d = _cached(
        ("jvp", spec, live),
        lambda: directional_derivative(
            spec.formula, [(signature[k], t) for k, t in zip(live, tvars, strict=True)]
        ),
    )
    if d is None:
        return result
    aux = list(aux) if aux is not None else _auxiliary(call, args, outputs)
    aux_dims = tuple(int(a.shape[-1]) for a in aux)

    def tangent_reduction() -> tuple[ReductionSpec, list[int]]:
        aux_vars = [Var(n + len(live) + r, "i", w) for r, w in enumerate(aux_dims)]
        weight = red.jvp_weight(spec.formula, d, aux_vars)
        count = n + len(live) + len(aux_vars)
        return compact_reduction(weight, range(count), [*signature, *tvars, *aux_vars], spec.ranges)

    t_spec, positions = _cached(("jvp tangent", spec, live, aux_dims), tangent_reduction)
    arrays = [*args, *(tangents[k] for k in live), *aux]
    result[red.outputs.index("value")] = call.reduce(t_spec, [arrays[k] for k in positions])[0]
    return result


def matrix_vjp(
    matrix: Any,
    cotangent: Any = None,
    *,
    reduction: str = "sum",
    axis: int = 1,
    k: int = 0,
    wrt: Sequence[Any] | None = None,
    engine: str | None = None,
    ranges: BlockSparsity | None = None,
) -> tuple[Any, ...]:
    """Gradient of ``matrix.reduce(reduction, axis)`` contracted with ``cotangent``.

    With ``cotangent=None``, the gradient of the sum of the values (``lazymat.grad``).
    Works for every backend, with or without autodiff of its own (numpy, cupy). ``wrt``
    lists the arrays (as passed to Vi/Vj/Pm) to differentiate with respect to; by default
    every array of the formula, in order of first appearance. An array the formula does
    not depend on gets zeros.
    """
    from .dispatch import make_call, select_backend

    spec, args = matrix.prepare(reduction, axis, k, ranges)
    backend = select_backend(args)
    call = make_call(spec, backend, engine)
    outputs = backend.apply_reduction(call, tuple(args))
    red = spec.kind
    if not red.differentiable:
        raise ValueError(f"{reduction} returns indices and has no gradient")
    value = outputs[red.outputs.index("value")]
    if cotangent is None:  # gradient of the sum of the values
        cotangent = backend.namespace(value).ones_like(value)
    if tuple(cotangent.shape) != tuple(value.shape):
        raise ValueError(
            f"cotangent of shape {tuple(cotangent.shape)} for an output of shape {tuple(value.shape)}"
        )
    cots = [cotangent if kind == "value" else None for kind in red.outputs]
    targets = list(args) if wrt is None else list(wrt)
    # only the arguments asked for: each one more is a reduction of its own
    wanted = [any(a is t for t in targets) for a in args]
    grads = call.vjp(args, outputs, cots, wanted)
    result = []
    for target in targets:
        total = None
        for a, g in zip(args, grads, strict=True):
            if a is target and g is not None:
                total = g if total is None else total + g
        if total is None:
            total = backend.namespace(target).zeros_like(target)
        result.append(total)
    return tuple(result)
