"""Dispatch: the one call path from a reduction spec and its arrays to an engine.

Every reduction (``LazyMatrix`` methods, ``lazymat.vjp``, the solvers, the gradients'
own reductions) enters here, once::

    reduce(spec, args)                        the backend: config, else the arrays' library
      -> backend.apply_reduction(call, args)  the backend's autodiff or tracing wraps...
      -> call.run(*args)                      ...the forward pass:
      -> build_request -> ranked engines -> backend.run_engine(engine, request) -> engine.run

A :class:`ReductionCall` holds what the forward pass and its derivatives need besides the
arrays (spec, backend, forced engine, tile budget, all read from config when the call is
made): ``call.run`` is the forward, ``call.vjp`` and ``call.jvp`` build the symbolic
derivative reductions (:mod:`lazymat.autodiff`) and send them through :func:`reduce` again,
so that a backend's autodiff records them too (gradients of any order). The backend only
wires these into its autodiff (torch.autograd.Function, a jax primitive); it never chooses
an engine.

Engines: a forced engine (explicit argument, ``lazymat.config(engine=...)``, per backend
with a mapping ``{"torch": "keops"}``, ``LAZYMAT_ENGINE``) runs or raises, naming itself.
Otherwise the engines that support the request run by priority: one that raises is skipped
with a warning naming it and the next one runs (``strict_engines`` / ``LAZYMAT_STRICT_ENGINES=1``
makes that an error, for engine authors). An engine whose ``supports`` raises is skipped the
same way. :func:`run_request` is also how an engine delegates the blocks it splits a
request into (``exclude`` itself).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .autodiff import reduction_jvp, reduction_vjp
from .backend import Backend
from .call_cache import LRUCache
from .engine import Engine, EngineError, EngineWarning
from .options import engine_for, get_option
from .plugin_manager import get_registry
from .request import ReductionRequest, ReductionSpec, build_request, canonical_spec


@dataclass(frozen=True)
class ReductionCall:
    """One reduction to run: the spec and the choices made for it (hashable, picklable).

    ``engine`` is the forced engine's name (None: by priority); ``tile_bytes`` the memory
    budget of a tile. A jax primitive carries it as a static parameter.
    """

    spec: ReductionSpec
    backend: Backend
    engine: str | None
    tile_bytes: int

    def request(self, args: Sequence[Any]) -> ReductionRequest:
        """The checked request of ``args`` (clear errors for bad shapes, dtypes, devices)."""
        return build_request(self.spec, args, self.backend, self.tile_bytes)

    def run(self, *args: Any) -> tuple[Any, ...]:
        """The forward pass: every output of the reduction, as raw arrays (no autodiff)."""
        return run_request(self.request(args), self.engine)

    def vjp(
        self,
        args: Sequence[Any],
        outputs: Sequence[Any],
        cotangents: Sequence[Any | None],
        wanted: Sequence[bool],
    ) -> list[Any | None]:
        """One gradient (or None) per argument, by reductions that go through :func:`reduce`."""
        return reduction_vjp(self, args, outputs, cotangents, wanted)

    def jvp(
        self,
        args: Sequence[Any],
        outputs: Sequence[Any],
        tangents: Sequence[Any | None],
        aux: Sequence[Any] | None = None,
    ) -> list[Any | None]:
        """One tangent (or None) per output, ``tangents[k]`` being argument k's (None: zero);
        ``aux``: the derivative's auxiliary arrays when the caller has them (``reduction_jvp``)."""
        return reduction_jvp(self, args, outputs, tangents, aux)

    def with_spec(self, spec: ReductionSpec) -> ReductionCall:
        """The same choices applied to another spec (a derivative's reduction)."""
        return replace(self, spec=spec)

    def reduce(self, spec: ReductionSpec, args: Sequence[Any]) -> tuple[Any, ...]:
        """Run ``spec`` on ``args`` differentiably, with this call's backend, engine and budget."""
        call = ReductionCall(canonical_spec(spec), self.backend, self.engine, self.tile_bytes)
        return self.backend.apply_reduction(call, tuple(args))


def select_backend(args: Sequence[Any], explicit: str | None = None) -> Backend:
    """The backend of the arrays (all from one library), or the configured one."""
    registry = get_registry()
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
    found = {registry.backend_for(a).name for a in args}
    if len(found) > 1:
        raise TypeError(
            f"arrays from several libraries in one formula: {sorted(found)}; "
            "convert them to one library first"
        )
    return registry.backend(found.pop())


def reduce(
    spec: ReductionSpec,
    args: Sequence[Any],
    *,
    backend: Backend | None = None,
    engine: str | None = None,
) -> tuple[Any, ...]:
    """Run a reduction differentiably: every output, as arrays of the inputs' library."""
    if backend is None:
        backend = select_backend(args)
    return backend.apply_reduction(make_call(spec, backend, engine), tuple(args))


def make_call(spec: ReductionSpec, backend: Backend, engine: str | None = None) -> ReductionCall:
    """The call of ``spec`` on ``backend`` under the configuration in force (engine, tile budget).

    The call carries the canonical spec equal to ``spec`` (``lazymat.request.canonical_spec``),
    so that the caches downstream compare it by identity."""
    return ReductionCall(
        canonical_spec(spec), backend, engine_for(backend.name, engine), get_option("tile_bytes")
    )


# -- engines ------------------------------------------------------------------------------

#: the engines that support a request (registration order), per (request key, exclusions, engines)
_SUPPORTING = LRUCache("engines", 4096)
_NO_EXCLUSIONS: frozenset[str] = frozenset()


def _warn(message: str) -> None:
    warnings.warn(message, EngineWarning, stacklevel=4)


def _broken(engine: Engine, exc: Exception) -> None:
    _warn(
        f"lazymat engine {engine.name!r}: its supports()/priority_for() raised "
        f"{type(exc).__name__}: {exc}; it is skipped (fix the engine's plugin)"
    )


def _supporting(request: ReductionRequest, exclude: Iterable[str]) -> tuple[list[Engine], Any]:
    """The registered engines that support ``request``, in registration order, and the cache key.

    ``supports`` is asked once per request key (spec, backend, tile budget, argument
    signatures; see :mod:`lazymat.call_cache`), the registry's engines and the exclusions.
    An engine whose ``supports`` raises is left out with a warning: a broken engine must
    not take the others down.
    """
    engines = tuple(get_registry().engines.values())
    skip = frozenset(exclude) if exclude else _NO_EXCLUSIONS
    key = None if request.key is None else (request.key, request.origin, skip, engines)
    found = None if key is None else _SUPPORTING.get(key)
    if found is not None:
        return found, key
    found = []
    for engine in engines:
        if engine.name in skip:
            continue
        try:
            if engine.supports(request):
                found.append(engine)
        except Exception as exc:
            _broken(engine, exc)
    if key is not None:
        _SUPPORTING.put(key, found)
    return found, key


def _ranked(request: ReductionRequest, exclude: Iterable[str]) -> tuple[list[Engine], Any]:
    """:func:`ranked_engines` and the key of the cached ``supports`` verdicts."""
    found, key = _supporting(request, exclude)
    if len(found) < 2:
        return found, key
    ranked: list[tuple[int, int, Engine]] = []
    for order, engine in enumerate(found):
        try:
            ranked.append((-engine.priority_for(request), order, engine))
        except Exception as exc:
            _broken(engine, exc)
    ranked.sort()  # (-priority, registration order, engine): the orders are distinct
    return [engine for _, _, engine in ranked], key


def ranked_engines(request: ReductionRequest, exclude: Iterable[str] = ()) -> list[Engine]:
    """The engines that support ``request``, highest priority first (ties: registration order).

    An engine whose ``supports`` or ``priority_for`` raises is left out with a warning: a
    broken engine must not take the others down.
    """
    return _ranked(request, exclude)[0]


def _why_not(engine: Engine, request: ReductionRequest) -> str | None:
    """None when ``engine`` supports ``request``, else its reason (a raising check included)."""
    try:
        if engine.supports(request):
            return None
        return engine.why_not(request)
    except Exception as exc:
        return f"its supports() raised {type(exc).__name__}: {exc}"


#: a forced engine that supports a request, per (request key, engine)
_FORCED = LRUCache("forced engines", 1024)


def select_engine(request: ReductionRequest, explicit: str | None = None) -> Engine:
    """The engine that :func:`run_request` tries first for ``request``."""
    name = engine_for(request.backend.name, explicit)
    if name is not None:
        engine = get_registry().engine(name)
        key = None if request.key is None else (request.key, request.origin, engine)
        if key is not None and _FORCED.get(key) is not None:
            return engine
        problem = _why_not(engine, request)
        if problem is not None:
            raise ValueError(f"engine {name!r} was requested but cannot run it: {problem}")
        if key is not None:
            _FORCED.put(key, engine)
        return engine
    ranked = ranked_engines(request)
    if not ranked:
        raise ValueError(
            f"no installed engine supports this {request.spec.reduction} reduction of "
            f"{request.backend.name} arrays on {request.device}"
        )
    return ranked[0]


def _global_indices(request: ReductionRequest, outputs: tuple[Any, ...]) -> tuple[Any, ...]:
    """Index outputs of a block counted in the whole matrix (the block's column origin added;
    -1, "no column visited", stays)."""
    j0 = request.origin[1]
    if not j0:
        return outputs
    xp = request.xp
    kinds = request.spec.kind.outputs
    return tuple(
        xp.where(out >= 0, out + j0, out) if kind == "index" else out
        for kind, out in zip(kinds, outputs, strict=True)
    )


def run_request(
    request: ReductionRequest, engine: str | None = None, exclude: Iterable[str] = ()
) -> tuple[Any, ...]:
    """Run ``request`` on ``engine`` (forced), else on the best supporting engine with fallback.

    This is also the entry of an engine that delegates: an engine that splits a request
    into blocks (``request.block(...)``) runs each with ``run_request(block, exclude=[self.name])``.
    Config's forced engine does not apply here; pass ``engine`` to force one.

    An engine that fails is asked ``supports`` again at the next request of the same key
    (its verdict is dropped from the cache): it may decline from then on.
    """
    if engine is not None:
        chosen = select_engine(request, engine)
        try:
            return _global_indices(request, request.backend.run_engine(chosen, request))
        except Exception as exc:
            _FORCED.pop((request.key, request.origin, chosen))
            raise EngineError(
                f"engine {chosen.name!r} failed on a {request.spec.reduction} reduction: {exc}"
            ) from exc
    ranked, key = _ranked(request, exclude)
    if not ranked:
        select_engine(request)  # raises the "no engine" error
    failures: list[str] = []
    for k, chosen in enumerate(ranked):
        try:
            return _global_indices(request, request.backend.run_engine(chosen, request))
        except Exception as exc:
            if key is not None:
                _SUPPORTING.pop(key)
            failure = (
                f"engine {chosen.name!r} failed on a {request.spec.reduction} reduction: "
                f"{type(exc).__name__}: {exc}"
            )
            if get_option("strict_engines") or k + 1 == len(ranked):
                earlier = f" (after: {'; '.join(failures)})" if failures else ""
                raise EngineError(failure + earlier) from exc
            failures.append(failure)
            _warn(
                f"lazymat {failure}; falling back to engine {ranked[k + 1].name!r} "
                "(set LAZYMAT_STRICT_ENGINES=1 to make this an error)"
            )
    raise AssertionError("unreachable")
