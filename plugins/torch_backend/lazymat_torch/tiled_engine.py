"""The ``torch-tiled`` engine: the default engine for torch tensors.

Blocked reductions with torch operations (see :mod:`lazymat_torch.tiled_loop`): every
formula and every reduction kind, block-sparse ones (``ranges``) included, on any device,
float16/bfloat16 accumulated in float32.
This module does not import torch; the loop does, on first use.
"""

from __future__ import annotations

from typing import Any

from lazymat.plugin import Engine, ReductionRequest


class TorchTiledEngine(Engine):
    """Blocked torch reductions: squared distances and kernel products through GEMM."""

    name = "torch-tiled"
    priority = 10
    traceable = True  # torch operations only (never traced by jax)

    def supports(self, request: ReductionRequest) -> bool:
        return request.backend.name == "torch"

    def why_not(self, request: ReductionRequest) -> str:
        return f"engine 'torch-tiled' runs on torch tensors, got backend {request.backend.name!r}"

    def run(self, request: ReductionRequest) -> tuple[Any, ...]:
        from .tiled_loop import run_tiled

        return run_tiled(request)
