"""scikit-learn's own estimator checks (``check_estimator``) on every lazymat.ml estimator.

They exercise the conventions that make the estimators usable in pipelines and searches:
get_params/set_params/clone, fit returning self, n_features_in_, NotFittedError, input
validation messages (1-D, empty, NaN, sparse, complex data), pickling, dtypes.
"""

from __future__ import annotations

import pytest
from sklearn.utils.estimator_checks import check_estimator

from lazymat.ml import (
    GaussianMixture,
    KernelDensity,
    KernelPCA,
    KMeans,
    KNeighborsClassifier,
    NadarayaWatson,
    NearestNeighbors,
    SpectralClustering,
    SpectralEmbedding,
)

ESTIMATORS = [
    NearestNeighbors(n_neighbors=2),
    KNeighborsClassifier(3),
    KMeans(3, random_state=0),
    GaussianMixture(2, random_state=0),
    KernelDensity(),
    NadarayaWatson(),
    SpectralEmbedding(random_state=0),
    SpectralClustering(2, random_state=0),
    KernelPCA(2, random_state=0),
]


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_sklearn_check_estimator(estimator):
    failed = [r for r in check_estimator(estimator, on_fail=None) if r["status"] == "failed"]
    assert not failed, [(r["check_name"], str(r["exception"])[:300]) for r in failed]
