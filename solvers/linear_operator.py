"""SciPy interop: a LazyMatrix as a ``scipy.sparse.linalg.LinearOperator``.

``lazymat.aslinearoperator(K)`` lets SciPy's iterative solvers and eigensolvers
(``cg``, ``gmres``, ``eigsh``, ``svds``, ...) run on a symbolic matrix: every product
``K @ v`` or ``K.T @ v`` is one lazymat reduction, in linear memory. numpy backend only
(SciPy works on numpy arrays); SciPy is imported on the first call.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lazymat.lazymatrix import LazyMatrix


def aslinearoperator(K: LazyMatrix) -> Any:
    """A ``scipy.sparse.linalg.LinearOperator`` of shape (N, M) computing ``K @ v`` lazily."""
    from scipy.sparse.linalg import LinearOperator

    if not isinstance(K, LazyMatrix):
        raise TypeError(f"aslinearoperator expects a LazyMatrix, got {type(K).__module__}.{type(K).__name__}")
    if K.dim != 1:
        raise ValueError(
            f"aslinearoperator needs a scalar formula (inner dimension 1), got dimension {K.dim}"
        )
    if K.backend is None or K.backend.name != "numpy":
        name = "no array" if K.backend is None else f"{K.backend.name} arrays"
        raise TypeError(f"aslinearoperator needs a matrix of numpy arrays (SciPy works on numpy), got {name}")
    n, m = K.shape
    if n is None or m is None:
        raise ValueError(
            f"aslinearoperator needs i- and j-indexed variables, got a matrix of shape {K.shape}"
        )
    arrays = list(K.bindings.values())
    if any(a.ndim > (1 if v.cat == "p" else 2) for v, a in K.bindings.items()):
        raise ValueError("aslinearoperator needs an unbatched matrix: a LinearOperator is 2-D")
    dtype = arrays[0].dtype
    KT = K.T

    def matmat(v: Any) -> Any:
        return K @ np.ascontiguousarray(v, dtype=dtype)

    def rmatmat(v: Any) -> Any:
        return KT @ np.ascontiguousarray(v, dtype=dtype)

    return LinearOperator((n, m), matvec=matmat, rmatvec=rmatmat, matmat=matmat, rmatmat=rmatmat, dtype=dtype)
