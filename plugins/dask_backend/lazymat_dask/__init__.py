"""lazymat-dask: lazymat's reductions and solvers on dask arrays, on one machine or a cluster.

``Vi``, ``Vj`` and ``Pm`` take dask arrays (numpy, cupy or torch chunks of known sizes);
a reduction becomes a dask graph of blocks, each reduced on a worker by that worker's
best engine, the partial results merged in a fixed tree (:mod:`lazymat_dask.graph`).
Results are lazy dask arrays chunked like the reduced side's rows; ``config(persist=True)``
keeps them (and the inputs) on the cluster, ``config(compute=True)`` returns the chunks'
library's arrays (:mod:`lazymat_dask.options`). Any dask scheduler runs the graph: the
threads of this process by default, or a ``distributed.Client`` (a ``LocalCluster`` or an
existing cluster).
"""

from __future__ import annotations

from .options import config, current, set_options

__all__ = ["config", "current", "set_options"]
