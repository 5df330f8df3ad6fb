"""KeOps code runs unchanged but for its import: ``lazymat.LazyTensor`` vs dense numpy, and
vs pykeops itself on torch tensors when the torch plugin is installed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy.special import logsumexp

from lazymat import LazyTensor
from lazymat.plugin_manager import get_registry


def keops_snippet(LazyTensor: Any, x: Any, b: Any, s: float) -> tuple[Any, Any]:
    """The introductory example of the KeOps documentation, verbatim but for the names."""
    N, D = x.shape
    x_i = LazyTensor(x.reshape(N, 1, D))
    x_j = LazyTensor(x.reshape(1, N, D))
    D_ij = ((x_i - x_j) ** 2).sum(dim=2)
    indices_i = D_ij.argmin(dim=1)
    K_ij = (-D_ij / s**2).exp()
    a = K_ij @ b
    return indices_i, a


def test_keops_snippet_on_numpy_matches_dense() -> None:
    rng = np.random.default_rng(0)
    x, b = rng.normal(size=(300, 3)), rng.normal(size=(300, 2))
    s = 0.5
    indices, a = keops_snippet(LazyTensor, x, b, s)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.testing.assert_array_equal(indices[:, 0], d.argmin(1))  # each point is its own neighbour
    np.testing.assert_array_equal(indices[:, 0], np.arange(300))
    np.testing.assert_allclose(a, np.exp(-d / s**2) @ b, rtol=1e-12)


def test_two_clouds_every_reduction_and_dim_spelling() -> None:
    """(N,1,D) and (1,M,D) arrays; dim= as keyword, positional, negative."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 3)), rng.normal(size=(50, 3))
    b = rng.normal(size=(50, 1))
    x_i, y_j = LazyTensor(x[:, None, :]), LazyTensor(y[None, :, :])
    D_ij = ((x_i - y_j) ** 2).sum(-1)  # inner sum with a negative dim
    d = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(D_ij.sum(dim=1)[:, 0], d.sum(1), rtol=1e-12)
    np.testing.assert_allclose(D_ij.sum(0)[:, 0], d.sum(0), rtol=1e-12)
    np.testing.assert_allclose(D_ij.sum(dim=-2)[:, 0], d.sum(1), rtol=1e-12)
    np.testing.assert_allclose(D_ij.sum(dim=-3)[:, 0], d.sum(0), rtol=1e-12)
    np.testing.assert_allclose((-D_ij).logsumexp(dim=1)[:, 0], logsumexp(-d, axis=1), rtol=1e-12)
    np.testing.assert_allclose(D_ij.min(dim=0)[:, 0], d.min(0), rtol=1e-13)
    np.testing.assert_array_equal(D_ij.argmax(dim=1)[:, 0], d.argmax(1))
    np.testing.assert_array_equal(D_ij.argKmin(4, dim=1), np.argsort(d, axis=1, kind="stable")[:, :4])
    np.testing.assert_allclose(D_ij.Kmin(4, dim=0), np.sort(d, axis=0)[:4].T, rtol=1e-13)
    vals, idx = D_ij.Kmin_argKmin(K=2, dim=1)
    np.testing.assert_array_equal(idx, np.argsort(d, axis=1, kind="stable")[:, :2])
    np.testing.assert_allclose(vals, np.sort(d, axis=1)[:, :2], rtol=1e-13)
    K_ij = (-D_ij).exp()
    weights = LazyTensor(b[None, :, :])
    soft = np.exp(-d - logsumexp(-d, axis=1, keepdims=True))
    np.testing.assert_allclose((-D_ij).sumsoftmaxweight(weights, dim=1)[:, 0], soft @ b[:, 0], rtol=1e-12)
    np.testing.assert_allclose((K_ij * weights).sum_reduction(dim=1), np.exp(-d) @ b, rtol=1e-12)


def test_parameters_and_2d_arrays_with_axis() -> None:
    """Parameters as (1,1,D), (D,) or numbers; 2-D arrays with axis=0/1 as in KeOps."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(6, 2)), rng.normal(size=(8, 2))
    w = np.array([0.5, 2.0])
    d = ((w * (x[:, None, :] - y[None, :, :])) ** 2).sum(-1) + 1.5
    for param in (LazyTensor(w[None, None, :]), LazyTensor(w)):
        F = ((param * (LazyTensor(x, axis=0) - LazyTensor(y, axis=1))) ** 2).sum(dim=2) + LazyTensor(1.5)
        np.testing.assert_allclose(F.sum(dim=1)[:, 0], d.sum(1), rtol=1e-13)


def test_batch_dimensions_with_dim() -> None:
    """(B, N, 1, D) and (B, 1, M, D): reduction dims count the batch axis."""
    rng = np.random.default_rng(3)
    B, N, M, D = 3, 7, 11, 2
    x, y = rng.normal(size=(B, N, 1, D)), rng.normal(size=(B, 1, M, D))
    b = rng.normal(size=(B, M, 2))
    x_i, y_j = LazyTensor(x), LazyTensor(y)
    D_ij = ((x_i - y_j) ** 2).sum(dim=3)  # inner dimension is 3 with one batch axis
    d = ((x - y) ** 2).sum(-1)  # (B, N, M)
    np.testing.assert_allclose(D_ij.sum(dim=2)[..., 0], d.sum(2), rtol=1e-12)
    np.testing.assert_allclose(D_ij.sum(dim=1)[..., 0], d.sum(1), rtol=1e-12)
    np.testing.assert_allclose((-D_ij).logsumexp(dim=2)[..., 0], logsumexp(-d, axis=2), rtol=1e-12)
    np.testing.assert_array_equal(D_ij.argmin(dim=2)[..., 0], d.argmin(2))
    np.testing.assert_array_equal(
        D_ij.argKmin(3, dim=1), np.argsort(d, axis=1, kind="stable")[:, :3].swapaxes(1, 2)
    )
    np.testing.assert_allclose((-D_ij).exp() @ b, np.exp(-d) @ b, rtol=1e-12)
    with pytest.raises(ValueError, match=r"dim=0 is not a reduction dimension .* 1 batch"):
        D_ij.sum(dim=0)


def torch_installed() -> bool:
    return "torch" in get_registry().backends


@pytest.mark.slow
@pytest.mark.skipif(not torch_installed(), reason="the torch plugin (lazymat-torch) is not installed")
def test_same_results_as_pykeops_on_torch() -> None:
    """The snippet's kernel product and an argKmin, by lazymat and by pykeops, on torch tensors.

    pykeops compiles each formula on first use (about 30 s each here), so two formulas only.
    """
    torch = pytest.importorskip("torch")
    pykeops_torch = pytest.importorskip("pykeops.torch")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(100, 3, dtype=torch.float64, generator=gen)
    y = torch.randn(120, 3, dtype=torch.float64, generator=gen)
    b = torch.randn(120, 2, dtype=torch.float64, generator=gen)
    results = []
    for LT in (pykeops_torch.LazyTensor, LazyTensor):
        x_i, y_j = LT(x[:, None, :]), LT(y[None, :, :])
        D_ij = ((x_i - y_j) ** 2).sum(dim=2)
        K_ij = (-D_ij / 0.25).exp()
        results.append((K_ij @ b, D_ij.argKmin(3, dim=1)))
    (a_keops, idx_keops), (a_ours, idx_ours) = results
    assert isinstance(a_ours, torch.Tensor) and a_ours.dtype == torch.float64
    torch.testing.assert_close(a_ours, a_keops, rtol=1e-12, atol=1e-14)
    assert torch.equal(idx_ours.to(torch.int64), idx_keops.to(torch.int64))
