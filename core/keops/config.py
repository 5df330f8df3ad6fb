"""``pykeops.config``'s flag that KeOps code reads: ``gpu_available``.

It is computed when first read (it asks the installed backends for their devices, which
imports their libraries), True when one of them has a CUDA device.
"""

from __future__ import annotations

from typing import Any


def _gpu_available() -> bool:
    from lazymat.plugin_manager import get_registry

    backends = get_registry().backends.values()
    return any(str(device).startswith("cuda") for backend in backends for device in backend.devices())


def __getattr__(name: str) -> Any:
    if name == "gpu_available":
        return _gpu_available()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
