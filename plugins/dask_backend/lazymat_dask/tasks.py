"""What the workers run: one block of a reduction, the merge of two partial results, the end.

These are the callables of the task graph (:mod:`lazymat_dask.graph`); dask pickles them
with their parameters and calls them on the chunks, on whichever worker it chooses.

- :class:`RunBlock` builds the block's request from its chunks (``lazymat.plugin.build_block``:
  the block's spec, index selectors shifted to the block) and runs it on the worker's
  engine of highest declared priority for the chunks' library (``engine_by_priority``, from
  the worker's own registry: native-cpu for numpy, torch-tiled for torch, cupy-nvrtc on GPU
  workers), unless ``worker_engine`` forces one. Not dispatch's choice: that one may depend
  on what the process did before (native-cpu takes a small request only once its kernel is
  built), and a block retried on another worker must run on the same engine to give the
  same bits. If that engine fails, the block falls back to dispatch's choice, with a warning
  in the worker's log (``lazymat.dask``).
- :class:`MergePartials` merges the partial outputs of two column ranges
  (``Reduction.merge_partials``: sums add, log-sum-exps combine their (max, sum) pairs,
  min/argmin and K-min keep the better candidates, ties to the lower index).
- :class:`Finish` takes the reduction's own outputs out of the merged partial ones.

Every task is a pure function of its inputs, and the graph fixes which two results each
merge combines: a retried task (a lost worker) recomputes the same bits, and the order in
which tasks complete never changes the answer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import array_api_compat

from lazymat.plugin import (
    Backend,
    EngineError,
    ReductionSpec,
    build_block,
    engine_by_priority,
    get_reduction,
    run_request,
)

from . import chunk_types  # noqa: F401  (registers torch chunks with dask, here and on workers)

_log = logging.getLogger("lazymat.dask")

#: one backend object per name in a worker process: requests of one key then share the
#: engines' cached verdicts (an unpickled backend is a new object each time)
_LOCAL_BACKENDS: dict[str, Backend] = {}


class RunBlock:
    """Reduce one block: ``spec`` (cut to the block) on its chunks, at ``offset`` of the request."""

    def __init__(
        self,
        spec: ReductionSpec,
        backend: Backend,
        tile_bytes: int,
        offset: tuple[int, int],
        engine: str | None,
        exclude: tuple[str, ...],
    ) -> None:
        self.spec, self.backend, self.tile_bytes = spec, backend, tile_bytes
        self.offset, self.engine, self.exclude = offset, engine, exclude

    def __call__(self, *chunks: Sequence[Any]) -> tuple[Any, ...]:
        """Per variable, its chunks nested one list per batch axis, the innermost list over
        the points (several for a column range that spans chunks): joined into one array."""
        backend = _LOCAL_BACKENDS.setdefault(self.backend.name, self.backend)
        arrays = [_join(parts, 0) for parts in chunks]
        request = build_block(self.spec, arrays, backend, self.tile_bytes, self.offset)
        if self.engine is not None:
            return tuple(run_request(request, self.engine))
        engine = engine_by_priority(request, self.exclude).name
        try:
            return tuple(run_request(request, engine))
        except EngineError as exc:
            _log.warning("block at %s: %s; dispatch chooses another engine", self.offset, exc)
            return tuple(run_request(request, exclude=(*self.exclude, engine)))

    def __repr__(self) -> str:
        return f"RunBlock({self.spec.reduction} at {self.offset})"


def _join(parts: Sequence[Any], axis: int) -> Any:
    """The array of nested chunks: the outer lists along batch axes ``axis``, ``axis + 1``, ...,
    the innermost along the points' axis (-2)."""
    if isinstance(parts[0], list):
        parts = [_join(p, axis + 1) for p in parts]
    else:
        axis = -2
    if len(parts) == 1:
        return parts[0]
    return array_api_compat.array_namespace(*parts).concat(list(parts), axis=axis)


class MergePartials:
    """Merge the outputs of the ``partial`` reduction over two column ranges."""

    def __init__(self, partial: str) -> None:
        self.partial = partial

    def __call__(self, a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
        xp = array_api_compat.array_namespace(*a, *b)
        return tuple(get_reduction(self.partial).merge_partials(xp, a, b))


class Finish:
    """The outputs of ``reduction`` from the merged outputs of its partial reduction."""

    def __init__(self, reduction: str) -> None:
        self.reduction = reduction

    def __call__(self, merged: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(get_reduction(self.reduction).from_partial(merged))
