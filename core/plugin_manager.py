"""Loading plugins: pluggy manager, entry points of group ``lazymat``, the registry.

Plugins load lazily, once, on the first lookup (``import lazymat`` loads none). Outside code
cannot break lazymat: whatever a plugin does wrong, it is skipped *whole* (nothing it
registered stays), and one :class:`PluginWarning` names it, the problem and the fix, while
lazymat, ``lazymat info`` and pytest keep working. The cases:

- its module fails to import: any exception, ``SystemExit`` included (only
  ``KeyboardInterrupt`` propagates);
- it marks a function as a hook that lazymat does not declare (a misspelt hook name; the
  warning suggests the closest one), or declares a hook with the wrong arguments;
- a hook raises;
- it registers a backend or an engine that breaks the contract (no name, an engine without
  ``supports``/``run``), or a name that another plugin already holds (both owners are named;
  the first one keeps it);
- two installed distributions use one entry-point name: the first one found loads, the
  other is reported with both distributions named.

Hooks are called through pluggy (``pm.hook.lazymat_register_backends(registry=...)``), so
``tryfirst``/``trylast`` order them as usual; the built-in plugin runs first. Each
implementation runs inside a guard that records what its plugin registered and undoes it
if the plugin fails. ``LAZYMAT_DISABLE_PLUGINS`` (comma-separated entry-point names) blocks
plugins by name before they are imported.
"""

from __future__ import annotations

import difflib
import functools
import os
import threading
import types
import warnings
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from . import builtin_plugin, hookspecs
from .registry import Registry

GROUP = "lazymat"
_lock = threading.Lock()
_registry: Registry | None = None


class PluginWarning(RuntimeWarning):
    """A plugin was skipped (or a duplicate ignored); the message names it and the fix."""


def disabled_plugins() -> set[str]:
    raw = os.environ.get("LAZYMAT_DISABLE_PLUGINS", "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def _distribution(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "an unknown distribution"


def _hook_problem(pm: pluggy.PluginManager, plugin: Any) -> str | None:
    """Why ``plugin`` declares hooks lazymat cannot call: an unknown name or wrong arguments."""
    known = sorted(name for name in dir(pm.hook) if name.startswith("lazymat_"))
    for name in dir(plugin):
        try:
            opts = pm.parse_hookimpl_opts(plugin, name)
        except Exception:
            continue
        if opts is None:
            continue
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"the hooks are {known}"
            return f"it implements {name!r}, which is not a lazymat hook ({hint})"
    return None


def _guarded(
    registry: Registry, plugin_name: str, hook: str, function: Callable[..., Any]
) -> Callable[..., Any]:
    """``function`` (a hook implementation) run so that its failure only skips its plugin."""

    @functools.wraps(function)
    def guard(*args: Any, **kwargs: Any) -> None:
        if plugin_name in registry.failed:
            return
        with registry.owned_by(plugin_name):
            try:
                function(*args, **kwargs)
            except Exception as exc:  # outside code: never let it break lazymat
                _skip(registry, plugin_name, f"failed in {hook}: {type(exc).__name__}: {exc}")

    return guard


def _skip(registry: Registry, plugin_name: str, problem: str) -> None:
    registry.drop_plugin(plugin_name, problem)
    warnings.warn(f"lazymat plugin {plugin_name!r} is skipped: {problem}", PluginWarning, stacklevel=4)


def _guarded_plugin(pm: pluggy.PluginManager, registry: Registry, name: str, module: Any) -> Any:
    """A stand-in for the plugin whose hook implementations are guarded (same markers)."""
    proxy = types.SimpleNamespace()
    for attr in dir(module):
        opts = pm.parse_hookimpl_opts(module, attr)
        if opts is None:
            continue
        guard = _guarded(registry, name, attr, getattr(module, attr))
        setattr(guard, f"{GROUP}_impl", getattr(getattr(module, attr), f"{GROUP}_impl"))
        setattr(proxy, attr, guard)
    return proxy


def _register(pm: pluggy.PluginManager, registry: Registry, name: str, module: Any) -> None:
    problem = _hook_problem(pm, module)
    if problem is not None:
        _skip(registry, name, problem + "; fix the plugin's hook names")
        return
    try:
        pm.register(_guarded_plugin(pm, registry, name, module), name=name)
    except Exception as exc:  # pluggy's validation: wrong hook arguments, ...
        detail = " ".join(str(exc).split())
        _skip(
            registry, name, f"{type(exc).__name__}: {detail}; see lazymat.hookspecs for the hooks' arguments"
        )


def _load(pm: pluggy.PluginManager, registry: Registry) -> None:
    blocked = disabled_plugins()
    seen: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        if ep.name in blocked:
            continue
        if ep.name in seen:
            first = seen[ep.name]
            message = (
                f"two installed distributions provide the lazymat plugin {ep.name!r}: "
                f"{_distribution(first)} ({first.value}) is loaded, {_distribution(ep)} ({ep.value}) "
                f"is ignored: uninstall one of them or rename its entry point"
            )
            registry.shadowed[ep.name] = message
            warnings.warn(message, PluginWarning, stacklevel=3)
            continue
        seen[ep.name] = ep
        try:
            module = ep.load()
        except (Exception, SystemExit) as exc:  # a broken plugin must not break lazymat
            kind = "SystemExit" if isinstance(exc, SystemExit) else type(exc).__name__
            _skip(registry, ep.name, f"its module {ep.value} failed to import: {kind}: {exc}")
            continue
        registry.entry_points[ep.name] = ep.value
        _register(pm, registry, ep.name, module)


def get_registry() -> Registry:
    """The process-wide registry, loading plugins on first call."""
    global _registry
    if _registry is None:
        with _lock:
            if _registry is None:
                pm = pluggy.PluginManager(GROUP)
                pm.add_hookspecs(hookspecs)
                registry = Registry()
                _register(pm, registry, "builtin", builtin_plugin)
                _load(pm, registry)
                pm.hook.lazymat_register_backends(registry=registry)
                pm.hook.lazymat_register_engines(registry=registry)
                pm.hook.lazymat_register_solvers(registry=registry)
                _registry = registry
    return _registry


def reset() -> None:
    """Forget loaded plugins (tests use it after changing the environment)."""
    global _registry
    with _lock:
        _registry = None
