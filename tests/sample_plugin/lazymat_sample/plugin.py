"""Registration (entry point ``sample`` of group ``lazymat``)."""

from __future__ import annotations

from lazymat.plugin import Registry, hookimpl

from .backend import SampleBackend
from .engine import SplitEngine


@hookimpl
def lazymat_register_backends(registry: Registry) -> None:
    registry.add_backend(SampleBackend())


@hookimpl
def lazymat_register_engines(registry: Registry) -> None:
    registry.add_engine(SplitEngine())
