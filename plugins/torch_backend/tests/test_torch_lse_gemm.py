"""torch-tiled's shifted log-sum-exp of ``s * |x - y|^2 + t_j`` (lazymat_torch.lse_gemm):
values against dense float64 (scipy's logsumexp), through the fast path, the exact rows
(sample of -inf values, values far above the sampled max, +inf, NaN) and several j-tiles."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

import lazymat as lm
from lazymat_torch import lse_gemm

RNG = np.random.default_rng(1)
X, Y, G = RNG.random((60, 3)), RNG.random((700, 3)), 0.1 * RNG.random((700, 1))


def _softmin(x: np.ndarray, y: np.ndarray, g: np.ndarray, eps: float, dtype: torch.dtype) -> np.ndarray:
    """lazymat's log sum_j exp((g_j - |x_i - y_j|^2) / eps) on torch-tiled, as float64 numpy."""
    xi, yj, gj = (torch.tensor(a, dtype=dtype) for a in (x, y, g))
    F = (lm.Vj(gj) - lm.Vi(xi).sqdist(lm.Vj(yj))) / eps
    return F.logsumexp(axis=1, engine="torch-tiled")[:, 0].numpy().astype(np.float64)


def _dense(x: np.ndarray, y: np.ndarray, g: np.ndarray, eps: float) -> np.ndarray:
    d2 = ((x[:, None] - y[None]) ** 2).sum(-1)
    with np.errstate(invalid="ignore"):
        return np.asarray(logsumexp((g[:, 0][None] - d2) / eps, axis=1))


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the runs of the shifted loop, so that each test knows it took that path."""
    seen: list[int] = []
    original = lse_gemm.lse_exp_gemm

    def spy(gemm: Any, ti: int, tj: int) -> Any:
        seen.append(tj)
        return original(gemm, ti, tj)

    monkeypatch.setattr("lazymat_torch.tiled_loop.lse_exp_gemm", spy)
    return seen


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("budget", [None, 2048])  # one j-tile of all rows; 256-column tiles
@pytest.mark.parametrize("eps", [1.0, 0.01, 1e-4])
def test_softmin_matches_dense_float64(
    calls: list[int], dtype: torch.dtype, budget: int | None, eps: float
) -> None:
    with lm.config(**({} if budget is None else {"tile_bytes": budget})):
        got = _softmin(X, Y, G, eps, dtype)
    ref = _dense(X, Y, G, eps)
    # float32: GEMM rounds |x|^2 + |y|^2 - 2<x, y> to ~1e-7 of |x|^2, times 1 / eps
    atol = 4e-7 / eps if dtype == torch.float32 else 1e-11 / eps
    np.testing.assert_allclose(got, ref, rtol=1e-6 if dtype == torch.float32 else 1e-13, atol=atol)
    assert calls and (budget is None or calls[0] < Y.shape[0])


@pytest.mark.parametrize("budget", [None, 2048])
def test_rows_far_above_their_sampled_max_are_redone_exactly(
    calls: list[int], monkeypatch: pytest.MonkeyPatch, budget: int | None
) -> None:
    """x_i sits on a y_j outside the sample (every 100th column) and eps is tiny: the row's
    max is far above the sampled one, its terms overflow, the exact merge takes the row."""
    monkeypatch.setattr(lse_gemm, "SAMPLE_COLUMNS", 7)
    x = X.copy()
    x[::3] = Y[1 : 1 + 3 * 20 : 3][: len(x[::3])]  # on columns 1, 4, 7, ...: not multiples of 100
    with lm.config(**({} if budget is None else {"tile_bytes": budget})):
        got = _softmin(x, Y, G, 1e-4, torch.float32)
    np.testing.assert_allclose(got, _dense(x, Y, G, 1e-4), rtol=1e-6, atol=4e-3)
    assert calls


@pytest.mark.parametrize("budget", [None, 2048])
def test_infinite_and_nan_entries_match_dense(
    calls: list[int], monkeypatch: pytest.MonkeyPatch, budget: int | None
) -> None:
    """g_j = -inf on the sampled columns (rows start on the exact merge, then go on fast),
    +inf or NaN on one column of some rows' tiles, all -inf columns for none."""
    monkeypatch.setattr(lse_gemm, "SAMPLE_COLUMNS", 7)
    g = G.copy()
    g[::100] = -np.inf  # the sampled columns: no finite shift for any row
    got = {}
    for name, col, value in (("neg", None, None), ("pos", 450, np.inf), ("nan", 333, np.nan)):
        gv = g.copy()
        if col is not None:
            gv[col] = value
        with lm.config(**({} if budget is None else {"tile_bytes": budget})):
            got[name] = _softmin(X, Y, gv, 0.01, torch.float32)
        ref = _dense(X, Y, gv, 0.01)
        np.testing.assert_allclose(got[name], ref, rtol=1e-6, atol=4e-5)
    all_neg = np.full_like(G, -np.inf)
    np.testing.assert_array_equal(_softmin(X, Y, all_neg, 0.01, torch.float32), -np.inf)
    assert calls
