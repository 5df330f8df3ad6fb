"""Choosing backends, engines and the tile budget.

First match wins: explicit argument, ``lazymat.config(...)`` context (thread- and
task-local), ``lazymat.set_backend(...)`` (process-wide), the environment
(``LAZYMAT_BACKEND``, ``LAZYMAT_ENGINE``, ``LAZYMAT_TILE_BYTES``), then inference from the
inputs (backend) or the engines' priorities (engine). Names are checked against the
installed plugins when they are set and when they are used.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from typing import Any

from .plugin_manager import get_registry

#: default memory budget of one tile's intermediates
DEFAULT_TILE_BYTES = 32 * 2**20

_KEYS = ("backend", "engine", "tile_bytes")
_ENV = {"backend": "LAZYMAT_BACKEND", "engine": "LAZYMAT_ENGINE", "tile_bytes": "LAZYMAT_TILE_BYTES"}
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
        get_registry().engine(value)
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
    env = os.environ.get(_ENV[key])
    if env:
        try:
            return _check(key, env)
        except ValueError as exc:
            raise ValueError(f"environment variable {_ENV[key]}={env!r}: {exc}") from None
    return DEFAULT_TILE_BYTES if key == "tile_bytes" else None
