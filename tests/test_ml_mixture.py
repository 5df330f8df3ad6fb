"""lazymat.ml GaussianMixture against scikit-learn's GaussianMixture from the same initialisation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn import mixture as skm
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import lazymat
from lazymat.ml import GaussianMixture


def three_gaussians(n: int = 300, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    parts = [
        ([0, 0, 0], np.eye(3)),
        ([3, 1, 0], np.diag([0.5, 2, 0.3])),
        ([-2, 3, 1], [[1, 0.5, 0], [0.5, 1, 0.2], [0, 0.2, 0.5]]),
    ]
    return np.concatenate([rng.multivariate_normal(m, c, n) for m, c in parts])


def start(x: np.ndarray, covariance_type: str) -> dict:
    """An initialisation off the optimum: scikit-learn's parameters after 2 iterations."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        s = skm.GaussianMixture(3, covariance_type=covariance_type, random_state=1, max_iter=2).fit(x)
    return {"weights_init": s.weights_, "means_init": s.means_, "precisions_init": s.precisions_}


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical"])
def test_em_as_sklearn_from_the_same_start(covariance_type):
    x = three_gaussians()
    init = start(x, covariance_type)
    kw = {"covariance_type": covariance_type, "max_iter": 50, "tol": 1e-8, **init}
    ours, ref = GaussianMixture(3, **kw).fit(x), skm.GaussianMixture(3, **kw).fit(x)
    assert abs(ours.score(x) - ref.score(x)) < 1e-6
    assert abs(ours.lower_bound_ - ref.lower_bound_) < 1e-6
    assert ours.n_iter_ == ref.n_iter_ and ours.converged_ == ref.converged_
    for name in ("weights_", "means_", "covariances_", "precisions_"):
        np.testing.assert_allclose(getattr(ours, name), getattr(ref, name), rtol=1e-8, atol=1e-10)
    q = np.random.default_rng(2).normal(0, 3, (60, 3))
    np.testing.assert_allclose(ours.score_samples(q), ref.score_samples(q), rtol=1e-9)
    np.testing.assert_allclose(ours.predict_proba(q), ref.predict_proba(q), atol=1e-9)
    np.testing.assert_array_equal(ours.predict(q), ref.predict(q))
    assert abs(ours.bic(q) - ref.bic(q)) < 1e-6 * abs(ref.bic(q))
    assert abs(ours.aic(q) - ref.aic(q)) < 1e-6 * abs(ref.aic(q))


def test_score_samples_against_scipy_densities():
    rng = np.random.default_rng(3)
    x = three_gaussians(100, seed=3)
    gm = GaussianMixture(2, random_state=0, max_iter=5, tol=0.1).fit(x)
    q = rng.normal(0, 2, (40, 3))
    dens = [
        np.log(w) + multivariate_normal(m, c).logpdf(q)
        for w, m, c in zip(gm.weights_, gm.means_, gm.covariances_, strict=True)
    ]
    np.testing.assert_allclose(gm.score_samples(q), logsumexp(np.stack(dens), axis=0), rtol=1e-10)


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random_from_data"])
def test_initialisations_as_sklearn(init_params):
    """Same random_state: scikit-learn's KMeans / k-means++ draws and lazymat's are the same."""
    x = three_gaussians(200, seed=4)
    kw = {"init_params": init_params, "random_state": 0, "max_iter": 200}
    ours, ref = GaussianMixture(3, **kw).fit(x), skm.GaussianMixture(3, **kw).fit(x)
    assert abs(ours.score(x) - ref.score(x)) < 1e-6
    assert ours.n_iter_ == ref.n_iter_


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("lib", ["torch", "jax"])
def test_backends_as_sklearn(lib):
    x = three_gaussians(150, seed=5)
    init = start(x, "full")
    ref = skm.GaussianMixture(3, max_iter=20, tol=1e-8, **init).fit(x)
    if lib == "torch":
        torch = pytest.importorskip("torch")
        xb = torch.from_numpy(x)
    else:
        jax = pytest.importorskip("jax")
        jax.config.update("jax_enable_x64", True)
        xb = jax.numpy.asarray(x)
    ours = GaussianMixture(3, max_iter=20, tol=1e-8, **init).fit(xb)
    assert lazymat.backend_for(ours.means_).name == lib
    assert abs(ours.score(xb) - ref.score(x)) < 1e-6
    np.testing.assert_allclose(np.asarray(ours.covariances_), ref.covariances_, rtol=1e-8)


def test_collapsed_component_recovered_by_reg_covar_as_sklearn():
    """Ten copies of one point far away: its component collapses, reg_covar keeps it definite."""
    x = np.concatenate([three_gaussians(100, seed=6), np.full((10, 3), 20.0)])
    means = np.array([[0.0, 0, 0], [3, 1, 0], [-2, 3, 1], [20, 20, 20]])
    kw = {"means_init": means, "max_iter": 30, "tol": 1e-8, "random_state": 0}
    ours, ref = GaussianMixture(4, **kw).fit(x), skm.GaussianMixture(4, **kw).fit(x)
    assert abs(ours.score(x) - ref.score(x)) < 1e-6
    np.testing.assert_allclose(ours.covariances_[3], 1e-6 * np.eye(3), rtol=1e-6)


def test_singular_covariance_without_reg_covar_is_an_error():
    rng = np.random.default_rng(7)
    t = rng.standard_normal((200, 1))
    x = np.concatenate([t, 2 * t], axis=1)  # every point on a line: rank-1 covariances
    with pytest.raises(ValueError, match="covariance of component 0 is not positive definite"):
        GaussianMixture(2, reg_covar=0.0, random_state=0).fit(x)
    with pytest.raises(ValueError, match="covariance of component 0 is not positive definite"):
        GaussianMixture(2, covariance_type="diag", reg_covar=0.0, random_state=0).fit(np.c_[t, np.zeros(200)])
    with pytest.raises(ValueError):  # scikit-learn refuses these data too
        skm.GaussianMixture(2, reg_covar=0.0, random_state=0).fit(x)
    GaussianMixture(2, random_state=0).fit(x)  # the default reg_covar makes it definite


def test_pipeline_and_bad_input():
    x = three_gaussians(100, seed=8)
    pipe = make_pipeline(StandardScaler(), GaussianMixture(3, random_state=0)).fit(x)
    ref = make_pipeline(StandardScaler(), skm.GaussianMixture(3, random_state=0)).fit(x)
    assert abs(pipe.score(x) - ref.score(x)) < 1e-6
    with pytest.raises(ValueError, match="n_components=301 components but only 300 points"):
        GaussianMixture(301).fit(x)
    with pytest.raises(ValueError, match="covariance_type"):
        GaussianMixture(2, covariance_type="tied").fit(x)
    with pytest.raises(ValueError, match=r"means_init must have shape \(2, 3\)"):
        GaussianMixture(2, means_init=np.zeros((3, 3))).fit(x)
    with pytest.raises(ValueError, match="precisions_init of component 1 is not positive definite"):
        GaussianMixture(2, covariance_type="diag", precisions_init=np.array([[1.0, 1, 1], [1, -1, 1]])).fit(x)
    bad = x.copy()
    bad[7, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        GaussianMixture(2).fit(bad)
    with pytest.warns(ConvergenceWarning):
        GaussianMixture(3, max_iter=1, random_state=0).fit(x)
