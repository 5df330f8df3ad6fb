"""Loading plugins: pluggy manager, entry points of group ``lazymat``, the registry.

Plugins load lazily, once, on the first lookup (``import lazymat`` loads none). A plugin
that fails to import or to register is skipped with a warning naming it and the error;
``LAZYMAT_DISABLE_PLUGINS`` (comma-separated entry-point names) blocks plugins by name.
"""

from __future__ import annotations

import os
import threading
import warnings
from importlib.metadata import entry_points

import pluggy

from . import builtin_plugin, hookspecs
from .registry import Registry

GROUP = "lazymat"
_lock = threading.Lock()
_registry: Registry | None = None


def disabled_plugins() -> set[str]:
    raw = os.environ.get("LAZYMAT_DISABLE_PLUGINS", "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def _load(pm: pluggy.PluginManager, registry: Registry) -> None:
    blocked = disabled_plugins()
    for ep in entry_points(group=GROUP):
        if ep.name in blocked or pm.has_plugin(ep.name):
            continue
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception as exc:  # a broken plugin must not break lazymat
            registry.failed[ep.name] = f"{type(exc).__name__}: {exc}"
            warnings.warn(
                f"lazymat plugin {ep.name!r} ({ep.value}) failed to load and is skipped: "
                f"{type(exc).__name__}: {exc}",
                RuntimeWarning,
                stacklevel=3,
            )
    pm.check_pending()


def _register_all(pm: pluggy.PluginManager, registry: Registry) -> None:
    for hook in (pm.hook.lazymat_register_backends, pm.hook.lazymat_register_engines):
        for impl in hook.get_hookimpls():
            try:
                impl.function(registry=registry)
            except Exception as exc:
                registry.failed[impl.plugin_name] = f"{type(exc).__name__}: {exc}"
                warnings.warn(
                    f"lazymat plugin {impl.plugin_name!r} failed in {hook.name} and is "
                    f"skipped: {type(exc).__name__}: {exc}",
                    RuntimeWarning,
                    stacklevel=3,
                )


def get_registry() -> Registry:
    """The process-wide registry, loading plugins on first call."""
    global _registry
    if _registry is None:
        with _lock:
            if _registry is None:
                pm = pluggy.PluginManager(GROUP)
                pm.add_hookspecs(hookspecs)
                pm.register(builtin_plugin, name="builtin")
                registry = Registry()
                _load(pm, registry)
                _register_all(pm, registry)
                _registry = registry
    return _registry


def reset() -> None:
    """Forget loaded plugins (tests use it after changing the environment)."""
    global _registry
    with _lock:
        _registry = None
