"""Kernels as formulas: the affinities of spectral methods and the kernels of kernel PCA.

scikit-learn's names and parameters (``sklearn.metrics.pairwise.pairwise_kernels``):

- ``"rbf"``: exp(-gamma |x - y|^2),   ``"laplacian"``: exp(-gamma |x - y|_1),
- ``"linear"``: <x, y>,   ``"poly"``: (gamma <x, y> + coef0)^degree,
- ``"sigmoid"``: tanh(gamma <x, y> + coef0),   ``"cosine"``: <x, y> / (|x| |y|),

with gamma = 1 / D by default, degree 3, coef0 1. A callable ``(x_i, y_j) -> LazyMatrix``
is a user kernel. Each returns a scalar LazyMatrix: nothing of size N^2 is stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lazymat.lazymatrix import LazyMatrix

KERNELS = ("rbf", "laplacian", "linear", "poly", "sigmoid", "cosine")


def kernel_formula(
    kernel: str | Callable[[LazyMatrix, LazyMatrix], LazyMatrix],
    dim: int,
    gamma: float | None = None,
    degree: float = 3,
    coef0: float = 1.0,
) -> Callable[[LazyMatrix, LazyMatrix], LazyMatrix]:
    """The formula ``(x_i, y_j) -> K_ij`` of a named kernel (or ``kernel`` itself if callable)."""
    if callable(kernel):
        return kernel
    g = 1.0 / dim if gamma is None else float(gamma)
    table: dict[str, Callable[[Any, Any], Any]] = {
        "rbf": lambda x, y: (-g * x.sqdist(y)).exp(),
        "laplacian": lambda x, y: (-g * (x - y).abs().inner_sum()).exp(),
        "linear": lambda x, y: x | y,
        "poly": lambda x, y: (g * (x | y) + coef0) ** degree,
        "sigmoid": lambda x, y: (g * (x | y) + coef0).tanh(),
        "cosine": lambda x, y: x.normalize() | y.normalize(),
    }
    if kernel not in table:
        raise ValueError(
            f"kernel must be one of {KERNELS} or a formula (x_i, y_j) -> LazyMatrix, got {kernel!r}"
        )
    return table[kernel]
