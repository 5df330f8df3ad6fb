"""jax arrays on the CPU reduced by the ``native-cpu`` engine, through ``jax.pure_callback``.

The ``lazymat_reduce`` primitive (:mod:`lazymat_jax.primitive`) asks :func:`native_engine`
at trace time whether dispatch sends its request to ``native-cpu``; if so,
:func:`native_call` emits a ``jax.pure_callback`` to the compiled kernel in place of the
traced ``jax-xla`` code. The callback receives jax arrays in host memory and reads them
without copies (``np.from_dlpack``); the outputs (linear size) are copied back by jax.

The decision applies lazymat's dispatch to the same arrays as they will be at run time:
numpy placeholders of their shapes and dtypes (broadcast scalars, no memory), which
``native-cpu`` accepts where it would accept the jax arrays in CPU memory. A tracer has
no device yet; like :meth:`JaxBackend.device`, the decision takes jax's default device.
Derivatives and ``vmap`` are rules of the primitive, which bind it again: they reach
this callback as ordinary (batched) requests.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from lazymat.dispatch import select_engine
from lazymat.engine import Engine
from lazymat.plugin_manager import get_registry
from lazymat.request import ReductionRequest, build_request

NATIVE = "native-cpu"


def _placeholder(a: Any) -> np.ndarray:
    """A read-only numpy array with ``a``'s shape and dtype that allocates nothing."""
    return np.broadcast_to(np.zeros((), dtype=a.dtype), a.shape)


def native_engine(request: ReductionRequest, engine: str | None) -> Engine | None:
    """The ``native-cpu`` engine if dispatch picks it for ``request`` on the CPU, else None.

    ``engine`` is the forced engine (or None for dispatch by priority). Forcing
    ``native-cpu`` on a request it cannot run raises dispatch's error, with the reason.
    """
    if NATIVE not in get_registry().engines or getattr(request.device, "platform", None) != "cpu":
        return None
    host = dataclasses.replace(request, args=tuple(_placeholder(a) for a in request.args))
    chosen = select_engine(host, engine)
    return chosen if chosen.name == NATIVE else None


def native_call(request: ReductionRequest, native: Engine) -> tuple[Any, ...]:
    """The request's outputs computed by ``native`` in a ``jax.pure_callback``."""
    spec = request.spec
    index_dtype = jax.dtypes.canonicalize_dtype(np.int64)
    dtypes = [np.dtype(request.dtype) if kind == "value" else index_dtype for kind in spec.kind.outputs]
    shape = (*request.batch, request.n, spec.out_dim)
    numpy = get_registry().backend("numpy")

    def on_host(*args: Any) -> tuple[np.ndarray, ...]:
        host = [np.from_dlpack(a) for a in args]
        outs = native.run(build_request(spec, host, numpy, request.tile_bytes))
        return tuple(np.asarray(o, dtype=d) for o, d in zip(outs, dtypes, strict=True))

    # The primitive's batching rule handles jax.vmap before lowering, so the callback is
    # never vmapped there; "expand_dims" (a leading batch axis, 1 where unmapped) is the
    # batch broadcasting the engine itself implements, should anyone vmap it directly.
    return tuple(
        jax.pure_callback(
            on_host,
            tuple(jax.ShapeDtypeStruct(shape, d) for d in dtypes),
            *request.args,
            vmap_method="expand_dims",
        )
    )
