"""lazymat.ml KernelDensity against scikit-learn's KernelDensity; Nadaraya-Watson against dense numpy."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import neighbors as skn
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import lazymat
from lazymat.ml import KernelDensity, NadarayaWatson

KERNELS = ["gaussian", "tophat", "epanechnikov", "exponential", "linear", "cosine"]


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("kernel", KERNELS)
def test_kde_as_sklearn(kernel, d):
    rng = np.random.default_rng(d)
    x, q, w = rng.normal(size=(300, d)), rng.normal(size=(60, d)) * 1.5, rng.random(300)
    ours = KernelDensity(bandwidth=0.7, kernel=kernel).fit(x, sample_weight=w).score_samples(q)
    ref = skn.KernelDensity(bandwidth=0.7, kernel=kernel).fit(x, sample_weight=w).score_samples(q)
    dist = np.sqrt(((q[:, None] - x[None]) ** 2).sum(-1)).min(1)
    outside = dist >= 0.7  # every point beyond the support: the exact density is 0
    if kernel in ("gaussian", "exponential"):
        outside[:] = False
    if kernel == "cosine" and d == 2:
        # scikit-learn's normalisation of the cosine kernel is off in 2-D: its density integrates
        # to 0.3634 (ours to 1, test_kde_integrates_to_one); up to that constant, the values agree
        offset = np.mean(ref[~outside] - ours[~outside])
        assert abs(offset - np.log(0.36338)) < 1e-4
        ref = ref - offset
    assert np.all(np.isneginf(ours[outside]))  # scikit-learn's tree leaves a rounding residue there
    np.testing.assert_allclose(ours[~outside], ref[~outside], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    ("kernel", "tol"),
    [
        ("gaussian", 1e-12),
        ("exponential", 1e-5),
        ("tophat", 3e-4),
        ("epanechnikov", 1e-6),
        ("linear", 1e-6),
        ("cosine", 1e-6),
    ],
)
def test_kde_integrates_to_one(kernel, tol):
    """A grid integral of the density of one point, in 2-D (the kernel's normalisation)."""
    half = 12 if kernel in ("gaussian", "exponential") else 0.6
    g = np.linspace(-half, half, 1201)
    grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    kde = KernelDensity(bandwidth=0.5, kernel=kernel).fit(np.zeros((1, 2)))
    total = np.exp(kde.score_samples(grid)).sum() * (g[1] - g[0]) ** 2
    assert abs(total - 1) < tol


def test_kde_bandwidth_rules_search_and_far_points():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(200, 2))
    for rule in ("scott", "silverman"):
        ours = KernelDensity(bandwidth=rule).fit(x)
        ref = skn.KernelDensity(bandwidth=rule).fit(x)
        assert abs(ours.bandwidth_ - ref.bandwidth_) < 1e-14
        np.testing.assert_allclose(ours.score_samples(x[:20]), ref.score_samples(x[:20]), rtol=1e-10)
    search = GridSearchCV(KernelDensity(), {"bandwidth": [0.1, 0.3, 1.0]}, cv=3).fit(x)
    ref = GridSearchCV(skn.KernelDensity(), {"bandwidth": [0.1, 0.3, 1.0]}, cv=3).fit(x)
    assert search.best_params_ == ref.best_params_
    far = np.array([[40.0, 0.0]])  # exp underflows: the log-sum-exp keeps the log density
    value = KernelDensity(bandwidth=0.5).fit(x).score_samples(far)[0]
    exact = -((far - x) ** 2).sum(1) / 0.5  # -|x - y|^2 / (2 h^2)
    expected = exact.max() + np.log(np.exp(exact - exact.max()).sum() / 200) - np.log(2 * np.pi * 0.25)
    assert np.isfinite(value) and abs(value - expected) < 1e-9 * abs(expected)


def dense_nw(x: np.ndarray, y: np.ndarray, q: np.ndarray, h: float, kernel: str) -> np.ndarray:
    d2 = ((q[:, None] - x[None]) ** 2).sum(-1) / h**2
    logk = -0.5 * d2 if kernel == "gaussian" else -np.sqrt(d2)
    k = np.exp(logk - logk.max(1, keepdims=True))
    return (k @ y) / k.sum(1, keepdims=True)


@pytest.mark.parametrize("kernel", ["gaussian", "exponential"])
def test_nadaraya_watson_as_dense(kernel):
    rng = np.random.default_rng(5)
    x = rng.random((400, 2))
    y = np.stack([np.sin(4 * x[:, 0]), x[:, 1] ** 2], 1)
    q = np.concatenate([rng.random((50, 2)), [[30.0, 30.0]]])  # far away: the nearest point's value
    ours = NadarayaWatson(bandwidth=0.1, kernel=kernel).fit(x, y)
    np.testing.assert_allclose(ours.predict(q), dense_nw(x, y, q, 0.1, kernel), rtol=1e-9, atol=1e-12)
    single = NadarayaWatson(bandwidth=0.1, kernel=kernel).fit(x, y[:, 0]).predict(q)
    assert single.shape == (51,)
    np.testing.assert_allclose(single, dense_nw(x, y[:, :1], q, 0.1, kernel)[:, 0], rtol=1e-9, atol=1e-12)
    pipe = make_pipeline(StandardScaler(), NadarayaWatson(bandwidth=0.3)).fit(x, y[:, 0])
    assert pipe.score(x, y[:, 0]) > 0.8


@pytest.mark.parametrize("lib", ["torch", "jax"])
def test_backends(lib):
    rng = np.random.default_rng(6)
    x, q = rng.normal(size=(200, 3)), rng.normal(size=(30, 3))
    y = x[:, 0] * 2
    ref = skn.KernelDensity(bandwidth=0.5).fit(x).score_samples(q)
    if lib == "torch":
        torch = pytest.importorskip("torch")
        xb, qb, yb = torch.from_numpy(x), torch.from_numpy(q), torch.from_numpy(y)
    else:
        jax = pytest.importorskip("jax")
        jax.config.update("jax_enable_x64", True)
        xb, qb, yb = jax.numpy.asarray(x), jax.numpy.asarray(q), jax.numpy.asarray(y)
    ours = KernelDensity(bandwidth=0.5).fit(xb).score_samples(qb)
    assert lazymat.backend_for(ours).name == lib
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-10)
    pred = NadarayaWatson(bandwidth=0.5).fit(xb, yb).predict(qb)
    np.testing.assert_allclose(np.asarray(pred), dense_nw(x, y[:, None], q, 0.5, "gaussian")[:, 0], rtol=1e-9)


def test_bad_input():
    x = np.random.default_rng(7).normal(size=(20, 2))
    with pytest.raises(ValueError, match="kernel must be one of"):
        KernelDensity(kernel="box").fit(x)
    with pytest.raises(ValueError, match="bandwidth must be > 0"):
        KernelDensity(bandwidth=0.0).fit(x)
    with pytest.raises(ValueError, match="sample_weight must be 20 finite weights >= 0, not all zero"):
        KernelDensity().fit(x, sample_weight=-np.ones(20))
    with pytest.raises(ValueError, match="positive everywhere"):
        NadarayaWatson(kernel="tophat").fit(x, x[:, 0])
    with pytest.raises(ValueError, match=r"y must have shape \(20,\)"):
        NadarayaWatson().fit(x, x[:5, 0])
    with pytest.raises(ValueError, match="non-finite"):
        NadarayaWatson().fit(x, np.full(20, np.nan))
