"""Engines that read memory (native code) on jax values, through ``jax.pure_callback``.

Reductions of jax arrays are always traced (the ``lazymat_reduce`` primitive is jitted), so
an engine that is not ``traceable`` (``native-cpu``: compiled C reading raw memory) cannot
see them directly. :meth:`JaxBackend.run_engine` hands it a ``jax.pure_callback``: the
callback receives the concrete arrays in host memory, reads them without copies
(``np.from_dlpack``) as the same request over numpy arrays (``request.on_host``), and the
outputs (linear size) are copied back by jax. Engine choice happened before, in the core's
dispatch, on the traced request: an engine declines arrays off the CPU by asking the
backend (``JaxBackend.on_host``: a tracer lives on jax's default device).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from lazymat.plugin import Engine, ReductionRequest


def host_call(engine: Engine, request: ReductionRequest) -> tuple[Any, ...]:
    """The request's outputs computed by ``engine`` in a ``jax.pure_callback``."""
    spec = request.spec
    index_dtype = jax.dtypes.canonicalize_dtype(np.int64)
    dtypes = [np.dtype(request.dtype) if kind == "value" else index_dtype for kind in spec.kind.outputs]
    shape = (*request.batch, request.n, spec.out_dim)

    def on_host(*args: Any) -> tuple[np.ndarray, ...]:
        outs = engine.run(request.on_host([np.from_dlpack(a) for a in args]))
        return tuple(np.asarray(o, dtype=d) for o, d in zip(outs, dtypes, strict=True))

    # The primitive's batching rule handles jax.vmap before lowering, so the callback is
    # never vmapped there; "expand_dims" (a leading batch axis, 1 where unmapped) is the
    # batch broadcasting the engines themselves implement, should anyone vmap it directly.
    return tuple(
        jax.pure_callback(
            on_host,
            tuple(jax.ShapeDtypeStruct(shape, d) for d in dtypes),
            *request.args,
            vmap_method="expand_dims",
        )
    )
