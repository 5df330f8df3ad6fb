"""The ``lazymat_reduce`` jax primitive: a reduction that every jax transformation sees.

One bind computes every output of a reduction on its arrays. Its only parameter is the
core's :class:`~lazymat.plugin.ReductionCall` (spec, backend, forced engine, tile budget:
hashable), and every rule defers to it, so that engine choice and derivatives are the
core's, not this module's:

- evaluation: ``call.run`` (dispatch: engine selection, fallback), jitted per call;
  engines that need concrete memory (native-cpu) reach jax's values through
  :meth:`JaxBackend.run_engine` (a ``jax.pure_callback``);
- abstract evaluation: ``call.run`` traced by ``jax.eval_shape``, which also checks the
  request (sizes, dtypes) at trace time with lazymat's usual error messages;
- lowering: ``call.run``'s traced code (``mlir.lower_fun``), so the primitive inlines in
  ``jax.jit`` programs; :func:`inlined` tells an engine whether the reduction it is
  asked about is part of such a program, where it may prefer to be fused (``jax-xla`` on a
  problem of one tile: a ``jax.pure_callback`` out of a compiled program costs more than
  the small problem);
- batching (``jax.vmap``): the mapped axis becomes a new leading batch dimension;
- forward mode (``jax.jvp``): ``call.jvp``, a sum reduction linear in the tangents;
- transposition (reverse mode): ``call.vjp`` of that linear sum reduction.

Reverse mode is jax's linearize-then-transpose, so ``jax.grad`` runs the forward-mode
rule and transposes it, storing only linear-size residuals. Each rule binds the same
primitive again (through the backend's hook), so derivatives of any order (``grad`` of
``grad``, ``jax.hessian`` = ``jacfwd`` of ``jacrev``) work without further code.
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from lazymat.plugin import ReductionCall

reduce_p = Primitive("lazymat_reduce")
reduce_p.multiple_results = True


def bind(call: ReductionCall, args: Sequence[Any]) -> tuple[Any, ...]:
    """The reduction's outputs, as one bind of the primitive."""
    return tuple(reduce_p.bind(*args, call=call))


def _run(*args: Any, call: ReductionCall) -> tuple[Any, ...]:
    return tuple(call.run(*args))


#: whether the reduction being traced is the program of one eager call (``_impl``)
_OWN_PROGRAM = contextvars.ContextVar("lazymat_jax_own_program", default=False)


def inlined(args: Sequence[Any]) -> bool:
    """Whether a reduction of ``args`` becomes part of a program of the user's (traced under
    ``jax.jit``, or its gradient's transpose there), rather than a program of its own (an
    eager call, whose arrays are traced by ``_impl``'s jit only)."""
    return not _OWN_PROGRAM.get() and any(isinstance(a, jax.core.Tracer) for a in args)


_run_jit = jax.jit(_run, static_argnames=("call",))


def _impl(*args: Any, call: ReductionCall) -> Any:
    token = _OWN_PROGRAM.set(True)
    try:
        return _run_jit(*args, call=call)
    finally:
        _OWN_PROGRAM.reset(token)


def _abstract_eval(*avals: Any, call: ReductionCall) -> list[Any]:
    shapes = [jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=a.weak_type) for a in avals]
    outs = jax.eval_shape(partial(_run, call=call), *shapes)
    return [jax.core.ShapedArray(o.shape, o.dtype) for o in outs]


def _zero_tangent(x: Any) -> Any:
    return ad.Zero(jax.typeof(x).to_tangent_aval())


def _jvp(primals: Sequence[Any], tangents: Sequence[Any], *, call: ReductionCall) -> tuple[Any, Any]:
    red = call.spec.kind
    live = [None if type(t) is ad.Zero else t for t in tangents]
    if not red.differentiable or all(t is None for t in live):
        outs = reduce_p.bind(*primals, call=call)
        return outs, [_zero_tangent(o) for o in outs]
    aux = None
    if red.partial != red.name:  # min, max, K-min: values and indices in one pass
        paired = bind(call.with_spec(replace(call.spec, reduction=red.partial)), primals)
        outs, aux = list(red.from_partial(paired)), [paired[1]]
    else:
        outs = reduce_p.bind(*primals, call=call)
    out_tangents = call.jvp(primals, outs, live, aux)
    return outs, [_zero_tangent(o) if t is None else t for o, t in zip(outs, out_tangents, strict=True)]


def _transpose(cts: Sequence[Any], *args: Any, call: ReductionCall) -> list[Any]:
    """Reverse mode of a reduction linear in its undefined arguments (the jvp's tangent)."""
    undefined = [ad.is_undefined_primal(a) for a in args]
    if call.spec.reduction != "sum":
        raise NotImplementedError(
            f"lazymat_reduce is linear only as a sum reduction, cannot transpose a {call.spec.reduction}"
        )
    ct = cts[0]
    if type(ct) is ad.Zero:
        return [None] * len(args)
    filled = [jnp.zeros(a.aval.shape, a.aval.dtype) if u else a for a, u in zip(args, undefined, strict=True)]
    grads = call.vjp(filled, (None,), [ct], undefined)
    return [
        (ad.Zero(a.aval) if g is None else g) if u else None
        for a, g, u in zip(args, grads, undefined, strict=True)
    ]


def _batch(
    args: Sequence[Any], dims: Sequence[int | None], *, call: ReductionCall
) -> tuple[list[Any], list[int]]:
    """vmap: the mapped axis becomes the first batch dimension of every mapped argument."""
    lead = [1 if v.cat == "p" else 2 for v in call.spec.variables]
    ranks = [a.ndim - (d is not None) - n for a, d, n in zip(args, dims, lead, strict=True)]
    rank = max(ranks)
    moved = []
    for a, d, r in zip(args, dims, ranks, strict=True):
        if d is not None:
            a = jnp.moveaxis(a, d, 0)
            a = jnp.reshape(a, (a.shape[0],) + (1,) * (rank - r) + a.shape[1:])
        moved.append(a)
    outs = reduce_p.bind(*moved, call=call)
    return outs, [0] * len(outs)


reduce_p.def_impl(_impl)
reduce_p.def_abstract_eval(_abstract_eval)
mlir.register_lowering(reduce_p, mlir.lower_fun(_run, multiple_results=True))
ad.primitive_jvps[reduce_p] = _jvp
ad.primitive_transposes[reduce_p] = _transpose
batching.primitive_batchers[reduce_p] = _batch
