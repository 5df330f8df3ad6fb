"""The built-in plugin: numpy and array-api-strict backends, the reference and native-cpu engines.

It registers through the same hooks as third-party plugins do.
"""

from __future__ import annotations

from .backends.array_api import ArrayApiStrictBackend, NumpyBackend
from .engines.native_cpu import NativeCpuEngine
from .engines.reference import ReferenceEngine
from .hookspecs import hookimpl
from .registry import Registry


@hookimpl
def lazymat_register_backends(registry: Registry) -> None:
    registry.add_backend(NumpyBackend())
    registry.add_backend(ArrayApiStrictBackend())


@hookimpl
def lazymat_register_engines(registry: Registry) -> None:
    registry.add_engine(ReferenceEngine())
    registry.add_engine(NativeCpuEngine())
