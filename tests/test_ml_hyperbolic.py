"""Hyperbolic distances (lazymat.ml.hyperbolic) against mpmath at 60 digits, on the float64 inputs.

The naive float64 formulas, arccosh(1 + 2|x - y|^2 / ((1 - |x|^2)(1 - |y|^2))) and
arccosh(x_0 y_0 - <x_1:, y_1:>), are written in the tests to show that the tolerances
used here do fail them (near the boundary, and for close points).
"""

from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest

import lazymat as lm
from lazymat.ml import (
    NearestNeighbors,
    halfspace_distance,
    knn,
    lorentz_distance,
    lorentz_to_poincare,
    poincare_distance,
    poincare_to_lorentz,
)

mp.mp.dps = 60


def entries(matrix: lm.LazyMatrix) -> np.ndarray:
    """The (small) symbolic matrix as a dense array: row i is sum_j D_ij e_j."""
    m = matrix.shape[1]
    return np.asarray((matrix * lm.Vj(np.eye(m))).sum(axis=1))


def mp_poincare(a: np.ndarray, b: np.ndarray) -> float:
    a_, b_ = [mp.mpf(float(t)) for t in a], [mp.mpf(float(t)) for t in b]
    sq = sum((p - q) ** 2 for p, q in zip(a_, b_, strict=True))
    na, nb = sum(p * p for p in a_), sum(q * q for q in b_)
    return float(mp.acosh(1 + 2 * sq / ((1 - na) * (1 - nb))))


def sphere(rng: np.random.Generator, n: int, d: int, radius: float) -> np.ndarray:
    u = rng.standard_normal((n, d))
    return u / np.linalg.norm(u, axis=1, keepdims=True) * radius


def naive_poincare(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    sq = ((x[:, None] - y[None]) ** 2).sum(-1)
    return np.arccosh(1 + 2 * sq / ((1 - (x**2).sum(1))[:, None] * (1 - (y**2).sum(1))[None]))


def test_poincare_near_the_boundary_against_mpmath():
    rng = np.random.default_rng(0)
    x = sphere(rng, 6, 3, 1 - 1e-6)
    close = x + rng.standard_normal(x.shape) * 1e-9
    close *= (1 - 1e-6) / np.linalg.norm(close, axis=1, keepdims=True)
    y = np.concatenate([close, sphere(rng, 3, 3, 1 - 1e-6), sphere(rng, 2, 3, 0.3)])
    ref = np.array([[mp_poincare(a, b) for b in y] for a in x])
    ours = entries(poincare_distance(x, y))
    np.testing.assert_allclose(ours, ref, rtol=1e-10)
    assert np.max(np.abs(naive_poincare(x, y) / ref - 1)) > 1e-10  # the naive formula does not make it


def test_poincare_close_points_against_mpmath():
    rng = np.random.default_rng(1)
    x = sphere(rng, 5, 4, 0.5)
    y = x + rng.standard_normal(x.shape) * 1e-9
    ref = np.array([[mp_poincare(a, b) for b in y] for a in x])
    ours = entries(poincare_distance(x, y))
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    assert np.max(np.abs(naive_poincare(x, y) / ref - 1)) > 1e-3


def test_lorentz_and_halfspace_against_mpmath():
    rng = np.random.default_rng(2)
    x = sphere(rng, 5, 3, 0.8) * rng.random((5, 1))
    y = np.concatenate([x + rng.standard_normal(x.shape) * 1e-9, sphere(rng, 4, 3, 0.9)])
    ref = np.array([[mp_poincare(a, b) for b in y] for a in x])
    lx, ly = poincare_to_lorentz(x), poincare_to_lorentz(y)
    # the float64 lift moves close points by ~1e-16: an absolute error on their distance
    np.testing.assert_allclose(entries(lorentz_distance(lx, ly)), ref, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(lorentz_to_poincare(lx), x, atol=1e-15)
    with np.errstate(invalid="ignore"):  # the naive Lorentz form: NaN or 1e-8 off for close points
        naive = np.arccosh(lx[:, None, 0] * ly[None, :, 0] - lx[:, 1:] @ ly[:, 1:].T)
    assert not np.allclose(naive, ref, rtol=1e-10, atol=1e-14)

    hx = np.abs(rng.standard_normal((4, 2))) + 1e-3
    hy = np.concatenate([hx + 1e-10, np.abs(rng.standard_normal((3, 2))) + 0.1])
    ref = np.array(
        [
            [
                float(
                    mp.acosh(
                        1
                        + sum((mp.mpf(p) - mp.mpf(q)) ** 2 for p, q in zip(a, b, strict=True))
                        / (2 * mp.mpf(a[0]) * mp.mpf(b[0]))
                    )
                )
                for b in hy
            ]
            for a in hx
        ]
    )
    np.testing.assert_allclose(entries(halfspace_distance(hx, hy)), ref, rtol=1e-12)


def test_distance_gradient_against_finite_differences():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x, y = sphere(rng, 7, 2, 0.7) * rng.random((7, 1)), sphere(rng, 9, 2, 0.9) * rng.random((9, 1))

    def loss(a: np.ndarray) -> float:
        return float(np.exp(-naive_poincare(a, y)).sum())

    xt = torch.tensor(x, requires_grad=True)
    value = (-poincare_distance(xt, torch.tensor(y))).exp().sum(axis=1).sum()
    (grad,) = torch.autograd.grad(value, xt)
    fd = np.zeros_like(x)
    for i in range(x.shape[0]):
        for d in range(2):
            e = np.zeros_like(x)
            e[i, d] = 1e-6
            fd[i, d] = (loss(x + e) - loss(x - e)) / 2e-6
    assert abs(float(value.detach()) - loss(x)) < 1e-12
    np.testing.assert_allclose(grad.numpy(), fd, rtol=1e-6, atol=1e-9)


def test_hyperbolic_knn_against_dense_reference():
    rng = np.random.default_rng(4)
    x = sphere(rng, 300, 3, 1.0) * rng.random((300, 1)) ** 0.3 * 0.999
    q = sphere(rng, 40, 3, 0.95) * rng.random((40, 1))
    ref = np.array([[mp_poincare(a, b) for b in x[:60]] for a in q[:5]])
    dist, idx = knn(q[:5], x[:60], k=6, metric="poincare")
    np.testing.assert_array_equal(idx, np.argsort(ref, axis=1, kind="stable")[:, :6])
    np.testing.assert_allclose(dist, np.sort(ref, axis=1)[:, :6], rtol=1e-12)
    dense = naive_poincare(q, x)
    dist, idx = knn(q, x, k=8, metric="poincare")
    np.testing.assert_array_equal(idx, np.argsort(dense, axis=1, kind="stable")[:, :8])
    lx, lq = poincare_to_lorentz(x), poincare_to_lorentz(q)
    np.testing.assert_array_equal(knn(lq, lx, k=8, metric="lorentz")[1], idx)


def test_points_outside_the_model_are_refused():
    x = np.array([[0.1, 0.2], [0.6, 0.8], [0.3, 0.0]])  # point 1 on the unit circle
    with pytest.raises(ValueError, match=r"outside the open Poincare ball.*point 1 has \|x\| = 1.0"):
        poincare_distance(x)
    with pytest.raises(ValueError, match="outside the open Poincare ball"):
        knn(x * 2, k=1, metric="poincare")
    with pytest.raises(ValueError, match="outside the open Poincare ball"):
        NearestNeighbors(metric="poincare").fit(x)
    lifted = poincare_to_lorentz(x[[0, 2]])
    lifted[1, 0] *= 1.001
    with pytest.raises(ValueError, match=r"off the hyperboloid.*point 1"):
        lorentz_distance(lifted)
    with pytest.raises(ValueError, match="off the hyperboloid"):
        lorentz_distance(-poincare_to_lorentz(x[[0]]))
    with pytest.raises(ValueError, match="upper half-space"):
        halfspace_distance(np.array([[1.0, 2.0], [0.0, 1.0]]))
