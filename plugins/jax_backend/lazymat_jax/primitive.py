"""The ``lazymat_reduce`` jax primitive: a reduction that every jax transformation sees.

One bind computes every output of a reduction spec on its arrays. Its rules:

- evaluation: the selected engine (``jax-xla`` by default), jitted per spec; where dispatch
  picks ``native-cpu`` for arrays on the CPU, a callback to it (:mod:`lazymat_jax.native_call`);
- abstract evaluation: the engine traced by ``jax.eval_shape``, which also checks the
  request (sizes, dtypes) at trace time with lazymat's usual error messages;
- lowering: the engine's traced code (``mlir.lower_fun``), so the primitive inlines in
  ``jax.jit`` programs;
- batching (``jax.vmap``): the mapped axis becomes a new leading batch dimension;
- forward mode (``jax.jvp``): a sum reduction linear in the tangents
  (:mod:`lazymat_jax.tangents`);
- transposition (reverse mode): the core's symbolic VJP (``reduction_vjp``), new binds.

Reverse mode is jax's linearize-then-transpose, so ``jax.grad`` runs the forward-mode
rule and transposes it, storing only linear-size residuals. Each rule binds the same
primitive again, so derivatives of any order (``grad`` of ``grad``, ``jax.hessian`` =
``jacfwd`` of ``jacrev``) work without further code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from lazymat.autodiff import reduction_vjp
from lazymat.backend import Backend
from lazymat.config import config, get_option
from lazymat.dispatch import select_engine
from lazymat.request import ReductionSpec, build_request

from .native_call import native_call, native_engine
from .tangents import WITH_INDEX, tangent_reduction

reduce_p = Primitive("lazymat_reduce")
reduce_p.multiple_results = True


def reduce_with_primitive(
    backend: Backend, spec: ReductionSpec, args: Sequence[Any], engine: str | None
) -> tuple[Any, ...]:
    """Bind the primitive; engine and tile budget are read from lazymat's config now."""
    return tuple(
        reduce_p.bind(
            *args,
            spec=spec,
            backend=backend,
            engine=get_option("engine", engine),
            tile_bytes=get_option("tile_bytes"),
        )
    )


def _run(*args: Any, spec: ReductionSpec, backend: Backend, engine: str | None, tile_bytes: int) -> Any:
    """The engine's outputs (traced or concrete)."""
    request = build_request(spec, args, backend, tile_bytes)
    native = native_engine(request, engine)
    if native is not None:
        return native_call(request, native)
    return tuple(select_engine(request, engine).run(request))


_run_jit = jax.jit(_run, static_argnames=("spec", "backend", "engine", "tile_bytes"))


def _impl(*args: Any, **params: Any) -> Any:
    return _run_jit(*args, **params)


def _abstract_eval(*avals: Any, **params: Any) -> list[Any]:
    shapes = [jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=a.weak_type) for a in avals]
    outs = jax.eval_shape(partial(_run, **params), *shapes)
    return [jax.core.ShapedArray(o.shape, o.dtype) for o in outs]


def _zero_tangent(x: Any) -> Any:
    return ad.Zero(jax.typeof(x).to_tangent_aval())


def _jvp(primals: Sequence[Any], tangents: Sequence[Any], **params: Any) -> tuple[list[Any], list[Any]]:
    spec: ReductionSpec = params["spec"]
    red = spec.kind
    live = {k: t for k, t in enumerate(tangents) if type(t) is not ad.Zero}
    if not red.differentiable or not live:
        outs = reduce_p.bind(*primals, **params)
        return outs, [_zero_tangent(o) for o in outs]
    if spec.reduction in WITH_INDEX:  # values and indices in one pass
        paired = dataclasses.replace(spec, reduction=WITH_INDEX[spec.reduction])
        values, indices = reduce_p.bind(*primals, **{**params, "spec": paired})
        outs, aux = [values], [indices]
    else:
        outs = reduce_p.bind(*primals, **params)
        found = red.aux_from_outputs(tuple(outs))
        if found is None:
            raise NotImplementedError(f"forward mode of the {spec.reduction} reduction")
        aux = found
    tangent = tangent_reduction(spec, primals, live, aux)
    value = red.outputs.index("value")
    if tangent is None:
        t_value = _zero_tangent(outs[value])
    else:
        t_spec, t_args = tangent
        t_value = reduce_p.bind(*t_args, **{**params, "spec": t_spec})[0]
    return outs, [t_value if k == value else _zero_tangent(o) for k, o in enumerate(outs)]


def _transpose(cts: Sequence[Any], *args: Any, **params: Any) -> list[Any]:
    """Reverse mode of a reduction linear in its undefined arguments (the jvp's tangent)."""
    spec: ReductionSpec = params["spec"]
    undefined = [ad.is_undefined_primal(a) for a in args]
    if spec.reduction != "sum":
        raise NotImplementedError(
            f"lazymat_reduce is linear only as a sum reduction, cannot transpose a {spec.reduction}"
        )
    ct = cts[0]
    if type(ct) is ad.Zero:
        return [None] * len(args)
    filled = [jnp.zeros(a.aval.shape, a.aval.dtype) if u else a for a, u in zip(args, undefined, strict=True)]
    with config(tile_bytes=params["tile_bytes"]):
        grads = reduction_vjp(
            spec, filled, (None,), [ct], undefined, backend=params["backend"], engine=params["engine"]
        )
    return [
        (ad.Zero(a.aval) if g is None else g) if u else None
        for a, g, u in zip(args, grads, undefined, strict=True)
    ]


def _batch(args: Sequence[Any], dims: Sequence[int | None], **params: Any) -> tuple[list[Any], list[int]]:
    """vmap: the mapped axis becomes the first batch dimension of every mapped argument."""
    spec: ReductionSpec = params["spec"]
    lead = [1 if v.cat == "p" else 2 for v in spec.variables]
    ranks = [a.ndim - (d is not None) - n for a, d, n in zip(args, dims, lead, strict=True)]
    rank = max(ranks)
    moved = []
    for a, d, r in zip(args, dims, ranks, strict=True):
        if d is not None:
            a = jnp.moveaxis(a, d, 0)
            a = jnp.reshape(a, (a.shape[0],) + (1,) * (rank - r) + a.shape[1:])
        moved.append(a)
    outs = reduce_p.bind(*moved, **params)
    return outs, [0] * len(outs)


reduce_p.def_impl(_impl)
reduce_p.def_abstract_eval(_abstract_eval)
mlir.register_lowering(reduce_p, mlir.lower_fun(_run, multiple_results=True))
ad.primitive_jvps[reduce_p] = _jvp
ad.primitive_transposes[reduce_p] = _transpose
batching.primitive_batchers[reduce_p] = _batch
