"""The array-API namespace of dask arrays: array-api-compat's, and what it lacks.

lazymat's contract (``lazymat.plugin.REQUIRED_FUNCTIONS``) names ``take_along_axis`` (the
min/argmin and K-min merges, the solvers' gathers), which array-api-compat's dask
namespace does not provide (1.16). It is written here with dask: the gathered axis
becomes one chunk and every block runs its chunks' own ``take_along_axis``, so a gather
never crosses blocks. ``linalg.eigh`` (the Nystrom preconditioner's small r x r
eigendecomposition), also missing, runs the chunks' own ``eigh`` on the matrices made one
chunk (``dask.array.apply_gufunc``). Every other name is array-api-compat's.
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import array_api_compat.dask.array as _compat
import array_api_compat.dask.array.linalg as _compat_linalg
import dask.array as da


def __getattr__(name: str) -> Any:
    return getattr(_compat, name)  # AttributeError: not provided


def _take_block(a: Any, indices: Any, axis: int) -> Any:
    return array_api_compat.array_namespace(a, indices).take_along_axis(a, indices, axis=axis)


def take_along_axis(x: da.Array, indices: da.Array, /, *, axis: int = -1) -> da.Array:
    """The values of ``x`` at ``indices`` along ``axis`` (the other axes broadcast)."""
    if x.ndim != indices.ndim:
        raise ValueError(f"take_along_axis needs arrays of one rank, got {x.ndim} and {indices.ndim}")
    axis = axis % x.ndim
    common = [max(a, b) for a, b in zip(x.shape, indices.shape, strict=True)]

    def broadcast(a: da.Array) -> da.Array:
        return da.broadcast_to(a, tuple(a.shape[k] if k == axis else s for k, s in enumerate(common)))

    x, indices = broadcast(x), broadcast(indices)
    x = x.rechunk({axis: -1})
    indices = indices.rechunk(tuple(-1 if k == axis else c for k, c in enumerate(x.chunks)))
    return da.map_blocks(
        _take_block,
        x,
        indices,
        axis=axis,
        dtype=x.dtype,
        chunks=indices.chunks,
        meta=x._meta,
    )


def _eigh_block(a: Any) -> tuple[Any, Any]:
    return tuple(array_api_compat.array_namespace(a).linalg.eigh(a))  # type: ignore[return-value]


class _Linalg:
    """array-api-compat's dask ``linalg`` and ``eigh``."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_compat_linalg, name)

    @staticmethod
    def eigh(x: da.Array, /) -> Any:
        """Eigenvalues (ascending) and eigenvectors of the symmetric matrices of ``x`` (..., n, n)."""
        values, vectors = da.apply_gufunc(
            _eigh_block, "(i,j)->(i),(i,j)", x, output_dtypes=(x.dtype, x.dtype), allow_rechunk=True
        )
        return _compat_linalg.EighResult(values, vectors)


linalg = _Linalg()
