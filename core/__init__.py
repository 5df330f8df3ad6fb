"""lazymat: symbolic matrices reduced on the fly in linear memory, with gradients.

    >>> import numpy as np, lazymat as lm
    >>> x, y = np.random.rand(1000, 3), np.random.rand(2000, 3)
    >>> K = (-lm.Vi(x).sqdist(lm.Vj(y)) / 0.1).exp()      # a 1000 x 2000 Gaussian kernel
    >>> K.sum(axis=1).shape                                # reduced over j, never stored
    (1000, 1)

``import lazymat`` imports no array library but numpy; plugins load on first use.
"""

from __future__ import annotations

from typing import Any

from .autodiff import matrix_vjp as vjp
from .backend import Backend
from .build_once import Reduction
from .engine import Engine, EngineError, EngineWarning
from .hookspecs import hookimpl
from .ir.node import DimensionError
from .keops.lazytensor import LazyTensor
from .lazymatrix import LazyMatrix, Pm, Vi, Vj
from .options import carry_config, config, set_backend
from .plugin_manager import PluginWarning, get_registry
from .request import ReductionRequest, ReductionSpec

__version__ = "0.1.0"


def grad(matrix: LazyMatrix, **kw: Any) -> tuple[Any, ...]:
    """Gradient of the sum of a reduction's values: ``lazymat.grad(K, reduction="lse", wrt=[x])``."""
    return vjp(matrix, None, **kw)


def backend_for(x: Any) -> Backend:
    """The backend that handles the array ``x`` (its namespace, stop_gradient, custom_vjp)."""
    return get_registry().backend_for(x)


def backends() -> dict[str, dict[str, object]]:
    """Installed backends: name -> version, devices, distribution, and why no device if none."""
    return {
        name: {
            "version": b.version(),
            "devices": b.devices(),
            "distribution": b.distribution,
            "unavailable": b.unavailable_reason(),
        }
        for name, b in get_registry().backends.items()
    }


def engines() -> dict[str, str]:
    """Installed engines: name -> one-line description."""
    return {name: e.describe() for name, e in get_registry().engines.items()}


__all__ = [
    "Backend",
    "DimensionError",
    "Engine",
    "EngineError",
    "EngineWarning",
    "LazyMatrix",
    "LazyTensor",
    "Pm",
    "PluginWarning",
    "Reduction",
    "ReductionRequest",
    "ReductionSpec",
    "Vi",
    "Vj",
    "backend_for",
    "backends",
    "carry_config",
    "config",
    "engines",
    "grad",
    "hookimpl",
    "set_backend",
    "vjp",
]
