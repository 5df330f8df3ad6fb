"""The engine interface: reduction kernels.

An engine takes a :class:`~lazymat.request.ReductionRequest` (always a reduction over j)
and returns the outputs as raw arrays of the request's namespace: ``(*batch, N, out_dim)``
per output, values in the request's dtype, indices as int64. Engines never see autograd.

Dispatch asks every registered engine ``supports(request)`` and runs the one with the
highest ``priority`` that says yes, unless config forces one by name; an engine that
raises on a request it claimed is skipped with an :class:`EngineWarning` and the next one
runs (or, forced or under ``strict_engines``, an :class:`EngineError` names it).

``traceable`` tells a tracing backend (jax) whether ``run`` may see traced arrays: engines
written with the request's namespace functions only (the reference engine, jax-xla) can be
traced; engines that read memory (native code: native-cpu, KeOps, cupy kernels) cannot, and
the backend hands them concrete host arrays through a callback (``Backend.run_engine``).
"""

from __future__ import annotations

from typing import Any

from .request import ReductionRequest


class EngineWarning(RuntimeWarning):
    """An engine failed on a request (or in its ``supports`` check) and was skipped."""


class EngineError(RuntimeError):
    """A forced engine failed, or every engine that supports a request failed."""


class Engine:
    """Base class of reduction engines. Subclasses set ``name`` and ``priority``."""

    name: str = ""
    #: higher wins when several engines support a request (reference engine: 0)
    priority: int = 0
    #: True when ``run`` only calls the request's namespace (a tracer may go through it)
    traceable: bool = False

    def supports(self, request: ReductionRequest) -> bool:
        """True when this engine can run the request (backend, device, formula, reduction)."""
        raise NotImplementedError

    def priority_for(self, request: ReductionRequest) -> int:
        """The priority of this engine for one request (default: ``priority``).

        Lets an engine rank differently by device: e.g. first on CUDA, behind another on the CPU.
        """
        return self.priority

    def why_not(self, request: ReductionRequest) -> str:
        """A sentence saying why ``supports`` is False (used in error messages)."""
        return f"engine {self.name!r} does not support this request"

    def run(self, request: ReductionRequest) -> tuple[Any, ...]:
        raise NotImplementedError

    def describe(self) -> str:
        """One line for ``lazymat info``."""
        return (self.__doc__ or "").strip().splitlines()[0] if self.__doc__ else self.name

    def __repr__(self) -> str:
        return f"<lazymat engine {self.name!r}>"
