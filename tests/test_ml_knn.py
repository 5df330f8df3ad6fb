"""lazymat.ml k-NN against FAISS's and scikit-learn's brute force and dense float64 numpy.

Ties: integer-valued points make exact ties, in float32 too. FAISS's flat indexes and the
dense reference (a lexicographic sort by distance, then index) break them by lower index;
scikit-learn's brute force does not (argpartition), so against scikit-learn indices are
compared on random data (no ties) and distances on tie data.
"""

from __future__ import annotations

import faiss
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn import neighbors as skn
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import lazymat
from lazymat.ml import KNeighborsClassifier, NearestNeighbors, kneighbors_graph, knn
from lazymat.ml.neighbors_grid import grid_kmin


def dense_knn(x: np.ndarray, y: np.ndarray, k: int, dist: np.ndarray | None = None) -> tuple:
    """The k nearest by a lexicographic sort on (float64 distance, index)."""
    if dist is None:
        dist = ((x[:, None, :].astype(np.float64) - y[None, :, :]) ** 2).sum(-1)
    index = np.broadcast_to(np.arange(y.shape[0]), dist.shape)
    order = np.lexsort((index, dist), axis=1)[:, :k]
    return np.take_along_axis(dist, order, 1), order


def tie_points(n: int, d: int, span: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, span, (n, d)).astype(np.float32)


@pytest.mark.parametrize("method", ["brute", "grid"])
@pytest.mark.parametrize(("d", "span"), [(2, 5), (3, 4)])
def test_ties_by_lower_index_as_faiss(method, d, span):
    x = tie_points(400, d, span)
    q = tie_points(150, d, span, seed=1)
    index = faiss.IndexFlatL2(d)
    index.add(x)
    fd, fi = index.search(q, 9)
    dist, idx = knn(q, x, k=9, metric="sqeuclidean", method=method)
    np.testing.assert_array_equal(idx, fi)
    np.testing.assert_array_equal(dist, fd)
    np.testing.assert_array_equal(idx, dense_knn(q, x, 9)[1])


def test_ties_at_d50_as_faiss_flat_l2():
    x = tie_points(300, 50, 3)
    q = tie_points(40, 50, 3, seed=2)
    l2 = faiss.IndexFlatL2(50)
    l2.add(x)
    np.testing.assert_array_equal(knn(q, x, k=10, metric="sqeuclidean")[1], l2.search(q, 10)[1])


def test_inner_product_as_faiss_flat_ip():
    """FAISS's IndexFlatIP breaks ties by higher index: random data (no ties), and dense on ties."""
    rng = np.random.default_rng(2)
    x, q = rng.standard_normal((300, 50)).astype(np.float32), rng.standard_normal((40, 50)).astype(np.float32)
    ip = faiss.IndexFlatIP(50)
    ip.add(x)
    sims, idx = knn(q, x, k=10, metric="inner_product")
    fs, fi = ip.search(q, 10)
    np.testing.assert_array_equal(idx, fi)
    np.testing.assert_allclose(sims, fs, rtol=1e-5)
    x, q = tie_points(300, 20, 3), tie_points(40, 20, 3, seed=3)
    sims, idx = knn(q, x, k=10, metric="inner_product")
    ref_s, ref_i = dense_knn(q, x, 10, dist=-(q.astype(np.float64) @ x.T.astype(np.float64)))
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_array_equal(sims, -ref_s)


@pytest.mark.parametrize("d", [3, 50])
def test_random_points_as_sklearn_brute(d):
    rng = np.random.default_rng(d)
    x, q = rng.standard_normal((700, d)), rng.standard_normal((90, d))
    ref_d, ref_i = skn.NearestNeighbors(n_neighbors=10, algorithm="brute").fit(x).kneighbors(q)
    methods = ["brute", "grid"] if d <= 3 else ["brute"]
    for method in methods:
        dist, idx = knn(q, x, k=10, method=method)
        np.testing.assert_array_equal(idx, ref_i)
        np.testing.assert_allclose(dist, ref_d, rtol=1e-12, atol=1e-12)


def test_self_exclusion_as_sklearn():
    x = np.random.default_rng(3).random((500, 3))
    ref_d, ref_i = skn.NearestNeighbors(n_neighbors=6).fit(x).kneighbors()
    for method in ("brute", "grid"):
        dist, idx = knn(x, k=6, method=method)
        np.testing.assert_array_equal(idx, ref_i)
        np.testing.assert_allclose(dist, ref_d, rtol=1e-12, atol=1e-12)


def test_self_exclusion_with_duplicates():
    """Five copies of one point: a copy hidden by k + 1 copies of lower index drops the first column."""
    rng = np.random.default_rng(4)
    x = np.concatenate([np.zeros((5, 2)), rng.random((40, 2)) + 1.0])
    dist, idx = knn(x, k=3)
    _, order = dense_knn(x, x, 4)
    for i in range(x.shape[0]):  # scikit-learn's documented rule, on the dense order
        expected = [j for j in order[i] if j != i][:3] if i in order[i] else list(order[i][1:])
        assert idx[i].tolist() == expected, i
    assert idx[4].tolist() == [1, 2, 3]  # copy 4 is not among the 4 first copies: column 0 (copy 0) goes
    sk_d = skn.NearestNeighbors(n_neighbors=3).fit(x).kneighbors()[0]
    np.testing.assert_allclose(dist, sk_d, atol=1e-12)


@pytest.mark.parametrize(
    ("metric", "sk_metric", "kw"),
    [("manhattan", "manhattan", {}), ("cosine", "cosine", {}), ("euclidean", "euclidean", {})],
)
def test_metrics_as_sklearn(metric, sk_metric, kw):
    rng = np.random.default_rng(5)
    x, q = rng.standard_normal((400, 7)), rng.standard_normal((60, 7))
    ref_d, ref_i = (
        skn.NearestNeighbors(n_neighbors=8, metric=sk_metric, algorithm="brute").fit(x).kneighbors(q)
    )
    dist, idx = knn(q, x, k=8, metric=metric)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(dist, ref_d, rtol=1e-10, atol=1e-12)


def test_user_formula_as_minkowski_p3():
    rng = np.random.default_rng(6)
    x, q = rng.standard_normal((300, 4)), rng.standard_normal((50, 4))
    ref_d, ref_i = skn.NearestNeighbors(n_neighbors=5, metric="minkowski", p=3).fit(x).kneighbors(q)
    dist, idx = knn(q, x, k=5, metric=lambda a, b: ((a - b).abs() ** 3).inner_sum())
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(dist ** (1 / 3), ref_d, rtol=1e-10)


@pytest.mark.parametrize("voxel", [0.03, 0.12, 0.5, 3.0])
def test_grid_voxels_and_clustered_data(voxel):
    """Clusters far apart, an outlier, queries outside the data: every cube radius and fallback."""
    rng = np.random.default_rng(7)
    x = np.concatenate(
        [rng.normal(0, 0.05, (300, 3)), rng.normal(2, 0.2, (200, 3)), [[5.0, -3.0, 1.0]], rng.random((20, 3))]
    )
    q = np.concatenate([rng.normal(1, 1.0, (120, 3)), x[:30]])
    backend = lazymat.backend_for(x)
    dist, idx = grid_kmin(q, x, 12, backend, voxel=voxel)
    ref_d, ref_i = dense_knn(q, x, 12)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(dist, ref_d, rtol=1e-12, atol=1e-14)


def test_grid_float32_and_tie_rows_recomputed():
    rng = np.random.default_rng(8)
    x = rng.random((3000, 3)).astype(np.float32)
    x[1000:1100] = x[5]  # 101 copies: the 10th and 11th distances tie for their rows
    dist, idx = knn(x, x, k=10, metric="sqeuclidean", method="grid")
    index = faiss.IndexFlatL2(3)
    index.add(x)
    fi = index.search(x, 10)[1]
    ref_d, ref_i = dense_knn(x, x, 10)
    np.testing.assert_array_equal(idx[1000:1100], ref_i[1000:1100])  # ties: lower indices
    np.testing.assert_array_equal(idx[1000:1100], fi[1000:1100])
    np.testing.assert_allclose(dist, ref_d, rtol=1e-5, atol=1e-6)
    agree = (idx == ref_i).all(axis=1)  # float32 rounding may swap near-ties elsewhere
    assert agree.mean() > 0.99


@pytest.mark.parametrize("lib", ["torch", "jax"])
def test_backends_brute_and_grid(lib):
    x = tie_points(500, 3, 5)
    q = tie_points(80, 3, 5, seed=9)
    ref_d, ref_i = dense_knn(q, x, 7)
    if lib == "torch":
        torch = pytest.importorskip("torch")
        xb, qb = torch.from_numpy(x), torch.from_numpy(q)
    else:
        jnp = pytest.importorskip("jax.numpy")
        xb, qb = jnp.asarray(x), jnp.asarray(q)
    for method in ("brute", "grid"):
        dist, idx = knn(qb, xb, k=7, metric="sqeuclidean", method=method)
        assert lazymat.backend_for(idx).name == lib and lazymat.backend_for(dist).name == lib
        np.testing.assert_array_equal(np.asarray(idx), ref_i)
        np.testing.assert_array_equal(np.asarray(dist), ref_d)


def test_kneighbors_graph_as_sklearn():
    x = np.random.default_rng(10).random((200, 2))
    for mode in ("connectivity", "distance"):
        ours = kneighbors_graph(x, 5, mode=mode)
        ref = skn.kneighbors_graph(x, 5, mode=mode)
        assert sp.issparse(ours) and ours.shape == (200, 200)
        assert abs(ours - ref).max() < 1e-12
        sym = kneighbors_graph(x, 5, mode=mode, symmetric=True)
        assert abs(sym - ref.maximum(ref.T)).max() < 1e-12
        assert abs(sym - sym.T).max() == 0
    inc = kneighbors_graph(x, 5, include_self=True)
    assert abs(inc - skn.kneighbors_graph(x, 5, include_self=True)).max() == 0


def test_estimators_and_pipeline():
    rng = np.random.default_rng(11)
    x = np.concatenate([rng.normal(0, 1, (150, 4)), rng.normal(2.5, 1, (150, 4))])
    labels = np.array(["a"] * 150 + ["b"] * 150)
    q = rng.normal(1.2, 1.5, (80, 4))
    for weights in ("uniform", "distance"):
        ours = KNeighborsClassifier(7, weights=weights).fit(x, labels)
        ref = skn.KNeighborsClassifier(7, weights=weights, algorithm="brute").fit(x, labels)
        np.testing.assert_allclose(ours.predict_proba(q), ref.predict_proba(q), atol=1e-12)
        np.testing.assert_array_equal(ours.predict(q), ref.predict(q))
    pipe = make_pipeline(StandardScaler(), KNeighborsClassifier(3)).fit(x, labels)
    ref_pipe = make_pipeline(StandardScaler(), skn.KNeighborsClassifier(3)).fit(x, labels)
    np.testing.assert_array_equal(pipe.predict(q), ref_pipe.predict(q))
    nn = NearestNeighbors(n_neighbors=4).fit(x)
    assert nn.get_params()["n_neighbors"] == 4 and nn.set_params(n_neighbors=2).n_neighbors == 2
    np.testing.assert_array_equal(
        nn.kneighbors(q)[1], skn.NearestNeighbors(n_neighbors=2).fit(x).kneighbors(q)[1]
    )
    graph = nn.kneighbors_graph(mode="distance")
    assert (
        abs(graph - skn.NearestNeighbors(n_neighbors=2).fit(x).kneighbors_graph(mode="distance")).max()
        < 1e-12
    )


def test_bad_input():
    x = np.random.default_rng(12).random((10, 3))
    with pytest.raises(ValueError, match="only 10 points"):
        knn(x[:3], x, k=11)
    with pytest.raises(ValueError, match="k must be < N"):
        knn(x, k=10)
    with pytest.raises(ValueError, match="positive integer"):
        knn(x, k=0)
    bad = x.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"non-finite.*point 4"):
        knn(bad, k=2)
    with pytest.raises(ValueError, match=r"shape \(N, D\)"):
        knn(x[:, 0], k=2)
    with pytest.raises(ValueError, match="needs a Euclidean metric"):
        knn(x, k=2, metric="cosine", method="grid")
    with pytest.raises(ValueError, match="zero vectors"):
        knn(np.zeros((4, 2)), k=1, metric="cosine")
    with pytest.raises(ValueError, match="unknown metric"):
        knn(x, k=1, metric="chebyshev")
    with pytest.raises(TypeError, match="dtype"):
        knn(x, x.astype(np.float32), k=1)
    with pytest.raises(AttributeError, match="not fitted"):
        NearestNeighbors().kneighbors(x)
