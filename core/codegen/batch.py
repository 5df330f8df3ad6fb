"""Batch dimensions as the generated kernels take them: one element offset per batch element.

The kernels of every target (:class:`~lazymat.codegen.cpu.CpuSkeleton`,
:class:`lazymat_cupy.cuda_skeleton.CudaSkeleton`) loop over the flattened batch of a request
and read each variable at an element offset from its data pointer. :func:`batch_offsets`
builds those offsets on the host: a variable whose batch dimensions are broadcast (size 1,
or missing on the left) repeats an offset, so broadcasting costs no copy.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["batch_offsets"]


def batch_offsets(batch: tuple[int, ...], arg_batch: tuple[int, ...], stride: int) -> np.ndarray:
    """Element offset of each batch element of ``batch`` (flattened) in a contiguous array.

    The array has batch dimensions ``arg_batch``, broadcastable to ``batch``, and ``stride``
    elements per batch element. Returns an int64 array of ``prod(batch)`` offsets.
    """
    count = math.prod(arg_batch)
    ids = np.arange(count, dtype=np.int64).reshape((1,) * (len(batch) - len(arg_batch)) + arg_batch)
    return np.ascontiguousarray(np.broadcast_to(ids, batch).reshape(-1) * stride)
