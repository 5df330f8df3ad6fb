"""The ``jax-xla`` engine: lazymat reductions traced into XLA programs.

The work happens in :mod:`lazymat_jax.tiling` and, for block-sparse requests (``ranges``),
:mod:`lazymat_jax.block_sparse` (imported on first use, so that loading the plugin does
not import jax).
"""

from __future__ import annotations

from typing import Any

from lazymat.plugin import Engine, ReductionRequest


class JaxXlaEngine(Engine):
    """Tiled reductions of jax arrays compiled by XLA (lax.map over rows, lax.scan over columns)."""

    name = "jax-xla"
    priority = 10
    traceable = True  # namespace functions only

    def supports(self, request: ReductionRequest) -> bool:
        if request.backend.name != "jax":
            return False
        from .tiling import supported

        return supported(request)

    def why_not(self, request: ReductionRequest) -> str:
        if request.backend.name != "jax":
            return f"it computes on jax arrays only, got {request.backend.name} arrays"
        return f"it has no merge for the {request.spec.reduction} reduction"

    def run(self, request: ReductionRequest) -> tuple[Any, ...]:
        if request.ranges is not None:
            from .block_sparse import run_block_sparse

            return run_block_sparse(request)
        from .tiling import run_tiled

        return run_tiled(request)
