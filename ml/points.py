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
    """``(x, xp, backend)``: ``x`` checked as finite floating-point points of shape (N, D), N >= 1.

    Arrays of no lazymat backend (lists, numpy subclasses such as memmaps) become numpy
    arrays; integer and boolean data become float64, as in scikit-learn.
    """
    if hasattr(x, "tocsr") or hasattr(x, "todense"):
        raise TypeError(
            f"{name}: sparse input is not supported (lazymat.ml takes dense points); use X.toarray()"
        )
    if getattr(getattr(x, "dtype", None), "kind", "") == "c":
        raise ValueError(
            f"Complex data not supported: {name} has dtype {x.dtype}; lazymat.ml takes real points"
        )
    if isinstance(x, np.ndarray):  # subclasses (memmaps) as plain arrays; objects as numbers
        x = np.asarray(x, dtype=np.float64 if x.dtype == object else None)
    try:
        backend = lazymat.backend_for(x)
    except TypeError:
        if hasattr(x, "__dlpack__") or hasattr(x, "__array_namespace__"):
            raise  # an array library without its lazymat plugin: no silent copy to numpy
        try:
            x = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"{name} must be an array of points of shape (N, D), got {type(x).__name__}: {err}"
            ) from None
        backend = lazymat.backend_for(x)
    xp = backend.namespace(x)
    if len(x.shape) != 2:
        hint = "; Reshape your data with x.reshape(-1, 1)" if len(x.shape) == 1 else ""
        raise ValueError(
            f"{name} must be points of shape (N, D), got an array of shape {tuple(x.shape)}{hint}"
        )
    for count, what in ((x.shape[0], "sample"), (x.shape[1], "feature")):
        if count == 0:
            raise ValueError(
                f"{name} has 0 {what}(s) (shape={tuple(x.shape)}) while a minimum of 1 is required."
            )
    if xp.isdtype(x.dtype, ("integral", "bool")):
        x = xp.astype(x, xp.float64)
    backend.check_dtype(x)
    finite = xp.isfinite(x)
    if not bool(xp.all(finite)):
        bad = int(backend.to_numpy(xp.argmin(xp.astype(xp.all(finite, axis=1), xp.int8))))
        raise ValueError(f"{name} has non-finite coordinates (NaN or inf), first at point {bad}")
    return x, xp, backend


def same_library(x: Any, ref: Any, name: str, ref_name: str, cast: bool = False) -> Any:
    """Check that ``x`` (points) can be compared with ``ref``: same library, dtype and dimension.

    ``ref_name`` names who holds ``ref`` (an estimator's class name, or an argument);
    ``cast=True`` converts floating-point ``x`` to ``ref``'s dtype (estimators compute in
    the precision they were fitted in).
    """
    x, xp, backend = as_points(x, name)
    ref = plain(ref)
    ref_backend = lazymat.backend_for(ref)
    if x.shape[1] != ref.shape[1]:
        raise ValueError(
            f"{name} has {x.shape[1]} features, but {ref_name} is expecting {ref.shape[1]} features as input"
        )
    if backend.name != ref_backend.name:
        raise TypeError(
            f"{name} is a {backend.name} array but {ref_name} holds {ref_backend.name} arrays: "
            "convert one of them so that both come from one library"
        )
    if x.dtype != ref.dtype:
        if cast:
            return xp.astype(x, ref.dtype)
        raise TypeError(f"{name} has dtype {x.dtype} but {ref_name} has dtype {ref.dtype}: use one dtype")
    return x


def not_fitted(estimator: Any, attribute: str) -> None:
    """Raise scikit-learn's ``NotFittedError`` unless ``estimator`` has ``attribute``."""
    if not hasattr(estimator, attribute):
        from sklearn.exceptions import NotFittedError

        raise NotFittedError(f"this {type(estimator).__name__} is not fitted yet: call fit first")


def plain(a: Any) -> Any:
    """``a``, with numpy subclasses (memmaps of unpickled estimators) as plain numpy arrays."""
    return np.asarray(a) if isinstance(a, np.ndarray) else a


def host(x: Any) -> np.ndarray:
    """A numpy copy (or view) of the array ``x`` of any backend (or of an array-like)."""
    if isinstance(x, np.ndarray):
        return np.asarray(x)
    try:
        return np.asarray(lazymat.backend_for(x).to_numpy(x))
    except TypeError:
        return np.asarray(x)
