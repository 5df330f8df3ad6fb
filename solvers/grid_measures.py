"""Measures given as densities on a Cartesian grid: input checking, coordinates, pyramids.

A grid measure is an array of nonnegative masses ``a`` of shape (n_1, ..., n_D) (or a batch
(B, n_1, ..., n_D)), the mass of the cell whose centre is (s^1_{i_1}, ..., s^D_{i_D}). The
coordinates along each axis come from ``axes``:

- None: the unit cube [0, 1)^D, cell centres (k + 1/2) / n_d (GeomLoss's ``solve_grid``);
- a pair (lo, hi): every axis spans [lo, hi), centres lo + (k + 1/2) (hi - lo) / n_d;
- one entry per axis, each a pair (lo, hi) or an array of n_d coordinates (any increasing
  values: e.g. ``linspace(0, 1, n)``, POT's convention for images).

:func:`check_grid_measures` turns the user's arrays into a :class:`GridMeasures` record,
weights flattened to (B, N) (N = n_1 ... n_D, C order, as the points of the equivalent
point cloud) with the batch axis always present, and raises a clear error for what cannot
be a grid measure: wrong number of dimensions, mismatched grid shapes, negative, NaN or
infinite masses, no mass at all. :func:`coarsen` halves every axis (cells summed in pairs)
for multiscale pyramids.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import array_api_compat

import lazymat

from .measures import _concrete_bool, _describe, check_equal_masses
from .schedule import max_diameter


class GridLayout:
    """Flat arrays (B, ..., N) on a grid back to the user's layout; for records holding
    ``axes`` (D coordinate arrays), ``batched`` and ``xp``."""

    axes: tuple[Any, ...]
    #: False when the user gave unbatched grids (n_1, ..., n_D): results drop the batch axis
    batched: bool
    xp: Any

    @property
    def shape(self) -> tuple[int, ...]:
        """The grid's shape (n_1, ..., n_D)."""
        return tuple(int(t.shape[0]) for t in self.axes)

    def unbatch(self, v: Any) -> Any:
        """``v`` of shape (B, ...) back to the user's layout (drops B=1 when unbatched)."""
        return v if self.batched else v[0, ...]

    def on_grid(self, v: Any) -> Any:
        """A flat (B, ..., N) array as the user's grids: (B, ..., n_1, ..., n_D), B dropped unbatched."""
        return self.unbatch(self.xp.reshape(v, (*v.shape[:-1], *self.shape)))


@dataclass(frozen=True)
class GridMeasures(GridLayout):
    """Weights on one grid, flattened with a batch axis: a, b (B, N); ``axes``: D coordinate arrays."""

    a: Any
    b: Any
    axes: tuple[Any, ...]
    batched: bool
    xp: Any

    def points(self) -> Any:
        """The cell centres, flattened in C order: (N, D), the points of the equivalent cloud."""
        return grid_points(self.xp, self.axes)

    def diameter(self) -> float:
        """The diagonal of the grid's bounding box (0 for a single cell)."""
        return axes_diameter(self.xp, self.axes)

    def spacing(self) -> float | None:
        """The smallest distance between neighbouring cells along an axis (None: one cell per axis)."""
        return axes_spacing(self.xp, self.axes)

    def scale(self) -> float | None:
        """The largest distance between neighbouring cells along an axis: the pyramid level's cell size."""
        gaps = [float(self.xp.max(t[1:] - t[:-1])) for t in self.axes if t.shape[0] > 1]
        return max(gaps) if gaps else None


def axes_diameter(xp: Any, axes: Sequence[Any]) -> float:
    """The diagonal of the bounding box of the grid ``axes`` (0 for a single cell)."""
    corners = xp.stack([xp.stack([xp.min(t), xp.max(t)]) for t in axes], axis=1)
    return max_diameter(xp, corners, corners)


def axes_spacing(xp: Any, axes: Sequence[Any]) -> float | None:
    """The smallest distance between neighbouring cells along an axis (None: one cell per axis)."""
    gaps = [float(xp.min(t[1:] - t[:-1])) for t in axes if t.shape[0] > 1]
    return min(gaps) if gaps else None


def grid_points(xp: Any, axes: Sequence[Any]) -> Any:
    """The points of the grid ``axes`` (D arrays), flattened in C order: (N, D)."""
    mesh = xp.meshgrid(*axes, indexing="ij")
    return xp.stack([xp.reshape(c, (-1,)) for c in mesh], axis=1)


def is_interval(v: Any) -> bool:
    """Whether ``v`` is a pair (lo, hi) of numbers (an axis given by its bounds)."""
    return (
        isinstance(v, (tuple, list))
        and len(v) == 2
        and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in v)
    )


def grid_axes(axes: Any, shape: tuple[int, ...], like: Any) -> tuple[Any, ...]:
    """The coordinate arrays of a grid of ``shape`` for the user's ``axes`` (see the module docstring)."""
    xp = array_api_compat.array_namespace(like)
    device, dtype = array_api_compat.device(like), like.dtype
    dims = len(shape)
    if axes is None or is_interval(axes):
        entries: list[Any] = [axes or (0.0, 1.0)] * dims
    elif isinstance(axes, (tuple, list)) and len(axes) == dims:
        entries = list(axes)
    else:
        raise ValueError(
            f"axes must be None, a pair (lo, hi), or {dims} entries (one per grid axis), each a pair "
            f"(lo, hi) or an array of coordinates; got {axes!r}"
        )
    out = []
    for d, (n, entry) in enumerate(zip(shape, entries, strict=True)):
        if is_interval(entry):
            lo, hi = (float(c) for c in entry)
            if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
                raise ValueError(f"axes[{d}] = {entry!r}: expected finite bounds lo < hi")
            k = xp.arange(n, dtype=dtype, device=device)
            out.append(lo + (hi - lo) * (k + 0.5) / n)
            continue
        if not hasattr(entry, "shape"):
            raise TypeError(f"axes[{d}] must be a pair (lo, hi) or an array of coordinates, got {entry!r}")
        t = xp.asarray(lazymat.backend_for(entry).to_numpy(entry), dtype=dtype, device=device)
        if tuple(t.shape) != (n,):
            raise ValueError(
                f"axes[{d}] must hold the grid's {n} coordinates along axis {d}, got shape {tuple(t.shape)}"
            )
        if _concrete_bool(xp.any(~xp.isfinite(t))):
            raise ValueError(f"axes[{d}] holds NaN or infinite coordinates")
        if n > 1 and _concrete_bool(xp.any(t[1:] <= t[:-1])):
            raise ValueError(f"axes[{d}] must be increasing coordinates")
        out.append(t)
    return tuple(out)


def check_grid_shape(name: str, v: Any, dims: int | None, stacked: bool = False) -> int:
    """The grid dimension D of ``v``: (n_1, ..., n_D) or a batch (B, n_1, ..., n_D).

    ``stacked``: K densities per batch, (K, n_1, ..., n_D) or (B, K, n_1, ..., n_D).
    ``dims`` None: unbatched, D = v.ndim (minus one when stacked).
    """
    if not hasattr(v, "shape") or not hasattr(v, "dtype"):
        raise TypeError(f"'{name}' must be an array of masses on a grid, got {type(v)}")
    nd = len(v.shape) - int(stacked)
    if dims is None:
        dims = nd
    if not isinstance(dims, int) or isinstance(dims, bool) or dims < 1:
        raise ValueError(f"dim (the grid's dimension) must be a positive integer, got {dims!r}")
    if nd not in (dims, dims + 1):
        cells = ", ".join(f"n_{d + 1}" for d in range(dims)) if dims <= 3 else f"n_1, ..., n_{dims}"
        one, lead = ("K, ", "B, K") if stacked else ("", "B")
        raise ValueError(
            f"'{name}' must have shape ({one}{cells}) or ({lead}, {cells}) for a grid of dimension {dims}, "
            f"got {_describe(v)}"
        )
    if any(s == 0 for s in v.shape):
        raise ValueError(f"'{name}' is an empty grid ({_describe(v)})")
    return dims


def check_densities(name: str, v: Any, xp: Any) -> None:
    """Raise unless ``v`` holds real, finite, nonnegative masses with some mass in every batch."""
    if not xp.isdtype(v.dtype, "real floating"):
        raise TypeError(f"'{name}' must hold real floating-point masses, got dtype {v.dtype}")
    if _concrete_bool(xp.any(~xp.isfinite(v))):
        raise ValueError(f"'{name}' holds NaN or infinite masses")
    if _concrete_bool(xp.any(v < 0)):
        raise ValueError(f"'{name}' must be nonnegative, got a minimum of {float(xp.min(v))}")
    flat = xp.reshape(v, (v.shape[0], -1))
    if _concrete_bool(xp.any(xp.sum(flat, axis=-1) <= 0)):
        raise ValueError(f"'{name}' has no mass (all zeros): a measure needs some positive mass")


def check_grid_measures(
    a: Any, b: Any, *, dim: int | None = None, axes: Any = None, balanced: bool = False
) -> GridMeasures:
    """Check and flatten two measures on one grid (see the module docstring).

    ``dim``: the grid's dimension D (default: ``len(axes)`` if axes lists the axes, else
    a.ndim, i.e. unbatched). With ``balanced=True`` the total masses must agree per batch.
    """
    if dim is None and isinstance(axes, (tuple, list)) and not is_interval(axes):
        dim = len(axes)
    dims = check_grid_shape("a", a, dim)
    check_grid_shape("b", b, dims)
    if lazymat.backend_for(a).name != lazymat.backend_for(b).name:
        raise TypeError(f"a and b come from different array libraries: {_describe(a)} and {_describe(b)}")
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(
            f"a and b must be masses on the same grid (same shape), got {_describe(a)} and {_describe(b)}"
        )
    xp = array_api_compat.array_namespace(a, b)
    if a.dtype != b.dtype:
        raise TypeError(f"a and b have different dtypes ({a.dtype} and {b.dtype}); cast them to one dtype")
    batched = len(a.shape) == dims + 1
    shape = tuple(int(s) for s in a.shape[len(a.shape) - dims :])
    flat_a, flat_b = (xp.reshape(v, (-1, math.prod(shape))) for v in (a, b))
    for name, v in (("a", flat_a), ("b", flat_b)):
        check_densities(name, v, xp)
    if balanced:
        check_equal_masses(xp, flat_a, flat_b)
    return GridMeasures(flat_a, flat_b, grid_axes(axes, shape, a), batched, xp)


def coarsen_axis(xp: Any, t: Any) -> Any:
    """Coordinates of the cells merged in pairs: pair means (an odd last cell keeps its own)."""
    if t.shape[0] % 2:
        t = xp.concat((t, t[-1:]))
    return xp.mean(xp.reshape(t, (-1, 2)), axis=1)


def coarsen_masses(xp: Any, w: Any, shape: tuple[int, ...]) -> tuple[Any, tuple[int, ...]]:
    """Flat masses (B, N) on ``shape``, summed over pairs of cells along every axis."""
    v = xp.reshape(w, (w.shape[0], *shape))
    for d, n in enumerate(shape):
        axis = d + 1
        if n % 2:  # a zero cell after the last one
            pad = list(v.shape)
            pad[axis] = 1
            v = xp.concat(
                (v, xp.zeros(tuple(pad), dtype=v.dtype, device=array_api_compat.device(v))), axis=axis
            )
        split = (*v.shape[:axis], (n + 1) // 2, 2, *v.shape[axis + 1 :])
        v = xp.sum(xp.reshape(v, split), axis=axis + 1)
    coarse = tuple((n + 1) // 2 for n in shape)
    return xp.reshape(v, (w.shape[0], -1)), coarse


def coarsen(m: GridMeasures) -> GridMeasures:
    """The next level of a pyramid: every axis halved, masses summed over pairs of cells."""
    xp = m.xp
    a, _ = coarsen_masses(xp, m.a, m.shape)
    b, _ = coarsen_masses(xp, m.b, m.shape)
    return GridMeasures(a, b, tuple(coarsen_axis(xp, t) for t in m.axes), m.batched, xp)
