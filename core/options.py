"""The options of a reduction: backend, engine, tile budget, strict engines (``lazymat.config``).

First match wins: explicit argument, ``lazymat.config(...)`` context (thread- and
task-local), ``lazymat.set_backend(...)`` (process-wide), the environment
(``LAZYMAT_BACKEND``, ``LAZYMAT_ENGINE``, ``LAZYMAT_TILE_BYTES``,
``LAZYMAT_STRICT_ENGINES``), then inference from the inputs (backend) or the engines'
priorities (engine). Names are checked against the installed plugins when they are set
and when they are used.

A forced engine is a name (every backend's reductions) or a mapping from backend names to
engine names (``config(engine={"torch": "keops"})``, ``LAZYMAT_ENGINE=torch=keops,numpy=reference``):
backends it does not name choose by priority. ``strict_engines`` makes an engine that fails
on a request it claimed an error instead of a fallback to the next engine (for engine authors).

The context is a :mod:`contextvars` variable: asyncio tasks inherit it, but threads do not
(``loop.run_in_executor``, ``ThreadPoolExecutor.submit``). :func:`carry_config` wraps a callable so
that it runs under the configuration in force where it was wrapped.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from .environ import getenv
from .plugin_manager import get_registry

#: default memory budget of one tile's intermediates
DEFAULT_TILE_BYTES = 32 * 2**20

_KEYS = ("backend", "engine", "tile_bytes", "strict_engines")
_ENV = {
    "backend": "LAZYMAT_BACKEND",
    "engine": "LAZYMAT_ENGINE",
    "tile_bytes": "LAZYMAT_TILE_BYTES",
    "strict_engines": "LAZYMAT_STRICT_ENGINES",
}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")
R = TypeVar("R")
_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "lazymat_config", default=None
)
_global: dict[str, Any] = {}


def _check(key: str, value: Any) -> Any:
    if value is None:
        return None
    if key == "backend":
        get_registry().backend(value)
    elif key == "engine":
        value = _engine_choice(value)
    elif key == "strict_engines":
        if isinstance(value, str):
            if value.strip().lower() not in _TRUE + _FALSE:
                raise ValueError(f"strict_engines must be a boolean (1/0, true/false), got {value!r}")
            value = value.strip().lower() in _TRUE
        value = bool(value)
    elif key == "tile_bytes":
        value = int(value)
        if value < 1024:
            raise ValueError(f"tile_bytes must be at least 1024, got {value}")
    return value


@contextlib.contextmanager
def config(**options: Any) -> Iterator[None]:
    """Context manager: ``with lazymat.config(engine="reference", tile_bytes=2**20): ...``."""
    unknown = set(options) - set(_KEYS)
    if unknown:
        raise TypeError(f"unknown lazymat option(s) {sorted(unknown)}; expected some of {list(_KEYS)}")
    new = dict(_context.get() or {})
    new.update({k: _check(k, v) for k, v in options.items()})
    token = _context.set(new)
    try:
        yield
    finally:
        _context.reset(token)


def _engine_choice(value: Any) -> str | dict[str, str]:
    """An engine name, or a mapping backend -> engine name (a string "torch=keops,numpy=x" too)."""
    if isinstance(value, str) and "=" in value:
        pairs = [part.split("=", 1) for part in value.split(",") if part.strip()]
        value = {b.strip(): e.strip() for b, e in pairs}
    if isinstance(value, Mapping):
        registry = get_registry()
        for backend, engine in value.items():
            registry.backend(backend)
            registry.engine(engine)
        return dict(value)
    if not isinstance(value, str):
        raise TypeError(f"engine must be a name or a mapping backend -> name, got {type(value).__name__}")
    get_registry().engine(value)
    return value


def engine_for(backend: str, explicit: Any = None) -> str | None:
    """The engine forced for ``backend``'s reductions (None: choose by priority)."""
    choice = get_option("engine", explicit)
    if isinstance(choice, dict):
        return choice.get(backend)
    return choice


def carry_config(fn: Callable[..., R]) -> Callable[..., R]:
    """``fn`` bound to the configuration in force now, for another thread or an executor.

    ``loop.run_in_executor(None, lazymat.carry_config(work))`` runs ``work`` with the
    ``lazymat.config(...)`` of the task that scheduled it (threads do not inherit context
    variables). It copies the whole :mod:`contextvars` context, as
    ``contextvars.copy_context().run`` does.
    """
    context = contextvars.copy_context()

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> R:
        return context.run(fn, *args, **kwargs)

    return run


def set_backend(backend: str | None = None, *, engine: str | None = None) -> None:
    """Process-wide default backend (and engine); ``None`` clears it."""
    _global["backend"] = _check("backend", backend)
    _global["engine"] = _check("engine", engine)


def get_option(key: str, explicit: Any = None) -> Any:
    """The value of an option by the precedence rules above (None when unset)."""
    if explicit is not None:
        return _check(key, explicit)
    for source in (_context.get() or {}, _global):
        if source.get(key) is not None:
            return source[key]
    env = getenv(_ENV[key])
    if env:
        try:
            return _check(key, env)
        except ValueError as exc:
            raise ValueError(f"environment variable {_ENV[key]}={env!r}: {exc}") from None
    return {"tile_bytes": DEFAULT_TILE_BYTES, "strict_engines": False}.get(key)
