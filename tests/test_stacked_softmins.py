"""Stacked reductions (solvers/stacked_softmins.py) against dense float64 numpy.

Blocks of different sizes are padded into one batched reduction: each block's result must be
the dense soft-min / kernel product of that block alone (padded columns contribute nothing,
padded rows are dropped). The Sinkhorn divergence that runs on the stacked loop is checked
against a dense float64 Sinkhorn written here, with clouds of different sizes (padding).
"""

from __future__ import annotations

import numpy as np
import pytest

import lazymat
import lazymat.solvers.stacked_softmins as st
from lazymat.solvers import sinkhorn
from lazymat.solvers.costs import distance, half_sqdist
from lazymat.solvers.sinkhorn_loop import LOG_ZERO

RNG = np.random.default_rng(7)


def dense_cost(x: np.ndarray, y: np.ndarray, p: int) -> np.ndarray:
    d2 = ((x[:, :, None, :] - y[:, None, :, :]) ** 2).sum(-1)
    return d2 / 2 if p == 2 else np.sqrt(d2)


def dense_softmin(x, y, h, eps, p):
    z = h[:, None, :] - dense_cost(x, y, p) / eps
    top = z.max(-1, keepdims=True)
    return -eps * (top[..., 0] + np.log(np.exp(z - top).sum(-1)))


def blocks_of(shapes, d=2):
    return [
        (RNG.normal(size=(b, n, d)), RNG.normal(size=(b, m, d)), RNG.normal(size=(b, m)), LOG_ZERO)
        for b, n, m in shapes
    ]


@pytest.mark.parametrize("p", [1, 2])
def test_softmins_of_padded_blocks_match_dense(p):
    blocks = blocks_of([(2, 7, 5), (2, 3, 11), (2, 9, 9)])
    out = st.stacked_softmins(np, half_sqdist if p == 2 else distance, blocks, 0.3)
    for (x, y, h, _), got in zip(blocks, out, strict=True):
        assert got.shape == (x.shape[0], x.shape[1])
        np.testing.assert_allclose(got, dense_softmin(x, y, h, 0.3, p), rtol=1e-12, atol=1e-12)


def test_kernel_products_of_padded_blocks_match_dense():
    blocks = [(x, y, w, 0.0) for x, y, w, _ in blocks_of([(1, 6, 4), (1, 2, 8), (1, 5, 5)])]

    def gaussian(x, y):
        return (-x.sqdist(y) / 0.5).exp()

    out = st.stacked_kernel_products(np, gaussian, blocks)
    for (x, y, w, _), got in zip(blocks, out, strict=True):
        k = np.exp(-((x[:, :, None, :] - y[:, None, :, :]) ** 2).sum(-1) / 0.5)
        np.testing.assert_allclose(got, (k * w[:, None, :]).sum(-1), rtol=1e-12)


def test_worth_stacking():
    assert not st.worth_stacking([(1, 10, 10)])  # one block: nothing to stack
    assert st.worth_stacking([(1, 10, 10), (1, 20, 5)])  # small: fixed costs dominate
    big = 10 * st.SMALL_PAIRS
    assert st.worth_stacking([(1, big, 1), (1, big, 1)])  # same sizes: no padding
    assert not st.worth_stacking([(1, big, 1), (1, 1, big)])  # padded work big * big


def dense_divergence(x, y, a, b, eps, iters=3000):
    """Debiased Sinkhorn divergence, p = 2, dense float64 log-domain iterations at fixed eps."""

    def lse(z):
        top = z.max(-1, keepdims=True)
        return top[..., 0] + np.log(np.exp(z - top).sum(-1))

    def ot(u, v, wu, wv):
        c = ((u[:, None] - v[None]) ** 2).sum(-1) / 2
        f, g = np.zeros(len(u)), np.zeros(len(v))
        for _ in range(iters):
            f = -eps * lse(np.log(wv)[None] + (g[None] - c) / eps)
            g = -eps * lse(np.log(wu)[None] + (f[:, None] - c).T / eps)
        return wu @ f + wv @ g

    return ot(x, y, a, b) - 0.5 * ot(x, x, a, a) - 0.5 * ot(y, y, b, b)


def test_stacked_divergence_matches_dense_sinkhorn(monkeypatch):
    x, y = RNG.random((13, 2)), RNG.random((21, 2)) + 0.3
    a, b = RNG.random(13) + 0.5, RNG.random(21) + 0.5
    a, b = a / a.sum(), b / b.sum()
    calls = []
    real = st.stacked_reduction
    monkeypatch.setattr(st, "stacked_reduction", lambda *args: calls.append(1) or real(*args))
    with lazymat.config(tile_bytes=4096):  # a budget too small for the dense tile (test_geomloss_tile.py)
        r = sinkhorn(x, y, a, b, blur=0.3, scaling=0.5, tol=1e-13, max_iter=5000, debias=True)
    assert calls, "the loop did not run stacked"
    eps = 0.3**2
    np.testing.assert_allclose(r.value, dense_divergence(x, y, a, b, eps), rtol=1e-9)
