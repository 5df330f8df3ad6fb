"""The built-in plugin: numpy and array-api-strict backends, the reference and native-cpu engines.

It registers through the same hooks as third-party plugins do, first (``tryfirst``), so
that its names (numpy, reference, ...) cannot be taken by another plugin.
"""

from __future__ import annotations

from .builtin_backends import ArrayApiStrictBackend, NumpyBackend
from .builtin_engines.native_cpu import NativeCpuEngine
from .builtin_engines.reference import ReferenceEngine
from .hookspecs import hookimpl
from .registry import Registry


@hookimpl(tryfirst=True)
def lazymat_register_backends(registry: Registry) -> None:
    registry.add_backend(NumpyBackend())
    registry.add_backend(ArrayApiStrictBackend())


@hookimpl(tryfirst=True)
def lazymat_register_engines(registry: Registry) -> None:
    registry.add_engine(ReferenceEngine())
    registry.add_engine(NativeCpuEngine())
