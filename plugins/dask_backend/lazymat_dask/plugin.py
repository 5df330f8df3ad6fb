"""Registration of the dask backend and engine (the ``lazymat`` entry point ``dask``).

Loading this module must stay cheap: it imports neither dask nor distributed.
"""

from __future__ import annotations

from lazymat.plugin import Registry, hookimpl

from .backend import DaskBackend
from .engine import DaskEngine


@hookimpl
def lazymat_register_backends(registry: Registry) -> None:
    registry.add_backend(DaskBackend(registry))


@hookimpl
def lazymat_register_engines(registry: Registry) -> None:
    registry.add_engine(DaskEngine())
