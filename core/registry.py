"""The registry of backends and engines, filled once by the plugin hooks.

Lookups are precise about what is missing: an array nobody recognises names the
distribution to install, an unknown name lists the known ones. Registration checks the
contract (a name; an engine defines ``supports`` and ``run``) and remembers which plugin
registered what, so that a name held twice names both plugins and a plugin that fails
is removed whole (:mod:`lazymat.plugin_manager`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
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
        #: plugin name -> why it was skipped (failed to import, a hook raised, a bad registration)
        self.failed: dict[str, str] = {}
        #: entry-point name -> the message about a second distribution using that name
        self.shadowed: dict[str, str] = {}
        #: entry-point name -> its target (``module:attr``), for the plugins that loaded
        self.entry_points: dict[str, str] = {}
        #: solver kind ("linear") -> the function ``LazyMatrix`` methods delegate to
        self.solvers: dict[str, Any] = {}
        #: ("backend" | "engine" | "solver", name) -> the plugin that registered it
        self.owners: dict[tuple[str, str], str] = {}
        self._plugin = "(direct call)"

    @contextlib.contextmanager
    def owned_by(self, plugin: str) -> Iterator[None]:
        """Attribute what is registered inside the block to ``plugin``."""
        previous, self._plugin = self._plugin, plugin
        try:
            yield
        finally:
            self._plugin = previous

    def _claim(self, kind: str, name: Any, obj: object, table: dict[str, Any]) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"{type(obj).__name__} has no name: set the class attribute name = '...'")
        owner = self.owners.get((kind, name))
        if owner is not None:
            raise ValueError(
                f"a {kind} named {name!r} is already registered by plugin {owner!r}, so plugin "
                f"{self._plugin!r} cannot register another one: rename one of them"
            )
        table[name] = obj
        self.owners[(kind, name)] = self._plugin

    def add_backend(self, backend: Backend) -> None:
        if not isinstance(backend, Backend):
            raise TypeError(f"add_backend takes a lazymat.plugin.Backend, got {type(backend).__name__}")
        if not isinstance(backend.module, str) or not backend.module:
            raise TypeError(f"backend {type(backend).__name__} has no module: set module = 'mylib'")
        self._claim("backend", backend.name, backend, self.backends)

    def add_engine(self, engine: Engine) -> None:
        if not isinstance(engine, Engine):
            raise TypeError(f"add_engine takes a lazymat.plugin.Engine, got {type(engine).__name__}")
        missing = [m for m in ("supports", "run") if getattr(type(engine), m) is getattr(Engine, m)]
        if missing:
            raise TypeError(
                f"engine {type(engine).__name__} does not define {' and '.join(missing)}(request): "
                "an Engine subclass must define supports(request) -> bool and run(request) -> outputs"
            )
        if not isinstance(engine.priority, int):
            raise TypeError(
                f"engine {type(engine).__name__}: priority must be an int, got {engine.priority!r}"
            )
        self._claim("engine", engine.name, engine, self.engines)

    def add_solver(self, kind: str, solver: Any) -> None:
        """``solver`` for ``kind`` (``"linear"``: ``solver(matrix, b, alpha=..., **options)``)."""
        if not callable(solver):
            raise TypeError(f"add_solver takes a callable, got {type(solver).__name__}")
        self._claim("solver", kind, solver, self.solvers)

    def solver(self, kind: str) -> Any:
        try:
            return self.solvers[kind]
        except KeyError:
            raise ValueError(
                f"no {kind!r} solver is installed (lazymat.solvers registers one; is it disabled "
                f"by LAZYMAT_DISABLE_PLUGINS?); installed solvers: {sorted(self.solvers)}"
            ) from None

    def remove_engine(self, name: str) -> None:
        """Forget the engine ``name`` (tests that register temporary engines)."""
        self.engine(name)
        del self.engines[name]
        self.owners.pop(("engine", name), None)

    def drop_plugin(self, plugin: str, problem: str) -> None:
        """Remove everything ``plugin`` registered and record why."""
        self.failed[plugin] = problem
        for (kind, name), owner in list(self.owners.items()):
            if owner == plugin:
                del self.owners[(kind, name)]
                tables: dict[str, dict[str, Any]] = {
                    "backend": self.backends,
                    "engine": self.engines,
                    "solver": self.solvers,
                }
                tables[kind].pop(name, None)

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
