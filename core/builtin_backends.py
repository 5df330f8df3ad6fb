"""Backends for libraries without autodiff that speak the array API: numpy, array-api-strict.

Gradients for them come from ``lazymat.vjp`` / ``lazymat.grad``, which build the
symbolic VJP reductions directly.
"""

from __future__ import annotations

import importlib
from typing import Any

from .backend import Backend


class NumpyBackend(Backend):
    """numpy arrays on the CPU."""

    name = "numpy"
    module = "numpy"

    def recognizes(self, x: Any) -> bool:
        return type(x).__module__ == "numpy" and type(x).__name__ == "ndarray"

    def device(self, x: Any) -> Any:
        """Always the CPU (what ``array_api_compat.device`` says, without its dispatch: this is
        read for every argument of every reduction, in the request's cache key)."""
        return "cpu"

    def default_namespace(self) -> Any:
        import array_api_compat.numpy

        return array_api_compat.numpy


class ArrayApiStrictBackend(Backend):
    """array-api-strict arrays: the array API standard and nothing more (for testing)."""

    name = "array_api_strict"
    module = "array_api_strict"

    def default_namespace(self) -> Any:
        return importlib.import_module("array_api_strict")

    def from_numpy(self, a: Any, device: Any = None) -> Any:
        import numpy as np

        return self.default_namespace().asarray(np.ascontiguousarray(a))

    def to_numpy(self, x: Any) -> Any:
        import numpy as np

        return np.asarray(x.__array__()) if hasattr(x, "__array__") else np.from_dlpack(x)

    def device_name(self, x: Any) -> str:
        return "cpu"
