"""The normalised cometric K_mu = diag(l) K diag(l): the scaling field against a dense
float64 Newton solve in numpy, H and its gradients (through l(q)) against dense float64
torch autograd, H conserved along rk4, carried points against the dense velocity formula,
shooting gradients on torch (dense autograd, finite differences) and jax (finite
differences), and bad input."""

from __future__ import annotations

import numpy as np
import pytest

import lazymat as lm
from lazymat.solvers import cauchy, flow, gaussian, hamiltonian, normalized, shoot, shoot_with_adjoint
from lazymat.solvers.hamiltonian_flow import make_field

N = 40
KERNEL = gaussian(0.3) + cauchy(0.5)
needs_torch = pytest.mark.skipif("torch" not in lm.backends(), reason="lazymat-torch is not installed")
needs_jax = pytest.mark.skipif("jax" not in lm.backends(), reason="lazymat-jax is not installed")


def k_dense(d2, lib=np):
    return lib.exp(-d2 / 0.09) + 1 / (1 + d2 / 0.25)


def sq(a, b):
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def scaling_newton(q, mu):
    """l with l (K (l mu)) = 1 by Newton's method on dense float64 matrices."""
    K = k_dense(sq(q, q))
    lam = 1 / np.sqrt(K @ mu)
    for _ in range(50):
        F = lam * (K @ (lam * mu)) - 1
        J = np.diag(K @ (lam * mu)) + lam[:, None] * K * mu[None, :]
        lam = lam - np.linalg.solve(J, F)
    assert np.abs(lam * (K @ (lam * mu)) - 1).max() < 1e-13
    return lam


def data(seed=0, scale=0.02):
    rng = np.random.default_rng(seed)
    q = rng.random((N, 2))
    mu = rng.random(N) + 0.5
    return q, scale * rng.standard_normal((N, 2)), mu / mu.sum()


def test_scaling_matches_dense_newton():
    q, p, mu = data()
    for weights, ref_mu in ((mu, mu), (None, np.full(N, 1 / N))):
        lam = make_field(normalized(KERNEL, weights), q, p).scaling(q)
        np.testing.assert_allclose(lam[:, 0], scaling_newton(q, ref_mu), rtol=1e-8)


# -- dense float64 torch reference: l(q) by Newton steps on the graph (exact derivatives) ----
def torch_dense_energy(mu):
    import torch

    def energy(q, p):
        K = k_dense(sq(q, q), torch)
        lam = torch.as_tensor(scaling_newton(q.detach().numpy(), mu))
        mu_t = torch.as_tensor(mu)
        for _ in range(2):  # from the root: exact first and second derivatives of l(q)
            F = lam * (K @ (lam * mu_t)) - 1
            J = torch.diag(K @ (lam * mu_t)) + lam[:, None] * K * mu_t[None, :]
            lam = lam - torch.linalg.solve(J, F)
        u = lam[:, None] * p
        return 0.5 * (u * (K @ u)).sum()

    return energy


def torch_dense_shoot(energy, q, p, steps, method):
    import torch

    def f(q, p):
        gq, gp = torch.autograd.grad(energy(q, p), (q, p), create_graph=True)
        return gp, -gq

    h = 1.0 / steps
    for _ in range(steps):
        if method == "euler":
            dq, dp = f(q, p)
            q, p = q + h * dq, p + h * dp
        else:
            k1 = f(q, p)
            k2 = f(q + h / 2 * k1[0], p + h / 2 * k1[1])
            k3 = f(q + h / 2 * k2[0], p + h / 2 * k2[1])
            k4 = f(q + h * k3[0], p + h * k3[1])
            q = q + h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
            p = p + h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
    return q, p


@needs_torch
def test_hamiltonian_and_gradients_match_dense_torch():
    import torch

    q, p, mu = data(scale=0.5)
    cometric = normalized(KERNEL, mu)
    qt, pt = (torch.tensor(a, requires_grad=True) for a in (q, p))
    H = torch_dense_energy(mu)(qt, pt)
    gq, gp = torch.autograd.grad(H, (qt, pt))
    np.testing.assert_allclose(hamiltonian(q, p, cometric), H.item(), rtol=1e-10)
    ours_q, ours_p = make_field(cometric, q, p).gradients(q, p)
    scale = np.abs(gq.numpy()).max()
    np.testing.assert_allclose(ours_q, gq.numpy(), atol=1e-8 * scale)
    np.testing.assert_allclose(ours_p, gp.numpy(), atol=1e-10 * np.abs(gp.numpy()).max())


def test_rk4_conserves_the_hamiltonian():
    q, p, mu = data(scale=0.01)
    cometric = normalized(KERNEL, mu)
    qs, ps = shoot(q, p, cometric, steps=8, method="rk4", trajectory=True)
    energies = np.array([hamiltonian(a, b, cometric) for a, b in zip(qs, ps, strict=True)])
    assert np.abs(qs[-1] - q).max() > 0.05  # the points did move
    np.testing.assert_allclose(energies, energies[0], rtol=1e-6)


def test_carried_points_move_with_the_normalised_velocity():
    q, p, mu = data()
    cometric = normalized(KERNEL, mu)
    x = np.random.default_rng(1).random((25, 2))
    lam = scaling_newton(q, mu)
    k = k_dense(sq(x, q))
    v = (k @ (lam[:, None] * p)) / (k @ (lam * mu))[:, None]
    np.testing.assert_allclose(flow(x, q, p, cometric, steps=1), x + v, atol=1e-10)
    # points placed on q follow q itself (the extension of l agrees with l on the points)
    q1, _ = shoot(q, p, cometric, steps=3, method="rk4")
    np.testing.assert_allclose(flow(q.copy(), q, p, cometric, steps=3, method="rk4"), q1, atol=1e-9)


@needs_torch
@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_torch_shooting_gradients_match_dense_and_finite_differences(method):
    import torch

    q, p, mu = data(scale=0.02)
    target = np.random.default_rng(2).standard_normal((N, 2))
    cometric = normalized(KERNEL, torch.tensor(mu))

    def loss_ours(qt, pt):
        q1, p1 = shoot(qt, pt, cometric, steps=2, method=method)
        return (q1 * torch.tensor(target)).sum() + (p1 * p1).sum()

    qt, pt = (torch.tensor(a, requires_grad=True) for a in (q, p))
    gq, gp = torch.autograd.grad(loss_ours(qt, pt), (qt, pt))
    qd, pd = (torch.tensor(a, requires_grad=True) for a in (q, p))
    q1, p1 = torch_dense_shoot(torch_dense_energy(mu), qd, pd, 2, method)
    dq, dp = torch.autograd.grad((q1 * torch.tensor(target)).sum() + (p1 * p1).sum(), (qd, pd))
    np.testing.assert_allclose(gq.numpy(), dq.numpy(), atol=1e-7 * dq.abs().max().item())
    np.testing.assert_allclose(gp.numpy(), dp.numpy(), atol=1e-7 * dp.abs().max().item())
    # and a directional finite difference of our own forward pass
    rng = np.random.default_rng(3)
    eq, ep = (torch.tensor(rng.standard_normal((N, 2))) for _ in range(2))
    e = 1e-5
    with torch.no_grad():
        fd = (
            loss_ours(torch.tensor(q) + e * eq, torch.tensor(p) + e * ep)
            - loss_ours(torch.tensor(q) - e * eq, torch.tensor(p) - e * ep)
        ) / (2 * e)
    exact = (gq * eq).sum() + (gp * ep).sum()
    assert abs(fd.item() - exact.item()) <= 1e-6 * max(1.0, abs(exact.item()))


@needs_jax
def test_jax_shooting_gradient_matches_finite_differences():
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    q, p, mu = data(scale=0.02)
    target = jnp.asarray(np.random.default_rng(2).standard_normal((N, 2)))
    cometric = normalized(KERNEL, jnp.asarray(mu))

    def loss(qj, pj):
        q1, p1 = shoot(qj, pj, cometric, steps=2, method="euler")
        return jnp.sum(q1 * target) + jnp.sum(p1 * p1)

    gq, gp = jax.grad(loss, argnums=(0, 1))(jnp.asarray(q), jnp.asarray(p))
    rng = np.random.default_rng(3)
    eq, ep = rng.standard_normal((N, 2)), rng.standard_normal((N, 2))
    e = 1e-5
    fd = (
        loss(jnp.asarray(q + e * eq), jnp.asarray(p + e * ep))
        - loss(jnp.asarray(q - e * eq), jnp.asarray(p - e * ep))
    ) / (2 * e)
    exact = float(jnp.sum(gq * eq) + jnp.sum(gp * ep))
    assert abs(float(fd) - exact) <= 1e-6 * max(1.0, abs(exact))


def test_bad_input():
    q, p, mu = data()
    with pytest.raises(ValueError, match=r"weights must have shape \(40,\)"):
        hamiltonian(q, p, normalized(KERNEL, mu[:-1]))
    with pytest.raises(ValueError, match="weights must be positive"):
        hamiltonian(q, p, normalized(KERNEL, -mu))
    with pytest.raises(TypeError, match="weights have dtype"):
        hamiltonian(q, p, normalized(KERNEL, mu.astype(np.float32)))
    with pytest.raises(TypeError, match="weights must be a numpy array"):
        hamiltonian(q, p, normalized(KERNEL, list(mu)))
    with pytest.raises(TypeError, match="expects a kernel"):
        normalized(0.3)
    with pytest.raises(ValueError, match="tol must be > 0"):
        normalized(KERNEL, tol=0.0)
    with pytest.raises(NotImplementedError, match="normalised cometric"):
        shoot_with_adjoint(q, p, normalized(KERNEL), steps=2)
    with pytest.raises(RuntimeError, match="did not converge"):
        hamiltonian(q, p, normalized(KERNEL, maxiter=1))
