"""The ``jax-xla`` engine: lazymat reductions traced into XLA programs.

The work happens in :mod:`lazymat_jax.tiling` and, for block-sparse requests (``ranges``),
:mod:`lazymat_jax.block_sparse` (imported on first use, so that loading the plugin does
not import jax).
"""

from __future__ import annotations

import math
from typing import Any

from lazymat.plugin import Engine, ReductionRequest, tile_sizes


class JaxXlaEngine(Engine):
    """Tiled reductions of jax arrays compiled by XLA (lax.map over rows, lax.scan over columns)."""

    name = "jax-xla"
    priority = 10
    traceable = True  # namespace functions only
    #: inside a program of the user's, a problem of one tile: above native-cpu (20), whose
    #: ``jax.pure_callback`` out of the compiled program costs more than the whole tile
    #: (shooting at N = 100 under jax.jit: 1.4 ms against 9.3 ms; BENCHMARKS.md run Q3)
    fused_priority = 30
    #: ... for at most this many pairs (batch included): XLA's tile beats native-cpu's callback
    #: up to a few hundred points (N = 300: 12 ms against 65 ms, shooting under jax.jit), and
    #: loses beyond (N = 1000: 150 ms against 66 ms)
    fused_max_pairs = 1 << 18

    def priority_for(self, request: ReductionRequest) -> int:
        """``fused_priority`` for a small problem of one tile in the user's ``jax.jit`` program
        (:func:`lazymat_jax.primitive.inlined`, gradients included); ``priority`` otherwise
        (an eager call is a program of its own, where native-cpu's callback is the cheaper)."""
        from .primitive import inlined

        pairs = request.n * request.m * math.prod(request.batch)
        if request.ranges is None and pairs <= self.fused_max_pairs and inlined(request.args):
            import jax.numpy as jnp

            ti, tj = tile_sizes(request, jnp.dtype(request.dtype).itemsize)
            if ti >= request.n and tj >= request.m:
                return self.fused_priority
        return self.priority

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
