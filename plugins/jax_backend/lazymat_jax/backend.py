"""The jax backend: recognising jax arrays and tracers, data exchange, autodiff hooks.

Reductions of jax arrays run as one jax primitive (:mod:`lazymat_jax.primitive`, bound by
:meth:`apply_reduction`, the core's reduction hook) rather than through :meth:`custom_vjp`:
a ``jax.custom_vjp`` function cannot be differentiated in forward mode (``jax.jvp``,
``jax.jacfwd``, ``jax.hessian`` refuse it), whereas the primitive carries forward-mode,
transposition and batching rules built from the core's symbolic derivatives.
:meth:`custom_vjp` remains the generic hook for the solvers' implicit gradients (reverse
mode, any order). Engines that cannot be traced run in a callback (:meth:`run_engine`).

Nothing here imports jax at module level: the plugin must load without it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from lazymat.plugin import Backend

from .namespace import X64_HINT, jax_namespace, x64_enabled

if TYPE_CHECKING:
    from lazymat.plugin import Engine, ReductionCall, ReductionRequest


def _is_jax_module(mod: str) -> bool:
    return mod in ("jax", "jaxlib") or mod.startswith(("jax.", "jaxlib."))


class JaxBackend(Backend):
    """jax arrays (and tracers) on any jax device; float32, and float64 with x64 enabled."""

    name = "jax"
    module = "jax"
    distribution = "lazymat-jax"
    has_autodiff = True

    # -- recognition and array facts --------------------------------------------------------
    def recognizes(self, x: Any) -> bool:
        """Concrete arrays (``jaxlib...ArrayImpl``) and tracers (``jax._src.interpreters...``).

        A jax array can only exist once jax is imported, so the check looks jax up in
        ``sys.modules`` instead of importing it.
        """
        if not _is_jax_module(type(x).__module__):
            return False
        jax = sys.modules.get("jax")
        return jax is not None and isinstance(x, jax.Array)

    def namespace(self, x: Any) -> Any:
        return jax_namespace()

    def default_namespace(self) -> Any:
        return jax_namespace()

    def device(self, x: Any) -> Any:
        """The device of a concrete array; for a tracer, the default device.

        A tracer has no device until the traced computation runs; jax then places it with
        the computation's other operands, which is the default device unless they are
        committed elsewhere (jax itself rejects operands committed to different devices).
        """
        try:
            return x.device
        except AttributeError:  # a tracer
            return _default_device()
        except ValueError:  # sharded over several devices
            return x.sharding

    def device_name(self, x: Any) -> str:
        return str(self.device(x))

    # -- data exchange --------------------------------------------------------------------
    def from_numpy(self, a: Any, device: Any = None) -> Any:
        """A jax copy of the numpy array ``a``; float64 needs 64-bit jax (else TypeError).

        Without ``jax_enable_x64``, jax would silently round float64 data to float32.
        """
        import jax
        import numpy as np

        a = np.asarray(a)
        if a.dtype == np.float64 and not x64_enabled():
            raise TypeError(
                "float64 data for jax, but 64-bit jax is disabled, so jax would silently round it "
                f"to float32: {X64_HINT}"
            )
        if isinstance(device, str):
            device = jax.devices(device)[0]
        return jax.device_put(a, device)

    def to_numpy(self, x: Any) -> Any:
        import numpy as np

        return np.asarray(x)

    def stop_gradient(self, x: Any) -> Any:
        import jax

        return jax.lax.stop_gradient(x)

    # -- autodiff -------------------------------------------------------------------------
    def custom_vjp(
        self,
        forward: Callable[..., tuple[Any, ...]],
        backward: Callable[..., Sequence[Any | None]],
        inputs: Sequence[Any],
    ) -> tuple[Any, ...]:
        """``forward(*inputs)`` as a ``jax.custom_vjp`` function whose bwd is ``backward``.

        Residuals are the inputs and the outputs. Cotangents that jax knows to be zero,
        and those of integer outputs, reach ``backward`` as None; inputs for which
        ``backward`` gives None get zeros (``float0`` zeros for integer inputs, as jax
        requires). ``backward`` runs on jax values, so when it calls differentiable code
        (reductions) jax differentiates it again: gradients of any order in reverse mode.
        Forward mode (``jax.jvp``) is not available on a ``jax.custom_vjp`` function;
        reductions therefore use the primitive of :mod:`lazymat_jax.primitive` instead.
        """
        import jax
        import numpy as np
        from jax.custom_derivatives import SymbolicZero

        is_float = self.is_floating

        @jax.custom_vjp
        def call(*xs: Any) -> tuple[Any, ...]:
            return tuple(forward(*xs))

        def fwd(*primals: Any) -> tuple[tuple[Any, ...], Any]:
            xs = tuple(p.value for p in primals)
            outs = tuple(forward(*xs))
            return outs, (xs, outs)

        def bwd(res: Any, cts: tuple[Any, ...]) -> tuple[Any, ...]:
            xs, outs = res
            cots = [
                None if isinstance(c, SymbolicZero) or not is_float(o) else c
                for c, o in zip(cts, outs, strict=True)
            ]
            grads: Sequence[Any | None] = [None] * len(xs)
            if any(c is not None for c in cots):
                grads = backward(xs, outs, cots, [is_float(x) for x in xs])
            result: list[Any] = []
            for x, g in zip(xs, grads, strict=True):
                if not is_float(x):
                    result.append(np.zeros(x.shape, dtype=jax.dtypes.float0))
                elif g is None:
                    result.append(jax.numpy.zeros_like(x))
                else:
                    result.append(g if g.dtype == x.dtype else g.astype(x.dtype))
            return tuple(result)

        call.defvjp(fwd, bwd, symbolic_zeros=True)
        return tuple(call(*inputs))

    def on_host(self, x: Any) -> bool:
        """True for arrays (and tracers: they will live on jax's default device) in CPU memory."""
        return getattr(self.device(x), "platform", None) == "cpu"

    def apply_reduction(self, call: ReductionCall, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """Run a reduction as the ``lazymat_reduce`` primitive (every jax transformation)."""
        for a in args:
            if not self.recognizes(a):
                raise TypeError(
                    f"backend 'jax' got a {type(a).__module__}.{type(a).__name__} in a reduction: all "
                    "the arrays of a reduction must be jax arrays; convert them with jax.numpy.asarray"
                )
        from .primitive import bind

        return bind(call, args)

    def run_engine(self, engine: Engine, request: ReductionRequest) -> tuple[Any, ...]:
        """Traceable engines run on the traced arrays; the others in a ``jax.pure_callback``."""
        if engine.traceable:
            return tuple(engine.run(request))
        from .host_call import host_call

        return host_call(engine, request)

    # -- description ----------------------------------------------------------------------
    def devices(self) -> list[str]:
        import jax

        return [str(d) for d in jax.devices()]


def _default_device() -> Any:
    import jax

    default = getattr(jax.config, "jax_default_device", None)
    if default is None:
        return jax.devices()[0]
    if isinstance(default, str):
        return jax.devices(default)[0]
    return default
