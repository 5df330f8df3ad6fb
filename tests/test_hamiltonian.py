"""Kernel Hamiltonian flows on numpy: kernels, H and its gradients, shooting and flows
against a dense float64 implementation written here from the textbook formulas, the adjoint
sweep against finite differences, energy conservation, registration, and bad input."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import lazymat as lm
from lazymat.solvers.hamiltonian_flow import HamiltonianField, flow, hamiltonian, shoot, shoot_with_adjoint
from lazymat.solvers.kernels import cauchy, gaussian
from lazymat.solvers.lbfgs_minimizer import lbfgs
from lazymat.solvers.registration import KernelNormLoss, lddmm_value_and_grad, register

N = 200
KERNEL = 1 + cauchy(0.2) + gaussian(0.5)


# -- dense reference: k(d2) = 1 + 1/(1 + d2/0.04) + exp(-d2/0.25) ---------------------------
def k_dense(d2):
    return 1 + 1 / (1 + d2 / 0.04) + np.exp(-d2 / 0.25)


def dk_dense(d2):  # derivative of the profile in d2
    return -(1 / 0.04) / (1 + d2 / 0.04) ** 2 - np.exp(-d2 / 0.25) / 0.25


def sq(a, b):
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def h_dense(q, p):
    return 0.5 * np.sum(p * (k_dense(sq(q, q)) @ p))


def field_dense(q, p):
    """(dq/dt, dp/dt) = (K p, -dH/dq), dH/dq_i = sum_j k'(d2_ij) 2 (q_i - q_j) <p_i, p_j>."""
    w = dk_dense(sq(q, q)) * (p @ p.T)
    dHdq = 2 * (w.sum(1)[:, None] * q - w @ q)
    return k_dense(sq(q, q)) @ p, -dHdq


def shoot_dense(q, p, steps, method, x=None):
    h = 1.0 / steps

    def f(q, p, x):
        dq, dp = field_dense(q, p)
        dx = None if x is None else k_dense(sq(x, q)) @ p
        return dq, dp, dx

    def add(y, c, k):
        return tuple(None if a is None else a + c * b for a, b in zip(y, k, strict=True))

    y = (q, p, x)
    for _ in range(steps):
        if method == "euler":
            y = add(y, h, f(*y))
        elif method == "rk4":
            k1 = f(*y)
            k2 = f(*add(y, h / 2, k1))
            k3 = f(*add(y, h / 2, k2))
            k4 = f(*add(y, h, k3))
            for c, kk in zip((1, 2, 2, 1), (k1, k2, k3, k4), strict=True):
                y = add(y, h * c / 6, kk)
        else:  # generalised Stormer-Verlet, one fixed-point iteration per implicit equation
            q0, p0, x0 = y
            ph = p0 + h / 2 * f(q0, p0, x0)[1]
            ph = p0 + h / 2 * f(q0, ph, x0)[1]
            v0 = f(q0, ph, x0)
            q1 = q0 + h * v0[0]
            x1 = None if x0 is None else x0 + h * v0[2]
            v1 = f(q1, ph, x1)
            q1 = q0 + h / 2 * (v0[0] + v1[0])
            x1 = None if x0 is None else x0 + h / 2 * (v0[2] + v1[2])
            y = (q1, ph + h / 2 * f(q1, ph, x1)[1], x1)
    return y


@pytest.fixture(scope="module")
def state():
    rng = np.random.default_rng(0)
    return rng.random((N, 2)), 0.1 * rng.standard_normal((N, 2))


def test_kernels_match_dense():
    rng = np.random.default_rng(1)
    x, y = rng.random((30, 2)), rng.random((20, 2))
    b = rng.standard_normal((20, 1))
    for kernel, dense in [
        (gaussian(0.3), lambda d2: np.exp(-d2 / 0.09)),
        (cauchy(0.3), lambda d2: 1 / (1 + d2 / 0.09)),
        (KERNEL, k_dense),
        (2 * gaussian(0.1) + 0.5, lambda d2: 2 * np.exp(-d2 / 0.01) + 0.5),
    ]:
        np.testing.assert_allclose(kernel(lm.Vi(x), lm.Vj(y)) @ b, dense(sq(x, y)) @ b, rtol=1e-12)
    assert repr(KERNEL) == "1 + 1*cauchy(0.2) + 1*gaussian(0.5)"
    with pytest.raises(ValueError, match="scale > 0"):
        gaussian(0.0)
    with pytest.raises(ValueError, match=">= 0"):
        gaussian(1.0) * -1.0


def test_hamiltonian_and_gradients(state):
    q, p = state
    np.testing.assert_allclose(hamiltonian(q, p, KERNEL), h_dense(q, p), rtol=1e-12)
    dHdq, dHdp = HamiltonianField(KERNEL, q, p).gradients(q, p)
    ref_dq, ref_dp = field_dense(q, p)
    np.testing.assert_allclose(dHdp, ref_dq, rtol=1e-11)
    np.testing.assert_allclose(-dHdq, ref_dp, rtol=1e-10, atol=1e-12)
    # and against finite differences of the dense Hamiltonian, a few coordinates
    for i, d in [(0, 0), (17, 1), (123, 0)]:
        e = np.zeros_like(q)
        e[i, d] = 1e-6
        fd = (h_dense(q + e, p) - h_dense(q - e, p)) / 2e-6
        assert abs(dHdq[i, d] - fd) <= 1e-6 * max(1.0, abs(fd))


@pytest.mark.parametrize("method", ["euler", "rk4", "leapfrog"])
def test_shoot_and_flow_match_dense(state, method):
    q, p = state
    x = np.random.default_rng(2).random((50, 2))
    q1, p1 = shoot(q, p, KERNEL, steps=4, method=method)
    rq, rp, rx = shoot_dense(q, p, 4, method, x)
    np.testing.assert_allclose(q1, rq, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(p1, rp, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(flow(x, q, p, KERNEL, steps=4, method=method), rx, rtol=1e-11, atol=1e-12)
    qs, ps = shoot(q, p, KERNEL, steps=4, method=method, trajectory=True)
    assert len(qs) == len(ps) == 5
    np.testing.assert_allclose(qs[-1], q1)


def test_rk4_conserves_the_hamiltonian(state):
    q, p = state[0], 0.2 * state[1]  # points move by ~0.3 in the unit square
    qs, ps = shoot(q, p, KERNEL, steps=10, method="rk4", trajectory=True)
    h0 = h_dense(q, p)
    drift = max(abs(h_dense(a, b) - h0) for a, b in zip(qs, ps, strict=True)) / h0
    assert drift <= 1e-6, drift
    # the points did move: conservation is not trivial
    assert np.abs(qs[-1] - q).max() > 0.05


@pytest.mark.parametrize("method", ["euler", "rk4", "leapfrog"])
def test_adjoint_matches_finite_differences(method):
    rng = np.random.default_rng(3)
    n = 15
    q, p = rng.random((n, 2)), 0.3 * rng.standard_normal((n, 2))
    cq, cp = rng.standard_normal((n, 2)), rng.standard_normal((n, 2))
    _, _, vjp = shoot_with_adjoint(q, p, KERNEL, steps=3, method=method)
    gq, gp = vjp(cq, cp)

    def f(q, p):
        rq, rp, _ = shoot_dense(q, p, 3, method)
        return np.sum(cq * rq) + np.sum(cp * rp)

    for i, d in [(0, 0), (7, 1), (14, 1)]:
        e = np.zeros_like(q)
        e[i, d] = 1e-6
        assert abs(gq[i, d] - (f(q + e, p) - f(q - e, p)) / 2e-6) <= 1e-6
        assert abs(gp[i, d] - (f(q, p + e) - f(q, p - e)) / 2e-6) <= 1e-6


def test_kernel_norm_loss_gradient():
    rng = np.random.default_rng(4)
    x, y = rng.random((25, 2)), rng.random((30, 2)) + 0.2
    loss = KernelNormLoss(gaussian(0.3))

    def dense(x):
        def kk(a, b):
            return np.exp(-sq(a, b) / 0.09)

        n, m = len(x), len(y)
        return kk(x, x).sum() / (2 * n * n) - kk(x, y).sum() / (n * m) + kk(y, y).sum() / (2 * m * m)

    value, grad = loss.value_and_grad(x, y)
    np.testing.assert_allclose(value, dense(x), rtol=1e-12)
    for i, d in [(0, 0), (11, 1), (24, 0)]:
        e = np.zeros_like(x)
        e[i, d] = 1e-6
        np.testing.assert_allclose(grad[i, d], (dense(x + e) - dense(x - e)) / 2e-6, rtol=1e-6, atol=1e-10)


def test_lbfgs_on_a_quadratic():
    """Against SciPy's solve: the minimiser of 1/2 x^T A x - b^T x."""
    rng = np.random.default_rng(5)
    M = rng.standard_normal((20, 20))
    A = M @ M.T + 20 * np.eye(20)
    b = rng.standard_normal(20)
    x, info = lbfgs(
        lambda x: (0.5 * x @ A @ x - b @ x, A @ x - b), np.zeros(20), maxiter=200, gtol=1e-10, ftol=0.0
    )
    assert info.converged
    ref = np.linalg.solve(A, b)
    np.testing.assert_allclose(x, ref, rtol=0, atol=1e-8 * np.abs(ref).max())


def test_registration_recovers_a_known_deformation():
    t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    source = 0.5 * np.stack([np.cos(t), np.sin(t)], 1)
    p_true = 0.3 * np.stack([np.cos(2 * t), np.zeros_like(t)], 1)
    kernel = gaussian(0.5)
    target, _ = shoot(source, p_true, kernel, steps=5)
    loss = KernelNormLoss(gaussian(0.3))
    result = register(source, target, kernel, loss, gamma=1e-3, steps=5, maxiter=30)
    assert result.loss <= 0.1 * result.initial_loss, (result.loss, result.initial_loss)
    assert result.info.values[-1] < result.info.values[0]
    # the deformed curve lies on the target curve: mean distance to the nearest target point
    before = np.sqrt(sq(source, target).min(1)).mean()
    after = np.sqrt(sq(result.points, target).min(1)).mean()
    assert after <= 0.6 * before, (after, before)


def test_registration_gradient_matches_finite_differences():
    """The symbolic gradient of gamma H(q0, p0) + loss(q1, target) that register uses, against
    finite differences of the same objective computed densely."""
    rng = np.random.default_rng(6)
    source, target = rng.random((12, 2)), rng.random((15, 2))
    gamma, p0 = 0.05, 0.2 * rng.standard_normal((12, 2))
    loss = KernelNormLoss(KERNEL)

    def objective(p):
        q1 = shoot_dense(source, p, 3, "rk4")[0]
        n, m = len(q1), len(target)
        mmd = (
            k_dense(sq(q1, q1)).sum() / (2 * n * n)
            - k_dense(sq(q1, target)).sum() / (n * m)
            + k_dense(sq(target, target)).sum() / (2 * m * m)
        )
        return gamma * h_dense(source, p) + mmd

    value, grad = lddmm_value_and_grad(source, target, KERNEL, loss, gamma, 3, "rk4")(p0)
    np.testing.assert_allclose(value, objective(p0), rtol=1e-12)
    for i, d in [(0, 0), (5, 1), (11, 0)]:
        e = np.zeros_like(p0)
        e[i, d] = 1e-6
        fd = (objective(p0 + e) - objective(p0 - e)) / 2e-6
        np.testing.assert_allclose(grad[i, d], fd, rtol=1e-5, atol=1e-9)


def test_bad_input(state):
    q, p = state
    with pytest.raises(ValueError, match="shape of the points"):
        shoot(q, p[:-1], KERNEL)
    with pytest.raises(ValueError, match="shape of the points"):
        hamiltonian(q, p[:, :1], KERNEL)
    with pytest.raises(ValueError, match="method"):
        shoot(q, p, KERNEL, method="midpoint")
    with pytest.raises(ValueError, match="steps"):
        shoot(q, p, KERNEL, steps=0)
    with pytest.raises(ValueError, match=r"points must have shape \(M, 2\)"):
        flow(np.ones((5, 3)), q, p, KERNEL)
    with pytest.raises(TypeError, match="dtypes"):
        shoot(q, p.astype(np.float32), KERNEL)
    with pytest.raises(TypeError, match="scalar LazyMatrix"):
        shoot(q, p, lambda x, y: x - y)
    with pytest.raises(TypeError, match="value_and_grad"):
        register(q, q, KERNEL, lambda x, y: float(np.sum((x - y) ** 2)))
    with pytest.raises(ValueError, match="target"):
        register(q, np.ones((4, 3)), KERNEL, KernelNormLoss(KERNEL))


def test_lddmm_example(tmp_path):
    path = Path(__file__).resolve().parents[1] / "examples" / "lddmm.py"
    spec = importlib.util.spec_from_file_location("lddmm_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    r = module.run(n=30, out=str(tmp_path / "lddmm.png"), steps=4, maxiter=20)
    assert r["loss"] <= 0.1 * r["initial_loss"], r
    assert (tmp_path / "lddmm.png").stat().st_size > 0
