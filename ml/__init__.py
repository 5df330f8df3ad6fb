"""lazymat.ml: machine learning on symbolic matrices (k-NN, K-means, GMM, KDE, spectral, kernel PCA).

Every estimator here is written against the array API + LazyMatrix, like ``lazymat.solvers``:
pairwise quantities (distances, kernels, responsibilities) are formulas reduced on the fly,
never N-by-M arrays. scikit-learn's conventions (``fit``, ``predict``, ``transform``,
``get_params``) make them drop into ``sklearn.pipeline.Pipeline``; scikit-learn (and SciPy)
are dependencies of this subpackage only (``pip install lazymat[ml]``).

Names load on first use (``lazymat.ml.KMeans`` imports ``lazymat.ml.kmeans`` then), so
that a submodule such as ``lazymat.ml.gpytorch`` does not import scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> submodule that defines it
_EXPORTS = {
    "Metric": "metrics",
    "get_metric": "metrics",
    "pairwise_distances": "metrics",
    "knn": "neighbors",
    "kneighbors_graph": "neighbors",
    "NearestNeighbors": "neighbors",
    "KNeighborsClassifier": "neighbors",
    "KMeans": "kmeans",
    "kmeans_plusplus": "kmeans",
    "GaussianMixture": "mixture",
    "KernelDensity": "density",
    "NadarayaWatson": "density",
    "SpectralEmbedding": "spectral",
    "SpectralClustering": "spectral",
    "spectral_embedding": "spectral",
    "KernelPCA": "kernel_pca",
    "poincare_distance": "hyperbolic",
    "lorentz_distance": "hyperbolic",
    "halfspace_distance": "hyperbolic",
    "poincare_to_lorentz": "hyperbolic",
    "lorentz_to_poincare": "hyperbolic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
