"""Dispatch: from a spec and its arrays to a backend's differentiable call and an engine.

``reduce`` is the differentiable entry point (it goes through the backend's autodiff
hook); ``run_engine`` is the raw call that the hooks wrap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .backend import Backend
from .config import get_option
from .engine import Engine
from .plugin_manager import get_registry
from .request import ReductionRequest, ReductionSpec, build_request


def select_backend(args: Sequence[Any], explicit: str | None = None) -> Backend:
    """The backend of the arrays (all from one library), or the configured one."""
    registry = get_registry()
    found = {registry.backend_for(a).name for a in args}
    name = get_option("backend", explicit)
    if name is not None:
        backend = registry.backend(name)
        for a in args:
            if not backend.recognizes(a):
                raise TypeError(
                    f"backend {name!r} was requested but got a {type(a).__module__}."
                    f"{type(a).__name__}; convert the inputs to {backend.module} arrays"
                )
        return backend
    if len(found) > 1:
        raise TypeError(
            f"arrays from several libraries in one formula: {sorted(found)}; "
            "convert them to one library first"
        )
    return registry.backend(found.pop())


def select_engine(request: ReductionRequest, explicit: str | None = None) -> Engine:
    registry = get_registry()
    name = get_option("engine", explicit)
    if name is not None:
        engine = registry.engine(name)
        if not engine.supports(request):
            raise ValueError(f"engine {name!r} was requested but cannot run it: {engine.why_not(request)}")
        return engine
    candidates = [e for e in registry.engines.values() if e.supports(request)]
    if not candidates:
        raise ValueError(f"no installed engine supports this request ({request.spec.reduction})")
    return max(candidates, key=lambda e: e.priority_for(request))


def run_engine(
    spec: ReductionSpec, args: Sequence[Any], backend: Backend, engine: str | None = None
) -> tuple[Any, ...]:
    """Check the request and run it on the selected engine (no autodiff)."""
    request = build_request(spec, args, backend, get_option("tile_bytes"))
    return select_engine(request, engine).run(request)


def reduce(
    spec: ReductionSpec,
    args: Sequence[Any],
    *,
    backend: Backend | None = None,
    engine: str | None = None,
) -> tuple[Any, ...]:
    """Run a reduction differentiably through the backend's autodiff hook."""
    if backend is None:
        backend = select_backend(args)
    return backend.reduce(spec, tuple(args), engine)
