"""Input checks shared by lazymat.ml: point clouds as (N, D) arrays of any lazymat backend.

Estimators accept arrays of any installed backend (numpy, torch, jax, cupy) and compute in
that library, on its device; Python sequences become float64 numpy arrays, as in
scikit-learn. Every check raises an error that says what was expected and what was given:
a non-finite coordinate, a 1-D array where points are expected, integer data, no point.
The checks read one boolean on the host, so estimators run eagerly (not under jax.jit).
"""

from __future__ import annotations

from typing import Any

import numpy as np

import lazymat
from lazymat.backend import Backend


def as_points(x: Any, name: str = "X") -> tuple[Any, Any, Backend]:
    """``(x, xp, backend)``: ``x`` checked as finite floating-point points of shape (N, D), N >= 1."""
    if isinstance(x, (list, tuple)):
        x = np.asarray(x, dtype=np.float64)
    backend = lazymat.backend_for(x)
    xp = backend.namespace(x)
    if len(x.shape) != 2:
        hint = "; reshape 1-D data with x.reshape(-1, 1)" if len(x.shape) == 1 else ""
        raise ValueError(
            f"{name} must be points of shape (N, D), got an array of shape {tuple(x.shape)}{hint}"
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must hold at least one point of dimension >= 1, got shape {tuple(x.shape)}")
    backend.check_dtype(x)
    finite = xp.isfinite(x)
    if not bool(xp.all(finite)):
        bad = int(backend.to_numpy(xp.argmin(xp.astype(xp.all(finite, axis=1), xp.int8))))
        raise ValueError(f"{name} has non-finite coordinates (NaN or inf), first at point {bad}")
    return x, xp, backend


def same_library(x: Any, ref: Any, name: str, ref_name: str) -> Any:
    """Check that ``x`` (points) can be compared with ``ref``: same library, dtype and dimension."""
    x, _, backend = as_points(x, name)
    ref_backend = lazymat.backend_for(ref)
    if backend.name != ref_backend.name:
        raise TypeError(
            f"{name} is a {backend.name} array but {ref_name} is a {ref_backend.name} array: "
            "convert one of them so that both come from one library"
        )
    if x.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {x.dtype} but {ref_name} has dtype {ref.dtype}: use one dtype")
    if x.shape[1] != ref.shape[1]:
        raise ValueError(f"{name} has {x.shape[1]} features per point but {ref_name} has {ref.shape[1]}")
    return x


def host(x: Any) -> np.ndarray:
    """A numpy copy (or view) of the array ``x`` of any backend."""
    return np.asarray(lazymat.backend_for(x).to_numpy(x)) if not isinstance(x, np.ndarray) else x
