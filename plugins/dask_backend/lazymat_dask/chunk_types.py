"""What dask needs to know about chunk types it does not know: torch tensors.

Dask concatenates chunks with the function its ``concatenate_lookup`` dispatches on the
chunks' type; numpy and cupy are registered by dask itself, torch tensors here (lazily:
the function is registered the first time dask meets a tensor, without importing torch
before). Importing this module registers it; the engine (client) and the workers' tasks
import it, so that ``.compute()`` of a result of torch chunks concatenates them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dask.array.dispatch import concatenate_lookup


@concatenate_lookup.register_lazy("torch")
def _register_torch() -> None:
    import torch

    @concatenate_lookup.register(torch.Tensor)
    def _concatenate(arrays: Sequence[Any], axis: int = 0) -> Any:
        return torch.cat(list(arrays), dim=axis)
