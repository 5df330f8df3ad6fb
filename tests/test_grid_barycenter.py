"""Wasserstein barycenters on grids (lazymat.solvers.barycenter_grid), against references.

References: POT's ``ot.bregman.convolutional_barycenter2d`` (log-domain and scaling methods) and
``convolutional_barycenter2d_debiased`` on the same eps (POT's reg = 2 eps on linspace(0, 1, n)
axes); Bregman projections with dense float64 kernels written here (SciPy's logsumexp); the fixed-
point equations of the (debiased) barycenter checked with dense matrices; central finite
differences for the gradients.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from scipy.special import logsumexp
from test_sinkhorn import arr, npy

from lazymat.solvers import GridBarycenter, barycenter_grid

ot = pytest.importorskip("ot")

N = 16
T = np.linspace(0, 1, N)


def shapes(n: int = N) -> np.ndarray:
    """A disk, a square and a ring on linspace(0, 1, n)^2, each of mass 1: (3, n, n)."""
    t = np.linspace(0, 1, n)
    X, Y = np.meshgrid(t, t, indexing="ij")
    r2 = (X - 0.3) ** 2 + (Y - 0.3) ** 2
    disk = (r2 < 0.15**2).astype(float)
    square = ((abs(X - 0.65) < 0.15) & (abs(Y - 0.6) < 0.2)).astype(float)
    ring = (abs(np.sqrt((X - 0.5) ** 2 + (Y - 0.5) ** 2) - 0.3) < 0.08).astype(float)
    A = np.stack([disk, square, ring])
    return A / A.sum((1, 2), keepdims=True)


def dense_kernel_log(points: np.ndarray, eps: float) -> np.ndarray:
    """log K = -|x_i - x_j|^2 / (2 eps), dense."""
    return -((points[:, None] - points[None]) ** 2).sum(-1) / (2 * eps)


def dense_barycenter(A: np.ndarray, w: np.ndarray, points: np.ndarray, eps: float, iters: int) -> np.ndarray:
    """Bregman projections in log domain with a dense kernel (no annealing): the barycenter (N,),
    after ``iters`` iterations or once an iteration moves no entry of log(barycenter) by more
    than 1e-14 (float64 rounding: further iterations only shuffle the last bits)."""
    M = dense_kernel_log(points, eps)
    la = np.where(A > 0, np.log(np.where(A > 0, A, 1)), -1e5).reshape(len(A), -1)
    log_v = np.zeros_like(la)
    log_bar = np.zeros(la.shape[1])
    for _ in range(iters):
        log_u = la - logsumexp(M[None] + log_v[:, None, :], axis=-1)
        log_ku = logsumexp(M[None] + log_u[:, None, :], axis=-1)
        log_bar, previous = w @ log_ku, log_bar
        log_v = log_bar[None] - log_ku
        if np.abs(log_bar - previous).max() <= 1e-14:
            break
    return np.exp(log_bar)


@pytest.mark.parametrize("method", ["sinkhorn_log", "sinkhorn"])
def test_matches_pot_convolutional_barycenter(method):
    """POT's log method at a small reg; its scaling method (which adds 1e-30 inside its logs, a bias
    where the kernel underflows) at a reg where nothing underflows."""
    A = shapes()
    w = np.array([0.5, 0.3, 0.2])
    reg = 0.004 if method == "sinkhorn_log" else 0.03
    P = ot.bregman.convolutional_barycenter2d(
        A, reg, weights=w, method=method, stopThr=1e-13, numItermax=10**5
    )
    r = barycenter_grid(A, w, axes=(T, T), blur=np.sqrt(reg / 2), tol=1e-12, max_iter=10**5)
    assert isinstance(r, GridBarycenter) and r.converged and r.barycenter.shape == (N, N)
    assert np.abs(r.barycenter - P).max() <= 1e-6 * P.max()
    np.testing.assert_allclose(r.barycenter.sum(), 1.0, rtol=1e-9)


def test_annealing_and_default_axes_reach_the_dense_fixed_point():
    """[0, 1)^2 cell centres, annealing (default) or not: the dense Bregman fixed point."""
    A = shapes(12)
    w = np.array([0.2, 0.2, 0.6])
    pts = np.stack(np.meshgrid(*[(np.arange(12) + 0.5) / 12] * 2, indexing="ij"), -1).reshape(-1, 2)
    ref = dense_barycenter(A, w, pts, 0.06**2, 2000).reshape(12, 12)
    for scaling in (0.5, None):
        r = barycenter_grid(A, w, blur=0.06, scaling=scaling, tol=1e-12, max_iter=5000)
        assert r.converged
        np.testing.assert_allclose(r.barycenter, ref, rtol=1e-8, atol=1e-12 * ref.max())


def test_one_and_three_dimensional_grids_and_batches():
    rng = np.random.default_rng(0)
    for shape in [(17,), (5, 4, 6)]:
        A = rng.random((2, 3, *shape)) ** 3
        A /= A.sum(tuple(range(2, A.ndim)), keepdims=True)
        w = np.array([[0.3, 0.3, 0.4], [0.1, 0.8, 0.1]])
        r = barycenter_grid(A, w, dim=len(shape), blur=0.15, tol=1e-12, max_iter=5000)
        assert r.barycenter.shape == (2, *shape) and r.f.shape == (2, 3, *shape)
        pts = np.stack(np.meshgrid(*[(np.arange(n) + 0.5) / n for n in shape], indexing="ij"), -1)
        for b in range(2):
            ref = dense_barycenter(A[b], w[b], pts.reshape(-1, len(shape)), 0.15**2, 3000)
            np.testing.assert_allclose(r.barycenter[b].ravel(), ref, rtol=1e-8, atol=1e-13)


def test_debiased_barycenter_solves_its_equations_and_is_near_pot():
    """Janati et al.'s fixed point: P_k^T 1 = a_k, P_k 1 = bar, e^(d/eps) K e^(d/eps) = bar (dense)."""
    A = shapes()
    w = np.array([0.5, 0.3, 0.2])
    reg = 0.004
    eps = reg / 2
    r = barycenter_grid(A, w, axes=(T, T), blur=np.sqrt(eps), debias=True, tol=1e-7, max_iter=5000)
    assert r.converged and r.d.shape == (N, N)
    pts = np.stack(np.meshgrid(T, T, indexing="ij"), -1).reshape(-1, 2)
    M = dense_kernel_log(pts, eps)
    bar = r.barycenter.ravel()
    for k in range(3):
        P = np.exp((r.f[k].reshape(-1, 1) + r.g[k].reshape(1, -1)) / eps + M)
        np.testing.assert_allclose(P.sum(0), A[k].ravel(), atol=1e-7)  # exact after the last step
        assert np.abs(P.sum(1) - bar).sum() < 1e-7
    d = r.d.ravel() / eps
    self_marginal = np.exp(d + logsumexp(M + d[None, :], axis=1))
    assert np.abs(self_marginal - bar).sum() < 1e-7
    # the debiased barycenter is sharper than the plain one, and close to POT's (which stops on
    # its plans' agreement only, not on the debiasing equation)
    plain = barycenter_grid(A, w, axes=(T, T), blur=np.sqrt(eps), tol=1e-10, max_iter=5000).barycenter
    assert (r.barycenter**2).sum() > (plain**2).sum()
    P = ot.bregman.convolutional_barycenter2d_debiased(
        A, reg, weights=w, method="sinkhorn_log", stopThr=1e-9, numItermax=10**4
    )
    assert np.abs(r.barycenter - P).max() < 5e-3 * P.max()


@pytest.mark.parametrize("backend", ["torch", "array_api_strict"])
def test_other_backends_give_numpy_results(backend):
    A = shapes(8)
    r = barycenter_grid(arr(backend, A), arr(backend, np.array([0.2, 0.3, 0.5])), blur=0.1, tol=1e-10)
    ref = barycenter_grid(A, np.array([0.2, 0.3, 0.5]), blur=0.1, tol=1e-10)
    assert r.n_iter == ref.n_iter
    np.testing.assert_allclose(npy(r.barycenter), ref.barycenter, rtol=1e-10, atol=1e-15)


def test_torch_gradients_match_finite_differences():
    """Through every iteration (the exact derivative of the computed map), in the densities and the
    weights; and through the last iterations only (GeomLoss's scheme) at convergence."""
    torch = pytest.importorskip("torch")
    A = shapes(8)
    w = np.array([0.2, 0.3, 0.5])
    target = np.random.default_rng(1).random((8, 8))
    opts = {"blur": 0.12, "tol": None, "max_iter": 40}

    def loss(bar):
        return (bar * (torch.tensor(target) if isinstance(bar, torch.Tensor) else target)).sum()

    At, wt = torch.tensor(A, requires_grad=True), torch.tensor(w, requires_grad=True)
    gA, gw = torch.autograd.grad(loss(barycenter_grid(At, wt, **opts).barycenter), [At, wt])
    rng = np.random.default_rng(2)
    dA = A * rng.standard_normal(A.shape)
    dA -= A * dA.sum((1, 2), keepdims=True)  # equal masses stay equal
    dw = rng.standard_normal(3)
    dw -= dw.mean()  # weights stay on the simplex
    h = 1e-6
    plus, minus = (loss(barycenter_grid(A + s * dA, w + s * dw, **opts).barycenter) for s in (h, -h))
    exact = float((gA.numpy() * dA).sum() + (gw.numpy() * dw).sum())
    np.testing.assert_allclose(exact, (plus - minus) / (2 * h), rtol=1e-6)
    # the last iterations only, from converged potentials: the converged map's derivative
    conv = {"blur": 0.12, "tol": 1e-13, "max_iter": 5000}
    gA2, gw2 = torch.autograd.grad(
        loss(barycenter_grid(At, wt, **conv, backward_iterations=60).barycenter), [At, wt]
    )
    plus, minus = (loss(barycenter_grid(A + s * dA, w + s * dw, **conv).barycenter) for s in (h, -h))
    approx = float((gA2.numpy() * dA).sum() + (gw2.numpy() * dw).sum())
    np.testing.assert_allclose(approx, (plus - minus) / (2 * h), rtol=1e-3)


def test_bad_input_gets_clear_errors():
    A = shapes(6)
    with pytest.raises(ValueError, match="nonnegative"):
        barycenter_grid(A - 0.01)
    B = A.copy()
    B[1, 2, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        barycenter_grid(B)
    with pytest.raises(ValueError, match="equal total mass"):
        barycenter_grid(A * np.array([1.0, 2.0, 1.0])[:, None, None])
    with pytest.raises(ValueError, match=r"\(K, n_1, n_2\) or \(B, K, n_1, n_2\)"):
        barycenter_grid(A[0], dim=2)
    with pytest.raises(ValueError, match=r"weights must have shape \(3,\)"):
        barycenter_grid(A, np.ones(2) / 2)
    with pytest.raises(ValueError, match="sum to 1"):
        barycenter_grid(A, np.array([0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match="nonnegative"):
        barycenter_grid(A, np.array([1.5, -0.5, 0.0]))
    with pytest.raises(ValueError, match="shorter than the annealing"):
        barycenter_grid(A, max_iter=2)
    with pytest.raises(ValueError, match="tol must be positive"):
        barycenter_grid(A, tol=0.0)
    with pytest.raises(ValueError, match="backward_iterations"):
        barycenter_grid(A, backward_iterations=0)
    with pytest.raises(ValueError, match="no mass"):
        barycenter_grid(np.zeros_like(A))


def test_barycenters_example_against_dense_bregman(tmp_path):
    """examples/grid_barycenters.py: a 3 x 3 panel on 14 x 14 grids, each the dense fixed point."""
    pytest.importorskip("matplotlib")
    path = Path(__file__).resolve().parents[1] / "examples" / "grid_barycenters.py"
    spec = importlib.util.spec_from_file_location("grid_barycenters", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = tmp_path / "panel.png"
    r = example.run(n=14, k=3, out=str(out), blur=0.08)
    assert out.stat().st_size > 0 and r["converged"] and r["panel"].shape == (9, 14, 14)
    np.testing.assert_allclose(r["weights"][4], [0.25] * 4)  # the centre: equal weights
    pts = np.stack(np.meshgrid(*[(np.arange(14) + 0.5) / 14] * 2, indexing="ij"), -1).reshape(-1, 2)
    for idx in (0, 4, 5):
        ref = dense_barycenter(r["shapes"], r["weights"][idx], pts, 0.08**2, 3000)
        assert np.abs(r["panel"][idx].ravel() - ref).sum() < 1e-4


def test_result_reads_as_an_ot_result() -> None:
    """value and the K plans against POT's converged entropic plans between the barycenter and each a_k."""
    from lazymat.solvers import OTResult

    rng = np.random.default_rng(0)
    n, blur = 8, 0.15
    A = rng.random((3, n, n)) + 0.1
    A /= A.sum((1, 2), keepdims=True)
    lam = np.array([0.2, 0.3, 0.5])
    r = barycenter_grid(A, lam, blur=blur, tol=1e-12, max_iter=5000)
    assert isinstance(r, OTResult) and r.converged and r.f.shape == (3, n, n)
    t = (np.arange(n) + 0.5) / n  # the default axes: cell centres of [0, 1)
    X = np.stack(np.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    M = ((X[:, None] - X[None]) ** 2).sum(-1) / 2
    eps = blur**2
    plans = r.plan @ np.eye(n * n)  # (3, N, N): the batched plan
    total = 0.0
    for k in range(3):
        P = ot.sinkhorn(
            r.barycenter.reshape(-1), A[k].reshape(-1), M, eps, method="sinkhorn_log", stopThr=1e-15
        )
        np.testing.assert_allclose(plans[k], P, atol=1e-12)
        total += lam[k] * ((P * M).sum() + eps * (P * (np.log(P) - 1)).sum())
    np.testing.assert_allclose(float(r.value), total, rtol=1e-10)
    rows_err, cols_err = r.marginal_errors
    assert rows_err.shape == (3,) and float(np.max(cols_err)) < 1e-10
