"""Dask arrays as a reduction's arguments: checks, wrapping, persisting once.

- :func:`check_chunks`: a reduction is tiled by chunks, so their sizes must be known
  (dask leaves them NaN after boolean indexing, for instance).
- :func:`as_dask`: a derivative reduction may mix the user's dask arrays with arrays of the
  chunks' library (a numpy cotangent; the outputs of an earlier reduction in ``compute``
  mode); they become dask arrays with the row chunks of their side.
- :class:`PersistedInputs`: in ``persist`` mode each input array is persisted once, by its
  dask name (which names its content), and reused by every later reduction while it is
  among the most recent ones; with a ``distributed.Client`` its chunks stay on the workers.
"""

from __future__ import annotations

import math
import operator
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import dask
import dask.array as da
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph


def is_dask_array(x: Any) -> bool:
    """True for dask arrays (by type name, without importing dask when there are none)."""
    return type(x).__name__ == "Array" and type(x).__module__.startswith("dask.array")


def check_chunks(arrays: Sequence[Any]) -> None:
    """Raise ``ValueError`` for a dask array whose chunk sizes are unknown (NaN)."""
    for a in arrays:
        if is_dask_array(a) and any(math.isnan(c) for axis in a.chunks for c in axis):
            raise ValueError(
                f"a dask array of unknown chunk sizes (shape {a.shape}) reached a lazymat reduction, "
                "which is tiled by chunks and needs their sizes: call x.compute_chunk_sizes() first"
            )


def row_axis(ndim: int) -> int:
    """The axis of the points: -2 for (..., N, D) arrays, the only axis of (N,) ones."""
    return max(ndim - 2, 0)


def as_dask(a: Any, rows: tuple[int, ...] | None) -> da.Array:
    """``a`` (an array of any library) as a dask array: rows in chunks ``rows`` (None: one
    chunk), every other axis whole; the array itself is one key of the graph."""
    shape = tuple(int(s) for s in a.shape)
    axis = row_axis(len(shape))
    if rows is None or not shape or sum(rows) != shape[axis]:
        rows = (shape[axis],) if shape else ()
    name = f"lazymat-wrapped-{tokenize(a, rows)}"  # the same array cut otherwise is another array
    whole = (f"{name}-whole",)
    layer: dict[Any, Any] = {whole: a}
    start = 0
    for b, size in enumerate(rows):
        index = tuple(slice(start, start + size) if k == axis else slice(None) for k in range(len(shape)))
        key = (name, *(b if k == axis else 0 for k in range(len(shape))))
        layer[key] = (operator.getitem, whole, index)
        start += size
    if not shape:
        layer[(name,)] = (operator.getitem, whole, ())
    chunks = tuple(rows if k == axis else (s,) for k, s in enumerate(shape))
    graph = HighLevelGraph.from_collections(name, layer, dependencies=())
    return da.Array(graph, name, chunks, meta=a[(slice(0, 0),) * len(shape)] if shape else a)


class PersistedInputs:
    """The last ``size`` input arrays persisted on the current scheduler, by dask name.

    :meth:`lookup` swaps the arrays persisted before for their persisted copies and names
    the others; the caller persists those together with the reduction's outputs (one
    submission to the scheduler, not one for the inputs and one for the outputs) and
    hands them to :meth:`remember`."""

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._arrays: OrderedDict[tuple[str, int], da.Array] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _scheduler() -> int:
        return id(getattr(dask.base.get_scheduler(), "__self__", None))  # the Client, if any

    def lookup(self, arrays: Sequence[da.Array]) -> tuple[list[da.Array], dict[str, da.Array]]:
        """The arrays with the persisted ones swapped in; the others by name (first of each)."""
        scheduler = self._scheduler()
        out: list[da.Array] = []
        missing: dict[str, da.Array] = {}
        with self._lock:
            for a in arrays:
                found = self._arrays.get((a.name, scheduler))
                if found is None:
                    missing.setdefault(a.name, a)
                else:
                    self._arrays.move_to_end((a.name, scheduler))
                out.append(a if found is None else found)
        return out, missing

    def remember(self, persisted: dict[str, da.Array]) -> None:
        """Keep ``persisted`` (name -> persisted array) for later lookups, the oldest dropped."""
        scheduler = self._scheduler()
        with self._lock:
            for name, p in persisted.items():
                self._arrays[(name, scheduler)] = p
            while len(self._arrays) > self.size:
                self._arrays.popitem(last=False)
