"""Registration of the cupy backend and the cupy-nvrtc engine (the ``lazymat`` entry point).

Loading this module must stay cheap and work without a GPU: it does not import cupy.
"""

from __future__ import annotations

from lazymat.plugin import Registry, hookimpl

from .backend import CupyBackend
from .engine import CupyNvrtcEngine


@hookimpl
def lazymat_register_backends(registry: Registry) -> None:
    registry.add_backend(CupyBackend())


@hookimpl
def lazymat_register_engines(registry: Registry) -> None:
    registry.add_engine(CupyNvrtcEngine())
