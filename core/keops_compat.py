"""A KeOps-compatible ``LazyTensor``, so that KeOps code runs with only its import changed.

KeOps encodes the indexing in the shape: ``(N, 1, D)`` is i-indexed, ``(1, M, D)``
j-indexed, ``(1, 1, D)`` (or a 1-D array, or a number) a parameter, with optional leading
batch dimensions; reductions and the inner sum take ``dim=`` (or ``axis=``) counted on
that ``(*batch, N, M, D)`` layout. Everything else is the LazyMatrix API.

One deliberate difference: ``argmin``/``argKmin`` return int64 indices (KeOps returns
floats), which index arrays directly.
"""

from __future__ import annotations

from typing import Any

from .lazymatrix import LazyMatrix, Pm, Vi, Vj


class LazyTensor(LazyMatrix):
    """``LazyTensor(x)`` with x of shape (*b, N, 1, D), (*b, 1, M, D), (*b, 1, 1, D), (D,) or a number."""

    __slots__ = ()

    def __init__(self, x: Any, axis: int | None = None) -> None:
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            made = LazyMatrix._lift(self, x)  # a constant
        else:
            made = _from_array(x, axis)
        self.formula, self.bindings, self.backend = made.formula, made.bindings, made.backend

    @property
    def nbatch(self) -> int:
        """Number of leading batch dimensions."""
        return max(
            (len(a.shape) - (1 if v.cat == "p" else 2) for v, a in self.bindings.items()),
            default=0,
        )

    def _axis(self, dim: int | None, axis: int) -> int:
        """Map a KeOps dimension (``dim=`` or the first positional argument) to 0, 1 or -1."""
        d = axis if dim is None else dim
        nb = self.nbatch
        if d < 0:
            d += nb + 3
        if d == nb + 2:
            return -1
        if d not in (nb, nb + 1):
            raise ValueError(
                f"dim={d} is not a reduction dimension of a LazyTensor with {nb} batch "
                f"dimension(s): expected {nb} (over i), {nb + 1} (over j) or {nb + 2} (inner)"
            )
        return d - nb

    def sum(self, axis: int = 1, *, dim: int | None = None, **kw: Any) -> Any:
        return super().sum(self._axis(dim, axis), **kw)

    def sum_reduction(self, axis: int = 1, *, dim: int | None = None, **kw: Any) -> Any:
        return super().sum(self._axis(dim, axis), **kw)

    def logsumexp(self, axis: int = 1, weight: Any = None, *, dim: int | None = None, **kw: Any) -> Any:
        return super().logsumexp(self._axis(dim, axis), weight=weight, **kw)

    def sumsoftmaxweight(self, weight: Any, axis: int = 1, *, dim: int | None = None, **kw: Any) -> Any:
        return super().sumsoftmaxweight(weight, self._axis(dim, axis), **kw)

    def min(self, axis: int = 1, *, dim: int | None = None, **kw: Any) -> Any:
        return super().min(self._axis(dim, axis), **kw)

    def max(self, axis: int = 1, *, dim: int | None = None, **kw: Any) -> Any:
        return super().max(self._axis(dim, axis), **kw)

    def argmin(self, axis: int = 1, *, dim: int | None = None, **kw: Any) -> Any:
        return super().argmin(self._axis(dim, axis), **kw)

    def argmax(self, axis: int = 1, *, dim: int | None = None, **kw: Any) -> Any:
        return super().argmax(self._axis(dim, axis), **kw)

    def min_argmin(self, axis: int = 1, *, dim: int | None = None, **kw: Any) -> Any:
        return super().min_argmin(self._axis(dim, axis), **kw)

    def max_argmax(self, axis: int = 1, *, dim: int | None = None, **kw: Any) -> Any:
        return super().max_argmax(self._axis(dim, axis), **kw)

    def Kmin(self, K: int, axis: int = 1, *, dim: int | None = None, **kw: Any) -> Any:  # noqa: N802
        return super().Kmin(K, self._axis(dim, axis), **kw)

    def argKmin(self, K: int, axis: int = 1, *, dim: int | None = None, **kw: Any) -> Any:  # noqa: N802
        return super().argKmin(K, self._axis(dim, axis), **kw)

    def Kmin_argKmin(self, K: int, axis: int = 1, *, dim: int | None = None, **kw: Any) -> Any:  # noqa: N802
        return super().Kmin_argKmin(K, self._axis(dim, axis), **kw)


def _from_array(x: Any, axis: int | None) -> LazyMatrix:
    shape = tuple(x.shape)
    ndim = len(shape)
    if axis is not None and axis not in (0, 1, 2):
        raise ValueError(f"LazyTensor axis must be 0 (i), 1 (j) or 2 (parameter), got {axis}")
    if ndim <= 1:
        return Pm(x)
    if ndim == 2:
        if axis == 0:
            return Vi(x)
        if axis == 1:
            return Vj(x)
        raise ValueError(
            f"LazyTensor of a 2-D array {shape} needs axis=0 (i-indexed) or axis=1 (j-indexed); "
            "or reshape it to (N, 1, D) / (1, M, D)"
        )
    n, m, d = shape[-3:]
    batch = shape[:-3]
    xp = _namespace(x)
    if axis == 0 or (axis is None and m == 1 and n > 1):
        if m != 1:
            raise ValueError(f"an i-indexed LazyTensor has shape (..., N, 1, D), got {shape}")
        return Vi(xp.reshape(x, batch + (n, d)))
    if axis == 1 or (axis is None and n == 1 and m > 1):
        if n != 1:
            raise ValueError(f"a j-indexed LazyTensor has shape (..., 1, M, D), got {shape}")
        return Vj(xp.reshape(x, batch + (m, d)))
    if n == 1 and m == 1:
        return Pm(xp.reshape(x, batch + (d,)))
    raise ValueError(
        f"cannot tell how a LazyTensor of shape {shape} is indexed: expected (..., N, 1, D), "
        "(..., 1, M, D) or (..., 1, 1, D)"
    )


def _namespace(x: Any) -> Any:
    from .plugin_manager import get_registry

    return get_registry().backend_for(x).namespace(x)
