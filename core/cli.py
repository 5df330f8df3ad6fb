"""The ``lazymat`` command: ``lazymat info`` and ``lazymat demo``.

``info`` lists what this process would use: backends (versions, devices), engines
(priorities, descriptions), plugins (loaded, failed, disabled) and the configuration in
force with where each value comes from. ``--json`` prints the same as one JSON object.
``demo`` runs :mod:`lazymat.demo`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any

from . import __version__
from .options import _ENV, _KEYS, _context, _global, get_option
from .plugin_manager import GROUP, disabled_plugins, get_registry


def _backends() -> dict[str, dict[str, Any]]:
    """Backend facts; a backend whose version or devices cannot be read says why."""
    out: dict[str, dict[str, Any]] = {}
    for name, backend in get_registry().backends.items():
        entry: dict[str, Any] = {"distribution": backend.distribution}
        try:
            entry["version"] = backend.version()
            entry["devices"] = backend.devices()
        except Exception as exc:  # info must report, not crash
            entry["error"] = f"{type(exc).__name__}: {exc}"
        out[name] = entry
    return out


def _option_sources() -> dict[str, dict[str, Any]]:
    """Each option's value in force here and where it comes from (config's precedence)."""
    context = _context.get() or {}
    out: dict[str, dict[str, Any]] = {}
    for key in _KEYS:
        env = _ENV[key]
        if context.get(key) is not None:
            source = "lazymat.config context"
        elif _global.get(key) is not None:
            source = "lazymat.set_backend"
        elif os.environ.get(env):
            source = f"environment {env}"
        else:
            source = "default"
        try:
            value = get_option(key)
        except ValueError as exc:  # e.g. a bad environment variable: show it, it is the problem
            value, source = None, f"error: {exc}"
        if value is None and source == "default":
            value = "inferred from the inputs" if key == "backend" else "highest priority that supports it"
        out[key] = {"value": value, "source": source}
    return out


def collect_info() -> dict[str, Any]:
    """Everything ``lazymat info`` prints."""
    registry = get_registry()
    engines = sorted(registry.engines.values(), key=lambda e: -e.priority)
    plugins = {ep.name: ep.value for ep in entry_points(group=GROUP)}
    blocked = disabled_plugins()
    return {
        "lazymat": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "backends": _backends(),
        "engines": {e.name: {"priority": e.priority, "description": e.describe()} for e in engines},
        "plugins": {
            "loaded": sorted(n for n in registry.entry_points if n not in registry.failed),
            "failed": dict(registry.failed),
            "shadowed": dict(registry.shadowed),
            "disabled": sorted(blocked),
            "entry_points": plugins,
        },
        "config": _option_sources(),
        "environment": {k: v for k, v in sorted(os.environ.items()) if k.startswith("LAZYMAT_")},
    }


def print_info(info: dict[str, Any]) -> None:
    print(f"lazymat {info['lazymat']} (Python {info['python']}, {info['platform']})")
    print("\nBackends:")
    for name, b in info["backends"].items():
        if "error" in b:
            print(f"  {name:<18} unavailable: {b['error']}")
        else:
            devices = ", ".join(b["devices"]) or "none"
            print(f"  {name:<18} {b['version']:<14} devices: {devices}  ({b['distribution']})")
    print("\nEngines (highest priority first):")
    for name, e in info["engines"].items():
        print(f"  {name:<18} priority {e['priority']:>4}  {e['description']}")
    plugins = info["plugins"]
    print("\nPlugins (entry points of group 'lazymat'):")
    for name, target in plugins["entry_points"].items():
        state = (
            "disabled by LAZYMAT_DISABLE_PLUGINS"
            if name in plugins["disabled"]
            else f"FAILED: {plugins['failed'][name]}"
            if name in plugins["failed"]
            else "loaded"
        )
        print(f"  {name:<18} {target:<28} {state}")
    if not plugins["entry_points"]:
        print("  none installed")
    for name, message in plugins["shadowed"].items():
        print(f"  {name:<18} DUPLICATE: {message}")
    for name, error in plugins["failed"].items():
        if name not in plugins["entry_points"]:  # a hook that failed in an already loaded plugin
            print(f"  {name:<18} FAILED: {error}")
    print("\nConfiguration in force:")
    for key, opt in info["config"].items():
        print(f"  {key:<10} {opt['value']}  [{opt['source']}]")
    env = info["environment"]
    print(
        "\nEnvironment: "
        + (", ".join(f"{k}={v}" for k, v in env.items()) if env else "no LAZYMAT_* variable set")
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lazymat", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="installed backends, engines, plugins and the configuration in force")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    demo = sub.add_parser("demo", help="nearest neighbours and a kernel product of N 3-D points, measured")
    demo.add_argument("--n", type=int, default=None, help="number of points (default: by engine)")
    demo.add_argument("--quick", action="store_true", help="small sizes everywhere (a few seconds)")
    args = parser.parse_args(argv)
    if args.command == "info":
        collected = collect_info()
        if args.json:
            print(json.dumps(collected, indent=2, default=str))
        else:
            print_info(collected)
        return 0
    if args.n is not None and args.n < 1:
        parser.error(f"--n must be a positive number of points, got {args.n}")
    from . import demo as demo_module

    demo_module.run(args.n, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
