"""Implicit-function gradients of the kernel conjugate gradient on torch and jax: against
the autodiff of a dense float64 solve, finite differences, and grad of grad."""

from __future__ import annotations

import numpy as np
import pytest

import lazymat as lm
from lazymat.solvers.conjugate_gradient import cg

N = 40
needs_torch = pytest.mark.skipif("torch" not in lm.backends(), reason="lazymat-torch is not installed")
needs_jax = pytest.mark.skipif("jax" not in lm.backends(), reason="lazymat-jax is not installed")


def data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((N, 2)), rng.standard_normal((N, 2))


@needs_torch
def test_torch_gradients_match_dense_solve():
    import torch

    x0, b0 = data()
    x = torch.tensor(x0, requires_grad=True)
    b = torch.tensor(b0, requires_grad=True)
    s = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    w = torch.tensor(np.random.default_rng(1).standard_normal((N, 2)))

    K = (-lm.Vi(x).sqdist(lm.Vj(x)) / lm.Pm(s)).exp()
    X, info = cg(K, b, alpha=alpha, tol=1e-12)
    assert info.converged
    ours = torch.autograd.grad((w * X).sum() + (X**2).sum(), (x, b, s, alpha))

    D = torch.exp(-((x[:, None] - x[None]) ** 2).sum(-1) / s)
    Y = torch.linalg.solve(D + alpha * torch.eye(N, dtype=torch.float64), b)
    ref = torch.autograd.grad((w * Y).sum() + (Y**2).sum(), (x, b, s, alpha))
    for name, g, r in zip(["x", "b", "s", "alpha"], ours, ref, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-7, atol=1e-9 * float(r.abs().max()), msg=name)


@needs_torch
def test_torch_gradcheck_finite_differences():
    import torch

    x0, b0 = data(2)
    x = torch.tensor(x0[:12], requires_grad=True)
    b = torch.tensor(b0[:12, :1], requires_grad=True)
    alpha = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)

    def solve(x, b, alpha):
        K = (-lm.Vi(x).sqdist(lm.Vj(x)) / 0.5).exp()
        return cg(K, b, alpha=alpha, tol=1e-13, precond="jacobi")[0]

    assert torch.autograd.gradcheck(solve, (x, b, alpha), eps=1e-6, atol=1e-6)


@needs_torch
def test_torch_grad_of_grad():
    import torch

    x0, b0 = data(3)
    x = torch.tensor(x0[:25])
    b = torch.tensor(b0[:25, :1], requires_grad=True)
    alpha = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    K = (-lm.Vi(x).sqdist(lm.Vj(x)) / 0.3).exp()
    D = torch.exp(-((x[:, None] - x[None]) ** 2).sum(-1) / 0.3)

    def second(solve):
        X = solve(b, alpha)
        (g,) = torch.autograd.grad((X**2).sum(), b, create_graph=True)
        return torch.autograd.grad((g**3).sum(), (b, alpha))

    ours = second(lambda b, a: cg(K, b, alpha=a, tol=1e-13)[0])
    ref = second(lambda b, a: torch.linalg.solve(D + a * torch.eye(25, dtype=torch.float64), b))
    for g, r in zip(ours, ref, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-7, atol=1e-9 * float(r.abs().max()))


@needs_torch
def test_torch_batched_and_preconditioned_gradients():
    import torch

    rng = np.random.default_rng(4)
    x = torch.tensor(rng.random((2, 30, 2)), requires_grad=True)
    b = torch.tensor(rng.standard_normal((2, 30, 1)), requires_grad=True)
    K = (-lm.Vi(x).sqdist(lm.Vj(x)) / 0.2).exp()
    X, _ = cg(K, b, alpha=0.05, tol=1e-12, precond="nystrom")
    ours = torch.autograd.grad((X**2).sum(), (x, b))
    D = torch.exp(-((x[..., :, None, :] - x[..., None, :, :]) ** 2).sum(-1) / 0.2)
    Y = torch.linalg.solve(D + 0.05 * torch.eye(30, dtype=torch.float64), b)
    ref = torch.autograd.grad((Y**2).sum(), (x, b))
    for g, r in zip(ours, ref, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-6, atol=1e-8 * float(r.abs().max()))


@needs_jax
def test_jax_gradients_match_dense_solve():
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    x0, b0 = data(5)
    x, b = jnp.asarray(x0), jnp.asarray(b0)

    def ours(x, b, s, alpha):
        K = (-lm.Vi(x).sqdist(lm.Vj(x)) / lm.Pm(s)).exp()
        X = cg(K, b, alpha=alpha, tol=1e-12)[0]
        return jnp.sum(X**2) + jnp.sum(X)

    def dense(x, b, s, alpha):
        D = jnp.exp(-jnp.sum((x[:, None] - x[None]) ** 2, -1) / s)
        Y = jnp.linalg.solve(D + alpha * jnp.eye(N), b)
        return jnp.sum(Y**2) + jnp.sum(Y)

    args = (x, b, jnp.asarray(0.3), jnp.asarray(0.1))
    got = jax.grad(ours, argnums=(0, 1, 2, 3))(*args)
    ref = jax.grad(dense, argnums=(0, 1, 2, 3))(*args)
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(
            np.asarray(g), np.asarray(r), rtol=1e-7, atol=1e-9 * float(jnp.abs(r).max())
        )
