"""Log-sum-exp of rows far below -709 (small blur in Sinkhorn) on torch-tiled vs scipy."""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import logsumexp

import lazymat as lm


def test_logsumexp_of_very_negative_rows_is_finite() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.random((40, 3)), rng.random((50, 3)) + 3.0
    F = -lm.Vi(torch.tensor(x)).sqdist(lm.Vj(torch.tensor(y))) / 1e-3  # entries around -3e4
    with lm.config(tile_bytes=4096):  # several j-tiles: the merge rescales empty rows
        got = F.logsumexp(axis=1, engine="torch-tiled")[:, 0].numpy()
    D = ((x[:, None] - y[None]) ** 2).sum(-1) / 1e-3
    np.testing.assert_allclose(got, logsumexp(-D, axis=1), rtol=1e-12)
