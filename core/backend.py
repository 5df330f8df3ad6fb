"""The backend interface: what an array library brings to lazymat.

A backend recognises its arrays, gives their array-API namespace, device and dtype rules,
moves data to and from numpy (for tests and DLPack exchange), and wires reductions into
its automatic differentiation, if it has one. It never computes reductions itself: that
is the engines' job (``lazymat.engine``).

Plugins subclass :class:`Backend` and register an instance through the
``lazymat_register_backends`` hook. Recognition must not import the library (check the
type's module name), so that loading plugins stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import array_api_compat

if TYPE_CHECKING:
    from .dispatch import ReductionCall
    from .engine import Engine
    from .request import ReductionRequest


class Backend:
    """Base class of array-library adapters. Subclasses set ``name`` and ``module``."""

    #: name used in config, env variables and messages
    name: str = ""
    #: top-level module of the library (``type(x).__module__`` starts with it)
    module: str = ""
    #: distribution to install for this backend (named in error messages)
    distribution: str = "lazymat"
    #: True when the backend wires reductions into an autodiff system of its own
    has_autodiff: bool = False

    # -- recognition and array facts --------------------------------------------------------
    def recognizes(self, x: Any) -> bool:
        """True when ``x`` is an array of this library (must not import the library)."""
        mod = type(x).__module__
        return mod == self.module or mod.startswith(self.module + ".")

    def namespace(self, x: Any) -> Any:
        """The array-API namespace of ``x``."""
        return array_api_compat.array_namespace(x)

    def device(self, x: Any) -> Any:
        return array_api_compat.device(x)

    def device_name(self, x: Any) -> str:
        return str(self.device(x))

    def on_host(self, x: Any) -> bool:
        """True when ``x`` lives in CPU memory that native code can read (DLPack device CPU)."""
        try:
            return int(x.__dlpack_device__()[0]) == 1  # kDLCPU
        except (AttributeError, TypeError, ValueError, RuntimeError):
            return False

    def is_floating(self, x: Any) -> bool:
        xp = self.namespace(x)
        return bool(xp.isdtype(x.dtype, "real floating"))

    def check_dtype(self, x: Any) -> None:
        """Raise ``TypeError`` unless the backend computes reductions in ``x``'s dtype."""
        if not self.is_floating(x):
            raise TypeError(
                f"lazymat needs real floating-point data, got an array of dtype {x.dtype} "
                f"({type(x).__module__}.{type(x).__name__}); convert it, e.g. to float32 or float64"
            )

    # -- data exchange --------------------------------------------------------------------
    def from_numpy(self, a: Any, device: Any = None) -> Any:
        """A copy of the numpy array ``a`` as an array of this library (on ``device``)."""
        xp = self.default_namespace()
        return xp.asarray(a, device=device) if device is not None else xp.asarray(a)

    def to_numpy(self, x: Any) -> Any:
        import numpy as np

        return np.asarray(x)

    def default_namespace(self) -> Any:
        """The library's array-API namespace (imports the library)."""
        raise NotImplementedError

    def stop_gradient(self, x: Any) -> Any:
        """``x`` cut from the autodiff graph (identity for libraries without autodiff)."""
        return x

    def materialize(self, *arrays: Any) -> tuple[Any, ...]:
        """The iteration state of a solver loop, holding its values (once per iteration).

        Eager libraries return the arrays unchanged (the default). A lazy one (dask)
        computes them where they live and returns arrays that hold the values, so that a
        loop whose convergence test reads numbers does not pile its iterations into one
        graph computed again from the start at every test.
        """
        return arrays

    # -- autodiff -------------------------------------------------------------------------
    def custom_vjp(
        self,
        forward: Callable[..., tuple[Any, ...]],
        backward: Callable[..., Sequence[Any | None]],
        inputs: Sequence[Any],
    ) -> tuple[Any, ...]:
        """Call ``forward(*inputs)`` with a custom gradient (the one autodiff hook).

        ``forward`` returns a tuple of arrays and is run outside the autodiff graph.
        ``backward(inputs, outputs, cotangents, wanted)`` returns one gradient (or None)
        per input; ``cotangents`` has one entry per output (None for outputs without
        one, such as indices) and ``wanted[k]`` says whether input k needs a gradient.
        ``backward`` is written with differentiable operations of the same backend, so a
        backend that records it gives gradients of any order. Reductions use this hook
        (forward = ``call.run``, backward = ``call.vjp``: :meth:`apply_reduction`), and so do the
        implicit-function gradients of the solvers.

        The default, for libraries without autodiff, only calls ``forward``.
        """
        return tuple(forward(*inputs))

    def apply_reduction(self, call: ReductionCall, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """Run ``call`` on ``args`` inside this library's autodiff or tracing: the reduction hook.

        ``call.run(*args)`` is the forward pass (engines, raw arrays); ``call.vjp`` gives
        gradients (``backward`` of :meth:`custom_vjp`) and ``call.jvp`` forward-mode tangents,
        each by new reductions that come back through this hook. The default is a plain
        call without autodiff, and :meth:`custom_vjp` (reverse mode) with it; a backend
        overrides it to add forward mode or to bind a primitive of its tracing system (jax).
        """
        if not self.has_autodiff:
            return tuple(call.run(*args))
        return self.custom_vjp(call.run, call.vjp, args)

    def run_engine(self, engine: Engine, request: ReductionRequest) -> tuple[Any, ...]:
        """``engine.run(request)``; a tracing backend routes engines that are not ``traceable``
        through a callback on concrete host arrays (``request.on_host``)."""
        return tuple(engine.run(request))

    # -- description ----------------------------------------------------------------------
    def version(self) -> str:
        """Version of the array library, or "not installed"."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version(self.module.replace("_", "-"))
        except PackageNotFoundError:
            return "not installed"

    def devices(self) -> list[str]:
        """Devices this backend can compute on, as strings ("cpu", "cuda:0", ...)."""
        return ["cpu"]

    def unavailable_reason(self) -> str | None:
        """Why the backend has no device to compute on (e.g. no CUDA driver), or None."""
        return None

    def __repr__(self) -> str:
        return f"<lazymat backend {self.name!r}>"
