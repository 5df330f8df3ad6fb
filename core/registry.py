"""The registry of backends and engines, filled once by the plugin hooks.

Lookups are precise about what is missing: an array nobody recognises names the
distribution to install, an unknown name lists the known ones.
"""

from __future__ import annotations

from typing import Any

from .backend import Backend
from .engine import Engine

#: distributions that provide a backend for an array library, by top-level module
KNOWN_DISTRIBUTIONS = {
    "torch": "lazymat-torch",
    "jax": "lazymat-jax",
    "jaxlib": "lazymat-jax",
    "cupy": "lazymat-cupy",
}


class Registry:
    """Backends and engines known to this process, in registration order."""

    def __init__(self) -> None:
        self.backends: dict[str, Backend] = {}
        self.engines: dict[str, Engine] = {}
        #: plugin name -> error message, for plugins that failed to load
        self.failed: dict[str, str] = {}

    def add_backend(self, backend: Backend) -> None:
        if not backend.name:
            raise ValueError(f"{type(backend).__name__} has no name")
        if backend.name in self.backends:
            raise ValueError(f"a backend named {backend.name!r} is already registered")
        self.backends[backend.name] = backend

    def add_engine(self, engine: Engine) -> None:
        if not engine.name:
            raise ValueError(f"{type(engine).__name__} has no name")
        if engine.name in self.engines:
            raise ValueError(f"an engine named {engine.name!r} is already registered")
        self.engines[engine.name] = engine

    def backend(self, name: str) -> Backend:
        try:
            return self.backends[name]
        except KeyError:
            raise ValueError(
                f"unknown lazymat backend {name!r}; installed backends: {sorted(self.backends)}"
            ) from None

    def engine(self, name: str) -> Engine:
        try:
            return self.engines[name]
        except KeyError:
            raise ValueError(
                f"unknown lazymat engine {name!r}; installed engines: {sorted(self.engines)}"
            ) from None

    def backend_for(self, x: Any) -> Backend:
        """The backend that recognises the array ``x``."""
        for backend in self.backends.values():
            if backend.recognizes(x):
                return backend
        mod = type(x).__module__.split(".")[0]
        hint = KNOWN_DISTRIBUTIONS.get(mod)
        where = f"install {hint}" if hint else "no installed plugin handles this type"
        raise TypeError(
            f"no lazymat backend for {type(x).__module__}.{type(x).__name__}: {where} "
            f"(installed backends: {sorted(self.backends)})"
        )
