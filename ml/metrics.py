"""Metrics as formulas: the distances k-NN, K-means and the kNN graphs accept.

A :class:`Metric` says how to turn points into a symbolic distance matrix:

- ``prepare(xp, x, name)``: checks the points (inside the Poincare ball, non-zero for
  the cosine, ...) and returns the array wrapped by ``Vi`` / ``Vj``, with per-point
  precomputations (unit vectors, conformal factors) done once, not once per pair;
- ``key(x_i, y_j)``: a formula that increases with the distance. Searches (argKmin,
  argmin) run on the key, which is cheaper than the distance: the squared distance for
  the Euclidean metric, the argument z of arcosh(1 + z) for the hyperbolic ones;
- ``to_distance(xp, key)``: the distance from key values, on the few selected entries;
- ``formula(x_i, y_j)``: the distance itself as a formula (kernels of distances);
- ``centroid(xp, mean)``: the point K-means uses as the center of a cluster, given the
  coordinate-wise mean of its points (the identity, or a projection back onto the
  space: the Lorentz model's hyperboloid).

Names: ``"euclidean"``, ``"sqeuclidean"``, ``"manhattan"``, ``"cosine"`` (1 - cos),
``"inner_product"`` (maximum inner-product search: the "distances" are the inner products,
largest first, as FAISS's ``IndexFlatIP`` returns them), ``"poincare"``, ``"lorentz"``,
``"halfspace"`` (hyperbolic, :mod:`lazymat.ml.hyperbolic`). A callable
``metric(x_i, y_j) -> LazyMatrix`` is a user formula, used as both key and distance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lazymat
from lazymat.lazymatrix import LazyMatrix

from .points import as_points

Formula = Callable[[LazyMatrix, LazyMatrix], LazyMatrix]


def _same(xp: Any, x: Any, name: str = "X") -> Any:
    return x


def _unchanged(xp: Any, v: Any) -> Any:
    return v


@dataclass(frozen=True)
class Metric:
    """A distance given by formulas (see the module docstring for each field)."""

    name: str
    key: Formula
    formula: Formula
    to_distance: Callable[[Any, Any], Any] = _unchanged
    prepare: Callable[..., Any] = _same
    centroid: Callable[[Any, Any], Any] = _unchanged
    #: the key is the squared Euclidean distance of the prepared points (grid pruning applies)
    squared_euclidean: bool = False

    def pairwise(self, x: Any, y: Any | None = None) -> LazyMatrix:
        """The symbolic distance matrix between the points ``x`` (rows) and ``y`` (columns)."""
        x, xp, _ = as_points(x, "x")
        px = self.prepare(xp, x, "x")
        py = px if y is None else self.prepare(xp, as_points(y, "y")[0], "y")
        return self.formula(lazymat.Vi(px), lazymat.Vj(py))


def _unit(xp: Any, x: Any, name: str = "X") -> Any:
    norms = xp.sqrt(xp.sum(x * x, axis=1, keepdims=True))
    if not bool(xp.all(norms > 0)):
        raise ValueError(f"the cosine distance is undefined for zero vectors, and {name} has some")
    return x / norms


def _sqrt(xp: Any, v: Any) -> Any:
    return xp.sqrt(v)


def _negated(xp: Any, v: Any) -> Any:
    return -v


def _one_plus(xp: Any, v: Any) -> Any:
    return 1.0 + v


def _manhattan(x: LazyMatrix, y: LazyMatrix) -> LazyMatrix:
    return (x - y).abs().inner_sum()


def _minus_dot(x: LazyMatrix, y: LazyMatrix) -> LazyMatrix:
    return -(x | y)


EUCLIDEAN_METRICS: dict[str, Metric] = {
    "euclidean": Metric(
        "euclidean",
        key=lambda x, y: x.sqdist(y),
        formula=lambda x, y: x.sqdist(y).sqrt(),
        to_distance=_sqrt,
        squared_euclidean=True,
    ),
    "sqeuclidean": Metric(
        "sqeuclidean", key=lambda x, y: x.sqdist(y), formula=lambda x, y: x.sqdist(y), squared_euclidean=True
    ),
    "manhattan": Metric("manhattan", key=_manhattan, formula=_manhattan),
    "cosine": Metric(
        "cosine", key=_minus_dot, formula=lambda x, y: 1.0 - (x | y), to_distance=_one_plus, prepare=_unit
    ),
    "inner_product": Metric(
        "inner_product", key=_minus_dot, formula=lambda x, y: x | y, to_distance=_negated
    ),
}


def get_metric(metric: str | Metric | Formula) -> Metric:
    """The :class:`Metric` named ``metric``, ``metric`` itself, or a user formula (x_i, y_j) -> LazyMatrix."""
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str):
        from .hyperbolic import HYPERBOLIC_METRICS

        table = {**EUCLIDEAN_METRICS, **HYPERBOLIC_METRICS}
        if metric not in table:
            raise ValueError(f"unknown metric {metric!r}: expected one of {sorted(table)} or a formula")
        return table[metric]
    if callable(metric):
        return Metric(getattr(metric, "__name__", "formula"), key=metric, formula=metric)
    raise TypeError(f"metric must be a name, a Metric or a callable (x_i, y_j) -> LazyMatrix, got {metric!r}")


def pairwise_distances(
    x: Any, y: Any | None = None, metric: str | Metric | Formula = "euclidean"
) -> LazyMatrix:
    """The symbolic matrix of distances d(x_i, y_j) (``y`` defaults to ``x``): a LazyMatrix, never stored."""
    return get_metric(metric).pairwise(x, y)
