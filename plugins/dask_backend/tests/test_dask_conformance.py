"""The conformance suite on the dask backend, threads scheduler (this process).

Every array the suite makes is a dask array cut into uneven chunks along its points
(:func:`awkward_chunks`: a chunk of one row among larger ones), so every reduction is
split over rows and columns and merged; the suite compares each with dense float64
numpy (``lazymat.testing``). ``test_dask_cluster.py`` runs a part of it on a two-process
``LocalCluster`` (and all of it under the ``slow`` marker).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import dask
import dask.array as da
import numpy as np
import pytest

import lazymat.testing


def awkward_chunks(n: int) -> tuple[int, ...]:
    """Up to four uneven chunks of ``n`` rows, one of a single row: 37 -> (12, 1, 16, 8)."""
    if n < 4:
        return (n,)
    first = max(1, int(0.35 * n))
    third = max(1, int(0.45 * n))
    rest = n - first - 1 - third
    return (first, 1, third, rest) if rest > 0 else (first, 1, n - first - 1)


class DaskConformance(lazymat.testing.BackendConformance):
    """The suite with every array cut by :func:`awkward_chunks` along its points' axis."""

    backend = "dask"
    chunking: ClassVar[str] = "awkward"

    def to_backend(self, a: np.ndarray) -> Any:
        a = np.ascontiguousarray(a)
        if a.ndim == 0:
            return da.from_array(a)
        axis = max(a.ndim - 2, 0)
        rows = (a.shape[axis],) if self.chunking == "whole" else awkward_chunks(a.shape[axis])
        by_one = self.chunking == "batches"  # batch axes too: one chunk per batch element
        return da.from_array(
            a, chunks=tuple(rows if k == axis else 1 if by_one and k < axis else -1 for k in range(a.ndim))
        )


@pytest.fixture(autouse=True)
def _threads_scheduler() -> Any:
    with dask.config.set(scheduler="threads"):
        yield


class TestDaskChunked(DaskConformance):
    """Dispatch chooses the engine (the dask engine), chunks of awkward sizes on both sides."""

    engine = None


class TestDaskBatchChunks(DaskConformance):
    """Batch axes cut into one chunk per element as well (batch-stacked solvers' arrays):
    blocks tile the batch chunks, arguments broadcast along a batch axis are read whole."""

    engine = None
    chunking = "batches"
    selection: ClassVar[Callable[[str], bool] | None] = staticmethod(lambda name: name == "test_batch_dims")


class TestDaskOneChunk(DaskConformance):
    """The dask engine forced, one chunk per array (one block: no merge)."""

    engine = "dask"
    chunking = "whole"
