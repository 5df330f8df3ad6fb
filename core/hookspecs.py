"""The plugin hooks of lazymat (pluggy, project name ``lazymat``).

A plugin is a module (or object) with functions marked ``@lazymat.hookimpl`` and named
after these specifications; it is found through the ``lazymat`` entry-point group, e.g.
in its pyproject.toml::

    [project.entry-points.lazymat]
    torch = "lazymat_torch.plugin"

The built-in numpy and array-api-strict backends and the reference engine register
through the same hooks (``lazymat.builtin_plugin``). Every hook here is listed in the
README, and a test fails if one is not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .registry import Registry

hookspec = pluggy.HookspecMarker("lazymat")
hookimpl = pluggy.HookimplMarker("lazymat")


@hookspec
def lazymat_register_backends(registry: Registry) -> None:
    """Add :class:`lazymat.plugin.Backend` instances with ``registry.add_backend(backend)``.

    Keep this cheap: do not import the array library here; a backend recognises its
    arrays by their type's module name and imports the library on first real use.
    """


@hookspec
def lazymat_register_solvers(registry: Registry) -> None:
    """Add the solvers that ``LazyMatrix`` methods delegate to: ``registry.add_solver(kind, fn)``.

    The core itself solves nothing; ``LazyMatrix.solve`` (KeOps' ``LazyTensor.solve``) calls
    the solver of kind ``"linear"``, which ``lazymat.solvers`` registers (its conjugate
    gradient) through this hook, like any other plugin would.
    """


@hookspec
def lazymat_register_engines(registry: Registry) -> None:
    """Add :class:`lazymat.plugin.Engine` instances with ``registry.add_engine(engine)``.

    An engine declares which requests it supports; dispatch runs the supporting engine of
    highest priority unless config forces one by name.
    """
