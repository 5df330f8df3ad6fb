"""Kernel conjugate gradient on numpy: against dense float64 solves (SciPy), SciPy's own cg
iteration counts, preconditioners, the SciPy LinearOperator view, and bad input."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import array_api_strict
import numpy as np
import pytest
import scipy.linalg as sla
import scipy.sparse as sparse
import scipy.sparse.linalg as spla

import lazymat as lm
from lazymat.solvers import aslinearoperator
from lazymat.solvers.conjugate_gradient import CGInfo, ConvergenceWarning, cg
from lazymat.solvers.preconditioners import jacobi, nystrom

N = 500


def gauss(x: np.ndarray, s2: float) -> lm.LazyMatrix:
    return (-lm.Vi(x).sqdist(lm.Vj(x)) / s2).exp()


def dense_gauss(x: np.ndarray, s2: float) -> np.ndarray:
    return np.exp(-((x[..., :, None, :] - x[..., None, :, :]) ** 2).sum(-1) / s2)


def sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def rel_residual(D: np.ndarray, alpha: float, x: np.ndarray, b: np.ndarray) -> float:
    r = b - (D @ x + alpha * x)
    return float(np.max(np.linalg.norm(r, axis=-2) / np.linalg.norm(b, axis=-2)))


@pytest.fixture(scope="module")
def problem() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.random((N, 2))
    b = rng.standard_normal((N, 2))
    return x, b, dense_gauss(x, 0.05)


@pytest.mark.parametrize("precond", [None, "jacobi", "nystrom"])
def test_cg_matches_dense_solve(problem, precond):
    x, b, D = problem
    alpha = 0.5
    X, info = cg(gauss(x, 0.05), b, alpha=alpha, tol=1e-10, precond=precond)
    ref = sla.solve(D + alpha * np.eye(N), b, assume_a="pos")
    assert isinstance(info, CGInfo) and info.converged
    np.testing.assert_allclose(X, ref, rtol=0, atol=1e-8 * np.abs(ref).max())
    assert rel_residual(D, alpha, X, b) <= 1e-10
    assert info.residual_norms[-1] <= 1e-10 and len(info.residual_norms) == info.iterations + 1


def test_iteration_count_matches_scipy_cg(problem):
    """Unpreconditioned CG is a deterministic recursion: SciPy's cg on the same operator
    (through aslinearoperator) must stop after the same number of iterations."""
    x, b, _ = problem
    K = gauss(x, 0.05)
    alpha = 0.5
    _, info = cg(K, b[:, 0], alpha=alpha, tol=1e-8)
    L = aslinearoperator(K)
    shifted = spla.LinearOperator(L.shape, matvec=lambda v: L @ v + alpha * v, dtype=L.dtype)
    count = [0]
    _, flag = spla.cg(
        shifted, b[:, 0], rtol=1e-8, maxiter=1000, callback=lambda _: count.__setitem__(0, count[0] + 1)
    )
    assert flag == 0
    assert abs(info.iterations - count[0]) <= 1, (info.iterations, count[0])


def test_nystrom_converges_on_ill_conditioned_gaussian():
    """A wide Gaussian kernel with a tiny ridge (condition number ~1e8): plain CG stalls,
    Nystrom-preconditioned CG converges in a few dozen iterations to the dense solution."""
    rng = np.random.default_rng(1)
    x = rng.random((N, 2))
    b = rng.standard_normal((N, 1))
    D = dense_gauss(x, 0.5)
    alpha = 1e-6
    K = gauss(x, 0.5)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        _, plain = cg(K, b, alpha=alpha, tol=1e-6, maxiter=60)
    assert not plain.converged and plain.residual_norms[-1] > 1e-3
    for method in ("rpcholesky", "uniform"):
        P = nystrom(K, alpha, rank=100, method=method)
        X, info = cg(K, b, alpha=alpha, tol=1e-6, precond=P)
        assert info.converged and info.iterations <= 40, (method, info.iterations)
        assert rel_residual(D, alpha, X, b) <= 1e-6


def test_vector_rhs_solve_method_and_callable(problem):
    x, b, D = problem
    alpha = 1.0
    ref = sla.solve(D + alpha * np.eye(N), b[:, 0])
    X = gauss(x, 0.05).solve(b[:, 0], alpha=alpha, tol=1e-10)
    assert X.shape == (N,)
    np.testing.assert_allclose(X, ref, atol=1e-8 * np.abs(ref).max())
    Y, _ = cg(lambda v: D @ v, b[:, 0], alpha=alpha, tol=1e-10)
    np.testing.assert_allclose(Y, ref, atol=1e-8 * np.abs(ref).max())
    # started at the solution: no iteration
    _, again = cg(lambda v: D @ v, b[:, 0], alpha=alpha, tol=1e-6, x0=ref)
    assert again.converged and again.iterations == 0
    seen: list[np.ndarray] = []
    _, run = cg(lambda v: D @ v, b[:, 0], alpha=alpha, tol=1e-6, callback=seen.append)
    assert len(seen) == run.iterations > 0 and all(s.shape == (N, 1) for s in seen)


def test_batched_systems():
    rng = np.random.default_rng(2)
    x = rng.random((3, 80, 2))
    b = rng.standard_normal((3, 80, 2))
    D = dense_gauss(x, 0.1)
    alpha = 0.1
    ref = np.linalg.solve(D + alpha * np.eye(80), b)
    for precond in (None, "jacobi", nystrom(gauss(x, 0.1), alpha, rank=20, method="uniform")):
        X, info = cg(gauss(x, 0.1), b, alpha=alpha, tol=1e-10, precond=precond)
        assert X.shape == (3, 80, 2) and info.converged
        np.testing.assert_allclose(X, ref, atol=1e-7 * np.abs(ref).max())


def test_preconditioners_against_dense():
    rng = np.random.default_rng(3)
    x = rng.random((40, 2))
    K, D = gauss(x, 0.01), dense_gauss(x, 0.01)
    r = rng.standard_normal((40, 3))
    np.testing.assert_allclose(jacobi(K, 0.3)(r), r / (np.diag(D)[:, None] + 0.3), rtol=1e-12)
    # full rank on a well-conditioned kernel: the Nystrom preconditioner is the exact inverse
    inv = np.linalg.inv(D + 0.3 * np.eye(40))
    for method in ("rpcholesky", "uniform"):
        P = nystrom(K, 0.3, rank=40, method=method)
        np.testing.assert_allclose(P(r), inv @ r, atol=1e-8)
    # low rank: still symmetric positive definite
    P = nystrom(K, 0.3, rank=10)
    M = P(np.eye(40))
    np.testing.assert_allclose(M, M.T, atol=1e-10)
    assert np.linalg.eigvalsh(M).min() > 0


def test_aslinearoperator_with_scipy(problem):
    x, b, D = problem
    K = gauss(x, 0.05)
    L = aslinearoperator(K)
    assert L.shape == (N, N)
    np.testing.assert_allclose(L @ b, D @ b, atol=1e-12 * N)
    shifted = L + 0.5 * spla.aslinearoperator(sparse.identity(N))
    X, flag = spla.cg(shifted, b[:, 0], rtol=1e-10, maxiter=500)
    assert flag == 0
    ref = sla.solve(D + 0.5 * np.eye(N), b[:, 0])
    np.testing.assert_allclose(X, ref, atol=1e-8 * np.abs(ref).max())
    vals = spla.eigsh(L, k=4, return_eigenvectors=False)
    np.testing.assert_allclose(np.sort(vals), np.linalg.eigvalsh(D)[-4:], rtol=1e-8)
    # rectangular: rmatvec is the transposed product
    y = np.random.default_rng(4).random((70, 2))
    R = aslinearoperator((-lm.Vi(x).sqdist(lm.Vj(y))).exp())
    DR = np.exp(-((x[:, None] - y[None]) ** 2).sum(-1))
    v = np.random.default_rng(5).standard_normal(N)
    np.testing.assert_allclose(R.rmatvec(v), DR.T @ v, atol=1e-11)
    assert R.shape == (N, 70)


def test_bad_input(problem):
    x, b, _ = problem
    K = gauss(x, 0.05)
    y = x.copy()
    with pytest.raises(ValueError, match="same points on both sides"):
        cg((-lm.Vi(x).sqdist(lm.Vj(y))).exp(), b)
    with pytest.raises(ValueError, match="same points on both sides"):
        cg(K * lm.Vj(b[:, :1]), b)  # weights on the j side only
    with pytest.raises(ValueError, match="not symmetric"):
        cg((-(lm.Vi(x) - 2 * lm.Vj(x)).sqnorm2()).exp(), b)
    with pytest.raises(ValueError, match="alpha"):
        cg(K, b, alpha=-1.0)
    with pytest.raises(ValueError, match=r"N = 500.*got shape \(499, 2\)"):
        cg(K, b[:-1])
    with pytest.raises(TypeError, match="dtype"):
        cg(K, b.astype(np.float32))
    with pytest.raises(ValueError, match="scalar formula"):
        cg(lm.Vi(x) - lm.Vj(x), b)
    with pytest.raises(ValueError, match="positive definite"):
        cg(-K, b, tol=1e-8)
    with pytest.raises(ValueError, match="precond"):
        cg(K, b, precond="ilu")
    with pytest.raises(TypeError, match="LazyMatrix or a callable"):
        cg(np.eye(N), b)
    with pytest.raises(ValueError, match="method='uniform'"):
        xb = np.stack([x, x])
        nystrom(gauss(xb, 0.05), 0.1)
    with pytest.raises(TypeError, match="numpy"):
        aslinearoperator(gauss(array_api_strict.asarray(x), 0.1))
    with pytest.raises(ValueError, match="scalar formula"):
        aslinearoperator(lm.Vi(x) - lm.Vj(x))


def test_convergence_warning_names_the_residual(problem):
    x, b, _ = problem
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, info = cg(gauss(x, 0.05), b, alpha=1e-3, tol=1e-12, maxiter=3)
    assert info.iterations == 3 and not info.converged
    assert any(
        issubclass(w.category, ConvergenceWarning) and "after 3 iterations" in str(w.message) for w in caught
    )


def test_kriging_example_recovers_the_function(tmp_path):
    """The example's posterior mean, against the noiseless truth: well below the noise."""
    path = Path(__file__).resolve().parents[1] / "examples" / "kriging.py"
    spec = importlib.util.spec_from_file_location("kriging_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    r = module.run(n=400, out=str(tmp_path / "kriging.png"), rank=50, lengthscale=0.1, noise=0.1, tol=1e-8)
    assert r["converged"] and r["rmse"] < r["noise"]
    # the dense float64 posterior mean from the same samples
    x, z = r["points"], r["grid"]
    K = np.exp(-sq_dist(x, x) / (2 * 0.1**2))
    dense = np.exp(-sq_dist(z, x) / (2 * 0.1**2)) @ sla.solve(K + 0.1**2 * np.eye(400), r["samples"])
    np.testing.assert_allclose(r["mean"], dense, atol=1e-6 * np.abs(dense).max())
    assert (tmp_path / "kriging.png").stat().st_size > 0
