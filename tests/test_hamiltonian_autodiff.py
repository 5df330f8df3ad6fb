"""Geodesic shooting differentiated end to end by torch and jax (gradients of gradients of
reductions), against a dense float64 implementation differentiated by the same library;
the symbolic adjoint on torch; registration through a library's value_and_grad."""

from __future__ import annotations

import numpy as np
import pytest

import lazymat as lm
from lazymat.solvers.hamiltonian_flow import SCHEMES, shoot, shoot_with_adjoint
from lazymat.solvers.kernels import cauchy, gaussian
from lazymat.solvers.registration import KernelNormLoss, register

N = 200
KERNEL = 1 + cauchy(0.2) + gaussian(0.5)
needs_torch = pytest.mark.skipif("torch" not in lm.backends(), reason="lazymat-torch is not installed")
needs_jax = pytest.mark.skipif("jax" not in lm.backends(), reason="lazymat-jax is not installed")


def dense_shoot(energy, grad, q, p, steps, method):
    """Textbook partitioned Runge-Kutta on dense matrices; grad(H) from the library."""
    scheme, h = SCHEMES[method], 1.0 / steps

    def f(q, p):
        gq, gp = grad(energy, q, p)
        return gp, -gq

    y = (q, p)
    for _ in range(steps):
        ks = []
        for row in scheme.a:
            ys = tuple(y[c] + sum(h * w[c] * k[c] for w, k in zip(row, ks, strict=False)) for c in (0, 1))
            ks.append(f(*ys))
        y = tuple(y[c] + sum(h * w[c] * k[c] for w, k in zip(scheme.b, ks, strict=True)) for c in (0, 1))
    return y


def data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((N, 2)), 0.1 * rng.standard_normal((N, 2)), rng.standard_normal((N, 2))


@needs_torch
@pytest.mark.parametrize("method", ["euler", "rk4", "leapfrog"])
def test_torch_shooting_gradients_match_dense(method):
    import torch

    q0, p0, c0 = data()
    q = torch.tensor(q0, requires_grad=True)
    p = torch.tensor(p0, requires_grad=True)
    c = torch.tensor(c0)

    def energy(q, p):
        d2 = ((q[:, None] - q[None]) ** 2).sum(-1)
        K = 1 + 1 / (1 + d2 / 0.04) + torch.exp(-d2 / 0.25)
        return 0.5 * (p * (K @ p)).sum()

    def grad(energy, q, p):
        return torch.autograd.grad(energy(q, p), (q, p), create_graph=True)

    def loss(q1, p1):
        return (c * q1).sum() + 0.5 * (q1**2).sum() + (p1**2).sum()

    q1, p1 = shoot(q, p, KERNEL, steps=2, method=method)
    ours = torch.autograd.grad(loss(q1, p1), (q, p))
    rq, rp = dense_shoot(energy, grad, q, p, 2, method)
    ref = torch.autograd.grad(loss(rq, rp), (q, p))
    torch.testing.assert_close(q1, rq, rtol=1e-12, atol=1e-12)
    for g, r in zip(ours, ref, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-11 * float(r.abs().max()))
    # the backend-neutral adjoint gives the same gradient
    with torch.no_grad():
        _, _, vjp = shoot_with_adjoint(q.detach(), p.detach(), KERNEL, 2, method)
        adj = vjp(c + q1.detach(), 2 * p1.detach())
    for g, r in zip(adj, ref, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-11 * float(r.abs().max()))


@needs_torch
def test_torch_registration_with_autograd():
    import torch

    def value_and_grad(f):
        def vg(x):
            x = x.detach().requires_grad_(True)
            v = f(x)
            (g,) = torch.autograd.grad(v, x)
            return v.detach(), g

        return vg

    t = torch.linspace(0, 2 * np.pi, 41, dtype=torch.float64)[:-1]
    source = 0.5 * torch.stack([torch.cos(t), torch.sin(t)], 1)
    p_true = 0.3 * torch.stack([torch.cos(2 * t), torch.zeros_like(t)], 1)
    target, _ = shoot(source, p_true, gaussian(0.5), steps=5)
    loss = KernelNormLoss(gaussian(0.3))
    auto = register(
        source, target, gaussian(0.5), loss, gamma=1e-3, steps=5, maxiter=30, value_and_grad=value_and_grad
    )
    assert auto.loss <= 0.1 * auto.initial_loss
    symbolic = register(source, target, gaussian(0.5), loss, gamma=1e-3, steps=5, maxiter=30)
    # same objective, same gradients up to round-off: L-BFGS follows the same path
    np.testing.assert_allclose(symbolic.info.values[:5], auto.info.values[:5], rtol=1e-8)


@needs_jax
def test_jax_shooting_gradients_match_dense():
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    q0, p0, c0 = data(1)
    n = 60
    q, p, c = jnp.asarray(q0[:n]), jnp.asarray(p0[:n]), jnp.asarray(c0[:n])

    def energy(q, p):
        d2 = jnp.sum((q[:, None] - q[None]) ** 2, -1)
        K = 1 + 1 / (1 + d2 / 0.04) + jnp.exp(-d2 / 0.25)
        return 0.5 * jnp.sum(p * (K @ p))

    def grad(energy, q, p):
        return jax.grad(energy, argnums=(0, 1))(q, p)

    def ours(q, p):
        q1, _ = shoot(q, p, KERNEL, steps=2, method="rk4")
        return jnp.sum(c * q1) + 0.5 * jnp.sum(q1**2)

    def dense(q, p):
        q1, _ = dense_shoot(energy, grad, q, p, 2, "rk4")
        return jnp.sum(c * q1) + 0.5 * jnp.sum(q1**2)

    got = jax.grad(ours, argnums=(0, 1))(q, p)
    ref = jax.grad(dense, argnums=(0, 1))(q, p)
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(
            np.asarray(g), np.asarray(r), rtol=1e-10, atol=1e-11 * float(jnp.abs(r).max())
        )
