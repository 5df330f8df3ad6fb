"""Engines that read memory (native code) on jax values, through ``jax.pure_callback``.

Reductions of jax arrays are always traced (the ``lazymat_reduce`` primitive is jitted), so
an engine that is not ``traceable`` (``native-cpu``: compiled C reading raw memory) cannot
see them directly. :meth:`JaxBackend.run_engine` hands it a ``jax.pure_callback``: the
callback receives the concrete arrays in host memory, reads them without copies
(``np.from_dlpack``) as the same request over numpy arrays (``request.on_host``), and the
outputs (linear size) are copied back by jax. Engine choice happened before, in the core's
dispatch, on the traced request: an engine declines arrays off the CPU by asking the
backend (``JaxBackend.on_host``: a tracer lives on jax's default device).

Forward mode: jax cannot differentiate a ``pure_callback``. Inside the primitive the
callback only ever sees primal values (the primitive's own JVP rule runs first), but a
reduction run outside it on traced arrays (``call.run`` in the forward pass of the generic
``Backend.custom_vjp`` hook, differentiated again by an outer ``jax.grad`` / ``jax.jvp``)
reaches the callback under a JVP trace. The callback is therefore wrapped in a
``jax.custom_jvp`` whose rule is the core's symbolic tangent reduction (``ReductionCall.jvp``,
run through the primitive): the same derivative the primitive uses, so the host engine
stays usable under every transformation, instead of failing and falling back with an
``EngineWarning``.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.custom_derivatives import SymbolicZero

from lazymat.plugin import Engine, ReductionCall, ReductionRequest


def host_call(engine: Engine, request: ReductionRequest) -> tuple[Any, ...]:
    """The request's outputs computed by ``engine`` in a ``jax.pure_callback`` (differentiable)."""
    spec = request.spec
    index_dtype = jax.dtypes.canonicalize_dtype(np.int64)
    dtypes = [np.dtype(request.dtype) if kind == "value" else index_dtype for kind in spec.kind.outputs]
    shape = (*request.batch, request.n, spec.out_dim)

    def on_host(*args: Any) -> tuple[np.ndarray, ...]:
        outs = engine.run(request.on_host([np.from_dlpack(a) for a in args]))
        return tuple(np.asarray(o, dtype=d) for o, d in zip(outs, dtypes, strict=True))

    @jax.custom_jvp
    def callback(*args: Any) -> tuple[Any, ...]:
        # The primitive's batching rule handles jax.vmap before lowering, so the callback is
        # never vmapped there; "expand_dims" (a leading batch axis, 1 where unmapped) is the
        # batch broadcasting the engines themselves implement, should anyone vmap it directly.
        return tuple(
            jax.pure_callback(
                on_host,
                tuple(jax.ShapeDtypeStruct(shape, d) for d in dtypes),
                *args,
                vmap_method="expand_dims",
            )
        )

    def tangents(primals: tuple[Any, ...], dots: tuple[Any, ...]) -> tuple[Any, Any]:
        outs = callback(*primals)
        live = [None if isinstance(t, SymbolicZero) or t.dtype == jax.dtypes.float0 else t for t in dots]
        # No forced engine: the tangent reduction is another spec, dispatched by priority.
        call = ReductionCall(spec, request.backend, None, request.tile_bytes)
        out_dots = call.jvp(primals, outs, live)
        return outs, tuple(_zero_tangent(o) if t is None else t for o, t in zip(outs, out_dots, strict=True))

    callback.defjvp(tangents, symbolic_zeros=True)
    return tuple(callback(*request.args))


def _zero_tangent(x: Any) -> Any:
    """The zero tangent of an output: float0 for indices, as jax requires."""
    if jax.numpy.issubdtype(x.dtype, jax.numpy.floating):
        return jax.numpy.zeros_like(x)
    return np.zeros(x.shape, dtype=jax.dtypes.float0)
