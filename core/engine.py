"""The engine interface: reduction kernels.

An engine takes a :class:`~lazymat.request.ReductionRequest` (always a reduction over j)
and returns the outputs as raw arrays of the request's namespace: ``(*batch, N, out_dim)``
per output, values in the request's dtype, indices as int64. Engines never see autograd.

Dispatch asks every registered engine ``supports(request)`` and runs the one with the
highest ``priority`` that says yes, unless config forces one by name.
"""

from __future__ import annotations

from typing import Any

from .request import ReductionRequest


class Engine:
    """Base class of reduction engines. Subclasses set ``name`` and ``priority``."""

    name: str = ""
    #: higher wins when several engines support a request (reference engine: 0)
    priority: int = 0

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
