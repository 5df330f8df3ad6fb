"""lazymat.ml spectral embedding / clustering and kernel PCA against dense eigh and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import cluster as skc
from sklearn import datasets
from sklearn import decomposition as skd
from sklearn import manifold as skm
from sklearn.metrics.pairwise import laplacian_kernel
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lazymat.ml import KernelPCA, SpectralClustering, SpectralEmbedding, spectral_embedding


def moons(n: int = 300) -> np.ndarray:
    return datasets.make_moons(n, noise=0.05, random_state=0)[0]


def dense_normalized(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """D^{-1/2} W D^{-1/2} with the diagonal of W left out, and the degrees."""
    W = W.copy()
    np.fill_diagonal(W, 0)
    d = W.sum(1)
    return W / np.sqrt(np.outer(d, d)), d


@pytest.mark.parametrize("solver", ["arpack", "lobpcg"])
def test_spectral_eigenvalues_as_dense_eigh(solver):
    x = moons()
    sq = ((x[:, None] - x[None]) ** 2).sum(-1)
    for affinity, W in [
        ("rbf", np.exp(-5.0 * sq)),
        (lambda a, b: 1 / (1 + 5.0 * a.sqdist(b)), 1 / (1 + 5.0 * sq)),
    ]:
        emb, lam = spectral_embedding(x, 4, affinity=affinity, gamma=5.0, eigen_solver=solver, random_state=0)
        A, d = dense_normalized(W)
        mu, vec = np.linalg.eigh(A)
        np.testing.assert_allclose(lam, 1 - mu[::-1][1:5], atol=1e-8)
        dense = vec[:, ::-1][:, 1:5] / np.sqrt(d)[:, None]
        dense *= np.sign(dense[np.abs(dense).argmax(0), np.arange(4)])
        np.testing.assert_allclose(emb, dense, atol=1e-7)


def test_spectral_embedding_as_sklearn():
    x = moons(250)
    ours = SpectralEmbedding(3, gamma=5.0, random_state=0).fit_transform(x)
    ref = skm.SpectralEmbedding(3, affinity="rbf", gamma=5.0, random_state=0).fit_transform(x)
    np.testing.assert_allclose(ours, ref, atol=1e-10)
    x = np.random.default_rng(0).normal(size=(250, 2))  # a connected kNN graph: a unique embedding
    ours = SpectralEmbedding(2, affinity="nearest_neighbors", n_neighbors=12, random_state=0).fit_transform(x)
    ref = skm.SpectralEmbedding(
        2, affinity="nearest_neighbors", n_neighbors=12, random_state=0
    ).fit_transform(x)
    np.testing.assert_allclose(ours, ref, atol=1e-8)


@pytest.mark.parametrize(
    ("affinity", "kw"), [("rbf", {"gamma": 30.0}), ("nearest_neighbors", {"n_neighbors": 10})]
)
def test_spectral_clustering_as_sklearn(affinity, kw):
    x, truth = datasets.make_moons(300, noise=0.05, random_state=1)
    ours = SpectralClustering(2, affinity=affinity, random_state=0, **kw).fit(x)
    ref = skc.SpectralClustering(2, affinity=affinity, random_state=0, **kw).fit(x)
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    assert (ours.labels_ == truth).all() or (ours.labels_ == 1 - truth).all()
    blobs = datasets.make_blobs(400, centers=4, random_state=2)[0]
    labels = SpectralClustering(4, gamma=0.5, random_state=0).fit_predict(blobs)
    np.testing.assert_array_equal(
        labels, skc.SpectralClustering(4, gamma=0.5, random_state=0).fit_predict(blobs)
    )


def test_spectral_bad_input():
    x = moons(100)
    with pytest.raises(ValueError, match="no neighbour of positive affinity"):
        spectral_embedding(x, 2, gamma=1e6)
    with pytest.raises(ValueError, match="n_samples=100: expected 0 < k < 100"):
        spectral_embedding(x, 99)
    with pytest.raises(ValueError, match="eigen_solver"):
        spectral_embedding(x, 2, eigen_solver="amg")
    with pytest.raises(ValueError, match="kernel must be one of"):
        spectral_embedding(x, 2, affinity="gauss")


KPCA_CASES = [
    ("rbf", {"gamma": 0.3}),
    ("poly", {"gamma": 0.1, "degree": 2}),
    ("linear", {}),
    ("cosine", {}),
    ("sigmoid", {"gamma": 0.01}),
]


@pytest.mark.parametrize("solver", ["arpack", "lobpcg"])
@pytest.mark.parametrize(("kernel", "kw"), KPCA_CASES)
def test_kernel_pca_as_sklearn(kernel, kw, solver):
    rng = np.random.default_rng(3)
    x, q = rng.normal(size=(300, 4)), rng.normal(size=(40, 4))
    ours = KernelPCA(4, kernel=kernel, eigen_solver=solver, random_state=0, **kw)
    ref = skd.KernelPCA(4, kernel=kernel, eigen_solver="dense", **kw)
    np.testing.assert_allclose(ours.fit_transform(x), ref.fit_transform(x), atol=1e-9)
    np.testing.assert_allclose(ours.eigenvalues_, ref.eigenvalues_, rtol=1e-10)
    np.testing.assert_allclose(ours.transform(q), ref.transform(q), atol=1e-9)


def test_kernel_pca_laplacian_and_formula_as_precomputed():
    rng = np.random.default_rng(4)
    x, q = rng.normal(size=(200, 3)), rng.normal(size=(30, 3))
    ref = skd.KernelPCA(3, kernel="precomputed", eigen_solver="dense")
    expected = ref.fit_transform(laplacian_kernel(x, gamma=0.4))
    ours = KernelPCA(3, kernel="laplacian", gamma=0.4, random_state=0)
    np.testing.assert_allclose(ours.fit_transform(x), expected, atol=1e-9)
    np.testing.assert_allclose(ours.transform(q), ref.transform(laplacian_kernel(q, x, gamma=0.4)), atol=1e-9)
    cauchy = KernelPCA(3, kernel=lambda a, b: 1 / (1 + a.sqdist(b)), random_state=0)
    sq = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.testing.assert_allclose(cauchy.fit_transform(x), ref.fit_transform(1 / (1 + sq)), atol=1e-9)


def test_kernel_pca_pipeline_torch_and_bad_input():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = rng.normal(size=(150, 3)) * [1, 5, 0.2]
    ours = make_pipeline(StandardScaler(), KernelPCA(2, gamma=0.5, random_state=0)).fit_transform(x)
    ref = make_pipeline(StandardScaler(), skd.KernelPCA(2, kernel="rbf", gamma=0.5)).fit_transform(x)
    np.testing.assert_allclose(ours, ref, atol=1e-9)
    from_torch = KernelPCA(2, gamma=0.5, random_state=0).fit_transform(torch.from_numpy(x))
    assert isinstance(from_torch, np.ndarray)
    np.testing.assert_allclose(
        from_torch, skd.KernelPCA(2, kernel="rbf", gamma=0.5).fit_transform(x), atol=1e-9
    )
    with pytest.raises(ValueError, match="X has 2 features, but KernelPCA is expecting 3"):
        KernelPCA(2).fit(x).transform(x[:, :2])
    with pytest.raises(ValueError, match="not positive semi-definite"):
        KernelPCA(3, kernel=lambda a, b: -(-a.sqdist(b)).exp(), random_state=0).fit(x[:30])
