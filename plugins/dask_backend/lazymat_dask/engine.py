"""The dask engine: a reduction of dask arrays as a graph of blocks run by the workers' engines.

It never computes: ``run`` returns dask arrays whose graph (:mod:`lazymat_dask.graph`)
tiles the reduction over (row chunk, column range) blocks, reduces each block on a worker
with that worker's best engine for the chunks' library (``run_request`` on the worker,
whose registry is its own), and merges the partial results in a fixed tree. Dask's
scheduler (threads, processes, or a ``distributed`` cluster) runs it: placement, data
movement, retries after a lost worker.
"""

from __future__ import annotations

from typing import Any

from lazymat.plugin import Engine, ReductionRequest

from .options import current


class DaskEngine(Engine):
    """Blocks of dask chunks reduced on the workers, partial results merged in a fixed tree."""

    name = "dask"
    #: above every engine that could take a dask request (only the reference engine can)
    priority = 100

    def supports(self, request: ReductionRequest) -> bool:
        return request.backend.name == "dask"

    def why_not(self, request: ReductionRequest) -> str:
        return f"it runs reductions of dask arrays, got {request.backend.name} arrays"

    def run(self, request: ReductionRequest) -> tuple[Any, ...]:
        from .graph import reduction_graph

        floating = next(a for a in request.args if request.backend.is_floating(a))
        chunk_backend = request.backend.chunk_backend(floating)  # type: ignore[attr-defined]
        return reduction_graph(request, chunk_backend, current().worker_engine)
