"""Registration of the torch backend and its engines (the ``lazymat`` entry point).

Loading this module must stay cheap: it imports neither torch nor pykeops.
"""

from __future__ import annotations

from lazymat.plugin import Registry, hookimpl

from .backend import TorchBackend
from .keops_engine import KeOpsEngine
from .tiled_engine import TorchTiledEngine


@hookimpl
def lazymat_register_backends(registry: Registry) -> None:
    registry.add_backend(TorchBackend())


@hookimpl
def lazymat_register_engines(registry: Registry) -> None:
    registry.add_engine(TorchTiledEngine())
    registry.add_engine(KeOpsEngine())
