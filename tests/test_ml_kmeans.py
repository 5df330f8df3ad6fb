"""lazymat.ml K-means against scikit-learn's Lloyd (same initial centers) and dense numpy loops."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import cluster as skc
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import lazymat
from lazymat.ml import KMeans, kmeans_plusplus
from lazymat.ml.kmeans import cluster_sums


def blobs(n: int, d: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (k, d))
    return np.concatenate([rng.normal(c, 0.7, (n // k, d)) for c in centers])


def sklearn_lloyd(x: np.ndarray, init: np.ndarray, **kw) -> skc.KMeans:
    return skc.KMeans(init.shape[0], init=init, n_init=1, algorithm="lloyd", **kw).fit(x)


@pytest.mark.parametrize(("d", "k"), [(3, 8), (20, 5)])
def test_lloyd_as_sklearn_from_the_same_centers(d, k):
    x = blobs(2400, d, k, seed=d)
    init = x[np.random.default_rng(1).choice(len(x), k, replace=False)]
    ref = sklearn_lloyd(x, init, max_iter=100)
    ours = KMeans(k, init=init, max_iter=100).fit(x)
    assert abs(ours.inertia_ - ref.inertia_) <= 1e-6 * ref.inertia_
    assert ours.n_iter_ == ref.n_iter_
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, atol=1e-10)
    q = np.random.default_rng(2).normal(0, 3, (50, d))
    np.testing.assert_array_equal(ours.predict(q), ref.predict(q))
    np.testing.assert_allclose(ours.transform(q), ref.transform(q) ** 2, rtol=1e-10)
    assert abs(ours.score(q) - ref.score(q)) <= 1e-9 * abs(ref.score(q))


@pytest.mark.parametrize("max_iter", [1, 2, 10])
def test_empty_cluster_recovery_as_sklearn(max_iter):
    """A center far from every point gets no point: the farthest point takes its place."""
    x = blobs(900, 2, 3, seed=3)
    init = np.concatenate([x[[0, 400, 800]], [[50.0, 50.0]]])
    ref = sklearn_lloyd(x, init, max_iter=max_iter)
    ours = KMeans(4, init=init, max_iter=max_iter).fit(x)
    assert abs(ours.inertia_ - ref.inertia_) <= 1e-6 * ref.inertia_
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, atol=1e-10)


def test_two_empty_clusters_take_the_two_farthest_points():
    x = blobs(600, 2, 3, seed=4)
    init = np.concatenate([x[[0, 200, 400]], [[80.0, 0.0], [0.0, 80.0]]])
    ours = KMeans(5, init=init, max_iter=1).fit(x)
    d2 = ((x[:, None] - init[None, :3]) ** 2).sum(-1)  # every point is nearer one of the first three
    labels = d2.argmin(1)
    far = np.argsort(-d2.min(1), kind="stable")[:2]
    stay = ~np.isin(np.arange(len(x)), far)  # the moved points leave their clusters
    expected = [x[(labels == c) & stay].mean(0) for c in range(3)] + [x[far[0]], x[far[1]]]
    np.testing.assert_allclose(ours.cluster_centers_, expected, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kmeans_plusplus_as_sklearn(seed):
    x = blobs(1200, 3, 6, seed=seed)
    centers, idx = kmeans_plusplus(x, 6, random_state=seed)
    ref_centers, ref_idx = skc.kmeans_plusplus(x, 6, random_state=seed)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(centers, ref_centers)


def test_pipeline_and_params():
    x = blobs(1500, 4, 5, seed=5) * np.array([1, 10, 0.1, 3])
    ours = make_pipeline(StandardScaler(), KMeans(5, random_state=0, n_init=3)).fit(x)
    ref = make_pipeline(StandardScaler(), skc.KMeans(5, random_state=0, n_init=3)).fit(x)
    np.testing.assert_array_equal(ours.predict(x), ref.predict(x))
    assert abs(ours[-1].inertia_ - ref[-1].inertia_) <= 1e-6 * ref[-1].inertia_
    est = KMeans(3)
    assert est.set_params(n_clusters=4).get_params()["n_clusters"] == 4


@pytest.mark.parametrize("lib", ["torch", "jax"])
def test_backends_as_sklearn(lib):
    x = blobs(1000, 3, 4, seed=6)
    init = x[[0, 300, 600, 900]]
    ref = sklearn_lloyd(x, init, max_iter=50)
    if lib == "torch":
        torch = pytest.importorskip("torch")
        xb, ib = torch.from_numpy(x), torch.from_numpy(init)
    else:
        jax = pytest.importorskip("jax")
        jax.config.update("jax_enable_x64", True)
        xb, ib = jax.numpy.asarray(x), jax.numpy.asarray(init)
    ours = KMeans(4, init=ib, max_iter=50).fit(xb)
    assert lazymat.backend_for(ours.cluster_centers_).name == lib
    assert lazymat.backend_for(ours.labels_).name == lib
    assert abs(ours.inertia_ - ref.inertia_) <= 1e-6 * ref.inertia_
    np.testing.assert_array_equal(np.asarray(ours.labels_), ref.labels_)


def dense_lloyd(x: np.ndarray, c: np.ndarray, dist, iters: int, project=None) -> tuple:
    """Lloyd with a dense distance function (no empty clusters in these data)."""
    for _ in range(iters):
        labels = dist(x, c).argmin(1)
        c = np.array([x[labels == j].mean(0) for j in range(len(c))])
        c = c if project is None else project(c)
    return c, dist(x, c).argmin(1)


def test_manhattan_and_lorentz_as_dense_loops():
    x = blobs(800, 3, 4, seed=7)
    init = x[[0, 200, 400, 600]]

    def l1(a, b):
        return np.abs(a[:, None] - b[None]).sum(-1)

    ours = KMeans(4, init=init, metric="manhattan", max_iter=6, tol=0).fit(x)
    c, labels = dense_lloyd(x, init, l1, 6)
    np.testing.assert_allclose(ours.cluster_centers_, c, atol=1e-12)
    np.testing.assert_array_equal(ours.labels_, labels)
    assert abs(ours.inertia_ - l1(x, c).min(1).sum()) < 1e-9

    from lazymat.ml import poincare_to_lorentz

    ball = x / (1 + np.linalg.norm(x, axis=1, keepdims=True))
    lx = poincare_to_lorentz(ball)

    def lorentz(a, b):
        inner = a[:, None, 0] * b[None, :, 0] - a[:, 1:] @ b[:, 1:].T
        return np.arccosh(np.maximum(inner, 1))

    def onto(c):
        return c / np.sqrt(c[:, :1] ** 2 - (c[:, 1:] ** 2).sum(1, keepdims=True))

    ours = KMeans(4, init=lx[[0, 200, 400, 600]], metric="lorentz", max_iter=5, tol=0).fit(lx)
    c, labels = dense_lloyd(lx, lx[[0, 200, 400, 600]], lorentz, 5, onto)
    np.testing.assert_allclose(ours.cluster_centers_, c, atol=1e-10)
    np.testing.assert_array_equal(ours.labels_, labels)
    np.testing.assert_allclose(
        -(ours.cluster_centers_[:, 0] ** 2) + (ours.cluster_centers_[:, 1:] ** 2).sum(1), -1
    )


def test_cluster_sums_against_bincount():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((5000, 3)).astype(np.float32)
    labels = rng.integers(0, 40, 5000)
    labels[labels == 7] = 8  # cluster 7 empty
    sums, counts = cluster_sums(x, labels, 41)
    ref = np.stack([np.bincount(labels, x[:, d].astype(np.float64), minlength=41) for d in range(3)], 1)
    np.testing.assert_array_equal(counts, np.bincount(labels, minlength=41))
    np.testing.assert_allclose(sums, ref, rtol=1e-5, atol=1e-4)
    assert sums[7].tolist() == [0, 0, 0] and sums[40].tolist() == [0, 0, 0]


def test_bad_input():
    x = blobs(30, 2, 3, seed=9)
    with pytest.raises(ValueError, match="n_clusters=31 clusters but only 30 points"):
        KMeans(31).fit(x)
    with pytest.raises(ValueError, match="positive integer"):
        KMeans(0).fit(x)
    bad = x.copy()
    bad[3, 0] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        KMeans(2).fit(bad)
    with pytest.raises(ValueError, match="init has 2 centers but n_clusters=3"):
        KMeans(3, init=x[:2]).fit(x)
    with pytest.raises(ValueError, match="init must be"):
        KMeans(3, init="kmeans").fit(x)
    with pytest.raises(ValueError, match="X has 3 features, but KMeans is expecting 2"):
        KMeans(2).fit(x).predict(np.zeros((4, 3)))
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        KMeans(2).predict(x)
