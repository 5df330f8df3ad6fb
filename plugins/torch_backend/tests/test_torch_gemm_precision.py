"""torch-tiled keeps |x - y| exact near x = y (no GEMM cancellation under a square root)."""

from __future__ import annotations

import numpy as np
import torch

import lazymat as lm


def test_norm_of_close_points_matches_dense_float64() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((30, 3))
    y = np.concatenate([x + 1e-6 * rng.standard_normal(x.shape), rng.random((5, 3))])
    X, Y = lm.Vi(torch.tensor(x)), lm.Vj(torch.tensor(y))
    got = (-(X.sqdist(Y) + 1e-30).sqrt()).exp().sum(axis=1, engine="torch-tiled")[:, 0].numpy()
    ref = np.exp(-np.sqrt(((x[:, None] - y[None]) ** 2).sum(-1) + 1e-30)).sum(1)
    np.testing.assert_allclose(got, ref, rtol=1e-13)
