"""Free-support barycenters of point clouds (lazymat.solvers.free_support_barycenter).

The points' implicit derivative is tested in tests/test_free_barycenter_points_vjp.py.
References: POT's ``ot.bregman.free_support_sinkhorn_barycenter`` (the same fixed point on
entropic plans; POT's cost is |x - y|^2 and its reg = 2 blur^2 for our |x - y|^2 / 2 at
eps = blur^2) step for step; POT's exact ``ot.lp.free_support_barycenter`` where the exact
barycenter is known in closed form (translated copies of one cloud); the objective's
monotone decrease (majorise-minimise).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import lazymat
from lazymat.solvers.conjugate_gradient import ConvergenceWarning
from lazymat.solvers.free_barycenter import free_support_barycenter

ot = pytest.importorskip("ot")

BACKENDS = [name for name in ("numpy", "torch") if name in lazymat.backends()]
BLUR = 0.2


def arr(name: str, v: np.ndarray) -> object:
    return lazymat.get_registry().backend(name).from_numpy(np.ascontiguousarray(v))


def npy(v: object) -> np.ndarray:
    b = lazymat.backend_for(v)
    return np.asarray(b.to_numpy(v))


def clouds(seed: int, k: int = 3, m: int = 25, n: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """K clouds in the plane (offset along x), their weights, and starting points."""
    rng = np.random.default_rng(seed)
    y = rng.random((k, m, 2)) + np.arange(k)[:, None, None] * np.array([0.5, 0.0])
    a = rng.random((k, m)) + 0.5
    return y, a / a.sum(1, keepdims=True), rng.random((n, 2))


def pot_entropic(y: list, a: list, x0: np.ndarray, lambdas: np.ndarray, steps: int) -> np.ndarray:
    return ot.bregman.free_support_sinkhorn_barycenter(
        y, a, x0, reg=2 * BLUR**2, weights=lambdas, numItermax=steps, stopThr=0.0, numInnerItermax=100_000
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_pot_entropic_fixed_point(backend: str) -> None:
    y, a, x0 = clouds(0)
    lambdas = np.array([0.2, 0.3, 0.5])
    r = free_support_barycenter(
        arr(backend, y),
        arr(backend, x0),
        arr(backend, a),
        lambdas=lambdas,
        blur=BLUR,
        tol=1e-8,
        max_iter=4,
        stop=0.0,
    )
    expected = pot_entropic(list(y), list(a), x0, lambdas, 4)
    assert r.n_iter == 4
    assert np.max(np.abs(npy(r.points) - expected)) < 1e-6
    objective = [float(npy(o)) for o in r.objective]
    assert all(later <= earlier + 1e-9 for earlier, later in itertools.pairwise(objective))
    assert objective[-1] < 0.5 * objective[0]


def test_list_of_clouds_of_different_sizes() -> None:
    y, a, x0 = clouds(1, k=2)
    y_list, a_list = [y[0], y[1][:17]], [a[0], a[1][:17] / a[1][:17].sum()]
    r = free_support_barycenter(y_list, x0, a_list, blur=BLUR, tol=1e-8, max_iter=3, stop=0.0)
    expected = pot_entropic(y_list, a_list, x0, np.array([0.5, 0.5]), 3)
    assert np.max(np.abs(r.points - expected)) < 1e-6


def test_batched_barycenters_each_match_pot() -> None:
    (y1, a1, x1), (y2, a2, x2) = clouds(2), clouds(3)
    lambdas = np.array([[0.6, 0.2, 0.2], [0.1, 0.1, 0.8]])
    r = free_support_barycenter(
        np.stack([y1, y2]),
        np.stack([x1, x2]),
        np.stack([a1, a2]),
        lambdas=lambdas,
        blur=BLUR,
        tol=1e-8,
        max_iter=2,
        stop=0.0,
    )
    assert r.points.shape == (2, 20, 2) and r.objective[0].shape == (2,)
    for k, (y, a, x0) in enumerate(((y1, a1, x1), (y2, a2, x2))):
        assert np.max(np.abs(r.points[k] - pot_entropic(list(y), list(a), x0, lambdas[k], 2))) < 1e-6


def test_translated_copies_match_pot_exact_barycenter() -> None:
    """Copies of one cloud shifted by t_k: the exact barycenter is the cloud shifted by sum lambda_k t_k."""
    rng = np.random.default_rng(4)
    base = rng.random((12, 2))
    shifts = np.array([[0.0, 0.0], [0.3, 0.1], [-0.2, 0.25]])
    y = base[None] + shifts[:, None, :]
    lambdas = np.array([0.5, 0.25, 0.25])
    x0 = base + rng.normal(size=base.shape) * 0.01
    exact = ot.lp.free_support_barycenter(list(y), [np.ones(12) / 12] * 3, x0, weights=lambdas, numItermax=20)
    assert np.allclose(np.sort(exact[:, 0]), np.sort((base + lambdas @ shifts)[:, 0]), atol=1e-9)
    r = free_support_barycenter(y, x0, lambdas=lambdas, blur=0.01, tol=1e-7, max_iter=20, stop=1e-14)
    assert np.max(np.abs(r.points - exact)) < 1e-4


def test_inexact_sinkhorn_warns() -> None:
    y, a, x0 = clouds(6, k=2, m=6, n=4)
    with pytest.warns(ConvergenceWarning, match="Sinkhorn solve stopped"):
        free_support_barycenter(y, x0, a, blur=0.01, tol=1e-300, max_iter=1)


def test_bad_input() -> None:
    y, a, x0 = clouds(5)
    with pytest.raises(ValueError, match="sum to 1"):
        free_support_barycenter(y, x0, lambdas=np.array([0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match="nonnegative"):
        free_support_barycenter(y, x0, lambdas=np.array([1.5, -0.5, 0.0]))
    with pytest.raises(ValueError, match="NaN"):
        free_support_barycenter(np.where(y > 0.9, np.nan, y), x0)
    with pytest.raises(ValueError, match="weights must have shape"):
        free_support_barycenter(y, x0, a[:, :10])
    with pytest.raises(ValueError, match="positive"):
        free_support_barycenter(y, x0, b=np.concatenate([[0.0], np.ones(19) / 19]))
    with pytest.raises(ValueError, match="both be batched"):
        free_support_barycenter(y, x0[None])


def test_objective_gradients_match_finite_differences() -> None:
    """Envelope theorem at the fixed point: d value / d (clouds, weights, lambdas) vs the whole solve's FD."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    y, a, x0 = rng.random((3, 8, 2)), rng.random((3, 8)) + 0.5, rng.random((8, 2))
    a /= a.sum(1, keepdims=True)
    lam = np.array([0.2, 0.3, 0.5])
    options = {"blur": 0.5, "tol": 1e-9, "max_iter": 300, "stop": 1e-22}
    yt, at, lt = (torch.tensor(v, requires_grad=True) for v in (y, a, lam))
    r = free_support_barycenter(yt, torch.tensor(x0), at, lambdas=lt, **options)
    assert r.converged
    gy, ga, gl = (g.numpy() for g in torch.autograd.grad(r.value, [yt, at, lt]))

    def value(yy: np.ndarray, aa: np.ndarray, ll: np.ndarray) -> float:
        return float(free_support_barycenter(yy, x0, aa, lambdas=ll, **options).value)

    h = 1e-5
    dy, da, dl = rng.standard_normal(y.shape), rng.standard_normal(a.shape), rng.standard_normal(3)
    da, dl = da - da.mean(1, keepdims=True), dl - dl.mean()  # weights and lambdas keep their sums
    fd_y = (value(y + h * dy, a, lam) - value(y - h * dy, a, lam)) / (2 * h)
    fd_a = (value(y, a + h * da, lam) - value(y, a - h * da, lam)) / (2 * h)
    fd_l = (value(y, a, lam + h * dl) - value(y, a, lam - h * dl)) / (2 * h)
    np.testing.assert_allclose((gy * dy).sum(), fd_y, rtol=1e-7)
    np.testing.assert_allclose((ga * da).sum(), fd_a, rtol=1e-7)
    np.testing.assert_allclose((gl * dl).sum(), fd_l, rtol=1e-7)


def test_objective_gradients_under_jax() -> None:
    """jax.grad of the objective matches central differences of the whole solve."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    rng = np.random.default_rng(3)
    y, x0 = rng.random((2, 6, 2)), rng.random((5, 2))
    options = {"blur": 0.5, "tol": 1e-9, "max_iter": 200, "stop": 1e-22}
    with jax.enable_x64(True):
        g = jax.grad(lambda yy: free_support_barycenter(yy, jnp.asarray(x0), **options).value)(jnp.asarray(y))
    d, h = rng.standard_normal(y.shape), 1e-5

    def value(yy: np.ndarray) -> float:
        return float(free_support_barycenter(yy, x0, **options).value)

    fd = (value(y + h * d) - value(y - h * d)) / (2 * h)
    np.testing.assert_allclose((np.asarray(g) * d).sum(), fd, rtol=1e-6)


def test_result_reads_as_an_ot_result() -> None:
    """value, potentials, the K plans (marginals b and a^k) and marginal errors, as every OT solve."""
    from lazymat.solvers import OTResult

    y, a, x0 = clouds(9, k=2, m=10, n=7)
    r = free_support_barycenter(y, x0, a, blur=0.3, tol=1e-11, max_iter=50, stop=1e-16)
    assert isinstance(r, OTResult) and r.value is r.objective[-1]
    assert r.f.shape == (2, 7) and r.g.shape == (2, 10) and r.eps == pytest.approx(0.09)
    rows, cols = r.plan.marginals()
    np.testing.assert_allclose(rows, np.full((2, 7), 1 / 7), atol=1e-9)
    np.testing.assert_allclose(cols, a, atol=1e-9)
    assert np.all(np.asarray(r.marginal_errors[1]) < 1e-8) and r.marginal_errors[0].shape == (2,)
    listed = free_support_barycenter([y[0], y[1][:6]], x0, [a[0], a[1][:6] / a[1][:6].sum()], blur=0.3)
    assert len(listed.g) == 2 and listed.g[1].shape == (6,)
    with pytest.raises(NotImplementedError, match="transports"):
        _ = listed.plan
