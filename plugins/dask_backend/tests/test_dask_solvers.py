"""lazymat's solvers on dask arrays (threads scheduler here; ``test_dask_cluster.py`` runs the
same checks on a two-process ``LocalCluster``).

Each solve is checked twice: against an independent reference (GeomLoss on float64 torch
tensors for Sinkhorn divergences, POT's converged log-domain Sinkhorn, numpy's dense
``solve`` for kernel ridge regression, a dense explicit Euler integrator of the Hamiltonian
equations written here, GeomLoss's autograd for gradients), and against the same solver on
the same numpy arrays in one process, to 1e-12 in float64: distribution must not change
the answer beyond rounding.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest

import lazymat_dask
from lazymat.solvers import SamplesLoss, cg, gaussian, nystrom, shoot, sinkhorn


@pytest.fixture(autouse=True)
def _threads_scheduler() -> Iterator[None]:
    with dask.config.set(scheduler="threads"):
        yield


def chunked(a: np.ndarray, rows: int) -> da.Array:
    return da.from_array(a, chunks=(rows, *a.shape[1:]))


def held(a: da.Array, what: str) -> None:
    """``a``'s graph is its own chunks only (``Backend.materialize`` persisted it): reading
    it runs none of the solve again."""
    keys = set(dask.core.flatten(a.__dask_keys__()))
    assert set(a.__dask_graph__()) == keys, f"{what}: a graph to run, not its values"


def clouds(n: int, m: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, 3)), rng.random((m, 3)) + 0.2


def close(got: Any, expected: Any, rtol: float, what: str) -> None:
    """Equal to ``rtol`` of each entry, or of the largest one (entries near 0 carry the
    rounding of the others)."""
    scale = float(np.max(np.abs(expected)))
    np.testing.assert_allclose(
        np.asarray(got, dtype=np.float64), expected, rtol=rtol, atol=rtol * scale, err_msg=what
    )


def geomloss_value_and_grad(x: np.ndarray, y: np.ndarray, **kw: Any) -> tuple[float, np.ndarray]:
    geomloss = pytest.importorskip("geomloss")
    torch = pytest.importorskip("torch")
    xt = torch.tensor(x, requires_grad=True)
    value = geomloss.SamplesLoss("sinkhorn", backend="tensorized", **kw)(xt, torch.tensor(y))
    (gx,) = torch.autograd.grad(value, [xt])
    return float(value), gx.numpy()


def check_samples_loss(n: int, m: int, rows: int, results: str) -> None:
    """Sinkhorn divergence and its gradient (online), on dask vs GeomLoss and vs numpy."""
    x, y = clouds(n, m)
    loss = SamplesLoss("sinkhorn", p=2, blur=0.05, backend="online")
    with lazymat_dask.config(results=results):
        value, (gx, _) = loss.value_and_grad(chunked(x, rows), chunked(y, rows))
        held(value, "the Sinkhorn divergence")
        value, gx = dask.compute(value, gx)
    assert gx.shape == x.shape
    ref_value, ref_gx = geomloss_value_and_grad(x, y, p=2, blur=0.05)
    close(value, ref_value, 1e-9, "Sinkhorn divergence vs GeomLoss")
    close(gx, ref_gx, 1e-7, "its gradient vs GeomLoss's autograd")
    here_value, (here_gx, _) = loss.value_and_grad(x, y)
    close(value, here_value, 1e-12, "Sinkhorn divergence vs numpy in one process")
    close(gx, here_gx, 1e-12, "its gradient vs numpy in one process")


def entropic_ot(a: np.ndarray, x: np.ndarray, b: np.ndarray, y: np.ndarray, eps: float) -> float:
    """POT's converged entropic OT value <pi, C> + eps KL(pi | a x b), C = |x - y|^2 / 2."""
    ot = pytest.importorskip("ot")
    C = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1) / 2
    G = ot.sinkhorn(a, b, C, eps, method="sinkhorn_log", stopThr=1e-13, numItermax=100_000)
    pos = G > 0
    return float((G * C).sum() + eps * ((G[pos] * np.log(G[pos] / np.outer(a, b)[pos])).sum() - G.sum() + 1))


def check_converged_sinkhorn(n: int, m: int, rows: int, backend: str, blur: float = 0.3) -> None:
    """Sinkhorn divergence solved to tolerance (a convergence test on numbers every
    iteration), online or multiscale, vs POT's three converged problems and vs numpy."""
    x, y = clouds(n, m, seed=1)
    loss = SamplesLoss("sinkhorn", p=2, blur=blur, scaling=0.7, backend=backend, tol=1e-10)
    with lazymat_dask.config(persist=True, chunk_rows=rows):
        value = float(loss(chunked(x, rows), chunked(y, rows)))
    a, b = np.full(n, 1 / n), np.full(m, 1 / m)
    eps = blur**2
    ref = entropic_ot(a, x, b, y, eps) - (entropic_ot(a, x, a, x, eps) + entropic_ot(b, y, b, y, eps)) / 2
    close(value, ref, 1e-7, f"converged {backend} Sinkhorn divergence vs POT")
    close(value, float(loss(x, y)), 1e-12, f"converged {backend} Sinkhorn divergence vs numpy in one process")


def check_balanced_ot(n: int, m: int, rows: int, blur: float = 0.3) -> None:
    """sinkhorn() (no debiasing, tol) on dask vs POT's converged plan value and vs numpy."""
    x, y = clouds(n, m, seed=2)
    rng = np.random.default_rng(3)
    a, b = rng.random(n) + 0.1, rng.random(m) + 0.1
    a, b = a / a.sum(), b / b.sum()
    kw: dict[str, Any] = {"blur": blur, "debias": False, "scaling": 0.8, "tol": 1e-11}
    r = sinkhorn(chunked(x, rows), chunked(y, rows), chunked(a, rows), chunked(b, rows), **kw)
    assert r.converged
    value = float(r.value)
    close(value, entropic_ot(a, x, b, y, blur**2), 1e-7, "entropic OT vs POT")
    close(value, float(sinkhorn(x, y, a, b, **kw).value), 1e-12, "entropic OT vs numpy in one process")


def check_kernel_ridge(n: int, rows: int, rank: int) -> None:
    """cg with a rank-``rank`` Nystrom preconditioner (randomly pivoted Cholesky: one kernel
    column and three numbers read per pivot) on dask vs numpy's dense solve and vs numpy cg."""
    import lazymat as lm

    rng = np.random.default_rng(4)
    x, b = rng.random((n, 2)), rng.standard_normal((n, 1))
    alpha = 0.1

    def kernel(p: Any) -> Any:
        return (-lm.Vi(p).sqdist(lm.Vj(p)) / 0.05).exp()

    with lazymat_dask.config(persist=True):
        K_dask = kernel(chunked(x, rows))
        sol, info = cg(
            K_dask, chunked(b, rows), alpha=alpha, precond=nystrom(K_dask, alpha, rank=rank), tol=1e-12
        )
        sol = sol.compute()
    assert info.converged
    K = np.exp(-((x[:, None, :] - x[None, :, :]) ** 2).sum(-1) / 0.05)
    exact = np.linalg.solve(K + alpha * np.eye(n), b)
    close(sol, exact, 1e-8, "kernel ridge regression vs numpy's dense solve")
    here, _ = cg(kernel(x), b, alpha=alpha, precond=nystrom(kernel(x), alpha, rank=rank), tol=1e-12)
    np.testing.assert_allclose(sol, here, rtol=0, atol=1e-12 * np.abs(here).max(), err_msg="vs numpy cg")


def euler_shooting(q: np.ndarray, p: np.ndarray, scale: float, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense explicit Euler for H = 1/2 sum_ij exp(-|q_i - q_j|^2 / s^2) <p_i, p_j>."""
    for _ in range(steps):
        diff = q[:, None, :] - q[None, :, :]
        k = np.exp(-(diff**2).sum(-1) / scale**2)
        dq = k @ p
        dp = (2 / scale**2) * ((k * (p @ p.T))[:, :, None] * diff).sum(1)
        q, p = q + dq / steps, p + dp / steps
    return q, p


def check_shooting(n: int, rows: int) -> None:
    rng = np.random.default_rng(5)
    q, p = rng.random((n, 3)), 0.1 * rng.standard_normal((n, 3))
    with lazymat_dask.config(persist=True):
        q1, p1 = shoot(chunked(q, rows), chunked(p, rows), gaussian(0.3), steps=6)
        held(q1, "shooting q1")
        held(p1, "shooting p1")
        q1, p1 = dask.compute(q1, p1)
    ref_q, ref_p = euler_shooting(q, p, 0.3, 6)
    close(q1, ref_q, 1e-12, "shooting q1 vs a dense Euler integrator")
    close(p1, ref_p, 1e-11, "shooting p1 vs a dense Euler integrator")
    here_q, here_p = shoot(q, p, gaussian(0.3), steps=6)
    close(q1, here_q, 1e-12, "shooting q1 vs numpy in one process")
    close(p1, here_p, 1e-12, "shooting p1 vs numpy in one process")


@pytest.mark.parametrize("results", ["lazy", "persist"])
def test_samples_loss_and_gradient(results: str) -> None:
    check_samples_loss(230, 170, 60, results)


@pytest.mark.parametrize("backend", ["online", "multiscale"])
def test_converged_sinkhorn_divergence(backend: str) -> None:
    check_converged_sinkhorn(150, 120, 50, backend)


def test_balanced_entropic_ot() -> None:
    check_balanced_ot(90, 70, 30)


def test_kernel_ridge_regression_with_nystrom() -> None:
    check_kernel_ridge(240, 70, 60)


def test_hamiltonian_shooting() -> None:
    check_shooting(160, 45)
