"""The KeOps snippets of lazymat's seed material, run with ``lazymat.keops`` against dense torch.

- the hyperbolic (half-space) kernel ``D_ij / (x_i[..., 0] * x_j[..., 0])``, with KeOps'
  ``[..., k]`` indexing, and its gradient;
- the legacy ``kernel_product(k, x, y, b)`` and ``kernel_product(k, (x, u), (y, v), b)``
  with ``Kernel("gaussian(x,y) * linear(u,v)**2")`` and ``gamma``;
- the kernel-norm Hamiltonian of LDDMM, ``H(q, p) = .5 * <p, kernel_product(k, q, q, p)>``,
  its gradient and its grad of grad (Hamilton's equations and their linearisation).

The oracles are the same formulas on the dense N-by-N matrix in float64 torch.
"""

from __future__ import annotations

import pytest
import torch

from lazymat.keops.torch import Kernel, LazyTensor, kernel_product

F64 = torch.float64


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape, (a.shape, b.shape)
    torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)


def _points(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, dtype=F64, generator=torch.Generator().manual_seed(seed))


def test_hyperbolic_half_space_kernel_with_ellipsis_indexing() -> None:
    x = _points(40, 3, 0)
    x[:, 0] = x[:, 0].abs() + 0.5  # the upper half-space
    x.requires_grad_(True)
    b = _points(40, 2, 1)

    x_i, x_j = LazyTensor(x[:, None, :]), LazyTensor(x[None, :, :])
    D_ij = ((x_i - x_j) ** 2).sum(-1)
    K_ij = (-D_ij / (x_i[..., 0] * x_j[..., 0])).exp()
    got = K_ij @ b

    D = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    ref = torch.exp(-D / (x[:, None, 0] * x[None, :, 0])) @ b
    _close(got, ref)
    (g_got,) = torch.autograd.grad((got**2).sum(), x)
    (g_ref,) = torch.autograd.grad((ref**2).sum(), x)
    _close(g_got, g_ref)


def test_kernel_product_of_one_gaussian() -> None:
    x, y, b = _points(30, 3, 2), _points(25, 3, 3), _points(25, 2, 4)
    params = {"id": Kernel("gaussian(x,y)"), "gamma": torch.tensor([0.7], dtype=F64)}
    got = kernel_product(params, x, y, b)
    ref = torch.exp(-0.7 * ((x[:, None] - y[None]) ** 2).sum(-1)) @ b
    _close(got, ref)


def test_kernel_product_of_a_product_of_kernels_on_pairs_of_points() -> None:
    x, y, b = _points(30, 3, 5), _points(25, 3, 6), _points(25, 1, 7)
    u, v = _points(30, 2, 8), _points(25, 2, 9)
    params = {"id": Kernel("gaussian(x,y) * linear(u,v)**2"), "gamma": (torch.tensor([0.5], dtype=F64), None)}
    got = kernel_product(params, (x, u), (y, v), b)
    ref = (torch.exp(-0.5 * ((x[:, None] - y[None]) ** 2).sum(-1)) * (u @ v.T) ** 2) @ b
    _close(got, ref)
    # gammas may also list the kernels that take one only
    params["gamma"] = torch.tensor([0.5], dtype=F64)
    _close(kernel_product(params, (x, u), (y, v), b), ref)


@pytest.mark.parametrize(
    "name",
    ["gaussian", "laplacian", "cauchy", "inverse_multiquadric", "distance", "linear"],
)
def test_every_legacy_kernel_name(name: str) -> None:
    x, y, b = _points(12, 2, 10), _points(9, 2, 11), _points(9, 1, 12)
    g = 0.8
    r2 = g * ((x[:, None] - y[None]) ** 2).sum(-1)
    dense = {
        "gaussian": torch.exp(-r2),
        "laplacian": torch.exp(-r2.sqrt()),
        "cauchy": 1 / (1 + r2),
        "inverse_multiquadric": 1 / (1 + r2).sqrt(),
        "distance": r2.sqrt(),
        "linear": x @ y.T,
    }[name]
    gamma = None if name == "linear" else torch.tensor([g], dtype=F64)
    _close(kernel_product({"id": Kernel(f"{name}(x,y)"), "gamma": gamma}, x, y, b), dense @ b)


def test_kernel_norm_hamiltonian_and_its_grad_of_grad() -> None:
    """H(q, p) = 1/2 <p, K(q, q) p>: Hamilton's equations (dH/dp, -dH/dq) and the derivative
    of dH/dq along a vector w (what a shooting method differentiates)."""
    q = _points(20, 2, 13).requires_grad_(True)
    p = _points(20, 2, 14).requires_grad_(True)
    w = _points(20, 2, 15)
    gamma = torch.tensor([1 / 0.25**2], dtype=F64)
    k = {"id": Kernel("gaussian(x,y)"), "gamma": gamma}

    def hamiltonian_keops(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return 0.5 * (p * kernel_product(k, q, q, p)).sum()

    def hamiltonian_dense(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        K = torch.exp(-gamma * ((q[:, None] - q[None]) ** 2).sum(-1))
        return 0.5 * (p * (K @ p)).sum()

    results = []
    for H in (hamiltonian_keops, hamiltonian_dense):
        value = H(q, p)
        dq, dp = torch.autograd.grad(value, (q, p), create_graph=True)
        dqq, dqp = torch.autograd.grad((dq * w).sum(), (q, p))
        results.append((value, dq, dp, dqq, dqp))
    for got, ref in zip(*results, strict=True):
        _close(got, ref)
