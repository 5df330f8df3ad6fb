"""Discrete measures given as weighted point clouds: input checking and normalisation.

Every solver of this package takes two measures alpha = sum_i a_i delta_{x_i} and
beta = sum_j b_j delta_{y_j}, with points ``x`` of shape (N, D) or (B, N, D) (a batch of
B clouds) and weights ``a`` of shape (N,) or (B, N) (uniform 1/N when omitted).
:func:`check_measures` turns them into a :class:`Measures` record with a batch
dimension always present, and raises a clear error for what cannot be a measure:
clouds of different dimensions or batch sizes, empty clouds, NaN or infinite
coordinates, weights of the wrong shape, negative, NaN or infinite weights
(:func:`check_finite`, which the other solvers use at their entry too).

Value checks (signs, NaN, total masses) need concrete arrays; under ``jax.jit`` they
are skipped, since a traced array has no value yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import array_api_compat

import lazymat


@dataclass(frozen=True)
class Measures:
    """Two weighted clouds with an explicit batch dimension: x (B, N, D), a (B, N), ..."""

    x: Any
    y: Any
    a: Any
    b: Any
    #: False when the user gave unbatched clouds (N, D): results drop the batch axis
    batched: bool
    xp: Any

    def unbatch(self, v: Any) -> Any:
        """``v`` of shape (B, ...) back to the user's layout (drops B=1 when unbatched)."""
        return v if self.batched else v[0, ...]


def _concrete_bool(value: Any) -> bool | None:
    """``bool(value)``, or None for a traced array that has no value yet (jax.jit)."""
    try:
        return bool(value)
    except TypeError:  # jax's ConcretizationTypeError subclasses TypeError
        return None


def _describe(v: Any) -> str:
    return f"{type(v).__module__}.{type(v).__name__} of shape {tuple(v.shape)}"


def check_finite(xp: Any, name: str, v: Any, what: str = "numbers") -> None:
    """Raise ValueError naming ``name`` when ``v`` holds NaN or infinities: every solver
    checks its array inputs with this once, at its public entry (one pass over the data;
    skipped for traced arrays, which have no values yet)."""
    finite = xp.isfinite(v)
    if _concrete_bool(xp.all(finite)) is not False:
        return
    nan = int(xp.sum(xp.astype(xp.isnan(v), xp.int64)))
    inf = int(xp.sum(xp.astype(xp.logical_not(finite), xp.int64))) - nan
    raise ValueError(
        f"'{name}' must hold finite {what}, got {nan} NaN and {inf} infinite value(s) in {_describe(v)}"
    )


def _check_points(name: str, v: Any) -> None:
    if not hasattr(v, "shape") or not hasattr(v, "dtype"):
        raise TypeError(f"'{name}' must be an array of points of shape (N, D) or (B, N, D), got {type(v)}")
    if len(v.shape) not in (2, 3):
        raise ValueError(f"'{name}' must have shape (N, D) or (B, N, D), got {_describe(v)}")
    if v.shape[-2] == 0:
        raise ValueError(f"'{name}' is an empty point cloud ({_describe(v)}): expected at least one point")
    if v.shape[-1] == 0:
        raise ValueError(f"'{name}' has points of dimension 0 ({_describe(v)})")


def _weights(name: str, w: Any, points: Any, xp: Any) -> Any:
    """Weights of shape (B, N) in the points' dtype: uniform when ``w`` is None."""
    lead = tuple(points.shape[:-1])
    if w is None:
        n = points.shape[-2]
        return xp.ones(lead, dtype=points.dtype, device=array_api_compat.device(points)) / n
    if tuple(w.shape) != lead:
        raise ValueError(
            f"weights '{name}' must have shape {lead} to match the points of shape "
            f"{tuple(points.shape)}, got {_describe(w)}"
        )
    if not xp.isdtype(w.dtype, "real floating"):
        raise TypeError(f"weights '{name}' must be real floating-point numbers, got dtype {w.dtype}")
    w = xp.astype(w, points.dtype) if w.dtype != points.dtype else w
    check_finite(xp, name, w, "weights")
    if _concrete_bool(xp.any(w < 0)):
        raise ValueError(f"weights '{name}' must be nonnegative, got a minimum of {float(xp.min(w))}")
    return w


def _floats(v: Any) -> list[float]:
    return [float(v[k]) for k in range(v.shape[0])]


def check_measures(x: Any, y: Any, a: Any = None, b: Any = None, *, balanced: bool = False) -> Measures:
    """Check and normalise two weighted point clouds (see the module docstring).

    With ``balanced=True`` the total masses must agree (per batch), since balanced
    optimal transport has no solution otherwise.
    """
    _check_points("x", x)
    _check_points("y", y)
    if lazymat.backend_for(x).name != lazymat.backend_for(y).name:
        raise TypeError(f"x and y come from different array libraries: {_describe(x)} and {_describe(y)}")
    xp = array_api_compat.array_namespace(x, y)
    if len(x.shape) != len(y.shape):
        raise ValueError(
            f"x and y must both be batched (B, N, D) or both unbatched (N, D): got {_describe(x)} "
            f"and {_describe(y)}"
        )
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"x and y must be clouds in the same space: x has points of dimension {x.shape[-1]}, "
            f"y of dimension {y.shape[-1]}"
        )
    if len(x.shape) == 3 and x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same batch size, got {x.shape[0]} and {y.shape[0]}")
    for name, v in (("x", x), ("y", y)):
        if not xp.isdtype(v.dtype, "real floating"):
            raise TypeError(f"'{name}' must hold real floating-point numbers, got dtype {v.dtype}")
        check_finite(xp, name, v, "coordinates")
    if x.dtype != y.dtype:
        raise TypeError(f"x and y have different dtypes ({x.dtype} and {y.dtype}); cast them to one dtype")
    a = _weights("a", a, x, xp)
    b = _weights("b", b, y, xp)
    batched = len(x.shape) == 3
    if not batched:
        x, y, a, b = (xp.expand_dims(v, axis=0) for v in (x, y, a, b))
    if balanced:
        check_equal_masses(xp, a, b)
    return Measures(x=x, y=y, a=a, b=b, batched=batched, xp=xp)


def check_equal_masses(xp: Any, a: Any, b: Any) -> None:
    """Raise unless sum(a) == sum(b) per batch, up to round-off of the dtype."""
    ma, mb = xp.sum(a, axis=-1), xp.sum(b, axis=-1)
    rtol = max(1e-6, 1000 * float(xp.finfo(a.dtype).eps))
    close = xp.abs(ma - mb) <= rtol * xp.maximum(xp.abs(ma), xp.abs(mb))
    if _concrete_bool(xp.all(close)) is False:
        raise ValueError(
            "balanced optimal transport needs weights of equal total mass, got sum(a) = "
            f"{_floats(ma)} and sum(b) = {_floats(mb)}; normalise the weights, "
            "or pass reach=... for unbalanced transport, which allows different masses"
        )
