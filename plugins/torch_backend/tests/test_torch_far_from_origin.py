"""torch-tiled on clouds far from the origin or spread wide (issue 21): the GEMM of
``|x|^2 - 2<x, y> + |y|^2`` runs on centred points, and the exact difference replaces it
where its rounding bound is too large for the kernel's scale (lazymat_torch.centred).

References: dense float64 numpy on the centred points (the float32 points moved back
exactly), scipy's logsumexp, GeomLoss on the centred clouds in float64.
"""

from __future__ import annotations

from typing import Any

import geomloss
import numpy as np
import pytest
import torch
from scipy.special import logsumexp

import lazymat as lm
from lazymat.solvers import SamplesLoss
from lazymat_torch import gemm

RNG = np.random.default_rng(21)


def _clouds(n: int, m: int, offset: float, dtype: torch.dtype, spread: float = 1.0) -> tuple[Any, ...]:
    """Points ``offset + spread * N(0, 1)`` as ``dtype`` tensors, and the same points moved
    back by ``offset`` in float64 numpy (exactly: Sterbenz)."""
    x = torch.tensor(offset + spread * RNG.standard_normal((n, 3)), dtype=dtype)
    y = torch.tensor(offset + spread * RNG.standard_normal((m, 3)), dtype=dtype)
    return x, y, x.double().numpy() - offset, y.double().numpy() - offset


def _sqdist(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)


@pytest.fixture
def exact_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[int]]:
    """The pairs that each call of the exact fallback evaluated: whole rows or columns
    (``GemmOperands.exact``), single pairs (the pairs under a bare distance's threshold)."""
    seen: dict[str, list[int]] = {"blocks": [], "pairs": []}
    exact, exact_sqdist = gemm.GemmOperands.exact, gemm.exact_sqdist

    def blocks(self: gemm.GemmOperands, rows: Any, cols: Any) -> Any:
        out = exact(self, rows, cols)
        seen["blocks"].append(out.shape[-2] * out.shape[-1])
        return out

    def pairs(a: Any, b: Any) -> Any:
        out = exact_sqdist(a, b)
        seen["pairs"].append(out.numel())
        return out

    monkeypatch.setattr(gemm.GemmOperands, "exact", blocks)
    monkeypatch.setattr(gemm, "exact_sqdist", pairs)
    return seen


# the cases: float32 10^4 from the origin (a Gaussian sum was inf in 300 rows, a
# log-sum-exp off by 2.1e3), float64 10^7 away (a log-sum-exp off by 1.53)
@pytest.mark.parametrize(
    ("dtype", "offset"), [(torch.float32, 1e2), (torch.float32, 1e4), (torch.float64, 1e7)]
)
def test_gaussian_sum_and_logsumexp_far_from_the_origin(dtype: torch.dtype, offset: float) -> None:
    x, y, cx, cy = _clouds(300, 200, offset, dtype)
    d = _sqdist(cx, cy)
    K = (-lm.Vi(x).sqdist(lm.Vj(y)) * 2.0).exp()
    got_sum = K.sum(axis=1, engine="torch-tiled")[:, 0].double().numpy()
    got_lse = (-lm.Vi(x).sqdist(lm.Vj(y)) * 2.0).logsumexp(axis=1, engine="torch-tiled")
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(got_sum, np.exp(-2.0 * d).sum(1), rtol=rtol)
    np.testing.assert_allclose(
        got_lse[:, 0].double().numpy(), logsumexp(-2.0 * d, axis=1), rtol=rtol, atol=rtol
    )


def test_samples_loss_of_translated_clouds_matches_geomloss_centred() -> None:
    """The issue's SamplesLoss: float32 clouds translated by 10^4 (it gave 0.233, not 0.112)."""
    x = torch.tensor(1e4 + RNG.random((150, 3)), dtype=torch.float32)
    y = torch.tensor(1e4 + 0.2 + RNG.random((200, 3)), dtype=torch.float32)
    got = float(SamplesLoss("sinkhorn", blur=0.05)(x, y))
    cx, cy = x.double() - 1e4, y.double() - 1e4
    ref = float(geomloss.SamplesLoss("sinkhorn", blur=0.05, backend="tensorized")(cx, cy))
    np.testing.assert_allclose(got, ref, rtol=1e-4)


@pytest.mark.parametrize("scale", ["constant", "parameter"])
@pytest.mark.parametrize("reduction", ["sum", "lse"])
def test_wide_clouds_take_the_exact_difference(
    reduction: str, scale: str, exact_calls: dict[str, list[int]]
) -> None:
    """Points spread over 10^3 in float32 with a kernel of scale 1: the GEMM's rounding (about
    u * 10^6) would move every exponential by O(1); the rows take the exact difference."""
    x, y, cx, cy = _clouds(120, 150, 0.0, torch.float32, spread=300.0)
    y[:60] = x[:60] + 0.5  # near pairs, so that the kernel does not vanish
    cy[:60] = y[:60].double().numpy()
    d = _sqdist(cx, cy)
    s = 1.0 if scale == "constant" else lm.Pm(torch.tensor([1.0]))
    F = -lm.Vi(x).sqdist(lm.Vj(y)) * s
    if reduction == "sum":
        got = F.exp().sum(axis=1, engine="torch-tiled")[:, 0].double().numpy()
        ref = np.exp(-d).sum(1)
    else:
        got = F.logsumexp(axis=1, engine="torch-tiled")[:, 0].double().numpy()
        ref = logsumexp(-d, axis=1)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-30)  # (float32 underflows below)
    assert sum(exact_calls["blocks"]) >= 120 * 150  # every row went exact


def test_near_pairs_of_a_bare_distance_are_exact(exact_calls: dict[str, list[int]]) -> None:
    """A rational kernel 1 / (|x - y|^2 + 1e-4) of clouds spread over 10^2, with near pairs:
    the node's scale is unknown, so the pairs whose GEMM value is below its bound / tolerance
    take the exact difference (the GEMM would be off by ~u * 10^4 = 6e-4 >> 1e-4); the
    others keep a GEMM value within 64 sqrt(u) = 1.6e-2 of their own (a worst case)."""
    x, y, cx, cy = _clouds(200, 220, 50.0, torch.float32, spread=30.0)
    y[:100] = x[:100] + 0.01
    cy[:100] = y[:100].double().numpy() - 50.0
    got = (1.0 / (lm.Vi(x).sqdist(lm.Vj(y)) + 1e-4)).sum(axis=1, engine="torch-tiled")
    ref = (1.0 / (_sqdist(cx, cy) + 1e-4)).sum(1)
    np.testing.assert_allclose(got[:, 0].double().numpy(), ref, rtol=1e-3)
    assert 100 <= sum(exact_calls["pairs"]) < 200 * 220 / 10 and exact_calls["blocks"] == []


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_plus_inf_in_x_and_minus_inf_in_y(dtype: torch.dtype) -> None:
    """exp(-|inf - y|^2) = exp(-|x + inf|^2) = 0: no NaN row (dense numpy is the reference)."""
    x, y = RNG.standard_normal((40, 3)), RNG.standard_normal((30, 3))
    x[7, 1], y[4, 2] = np.inf, -np.inf
    d = _sqdist(x, y)
    X, Y = lm.Vi(torch.tensor(x, dtype=dtype)), lm.Vj(torch.tensor(y, dtype=dtype))
    P = lm.Pm(torch.tensor([2.0], dtype=dtype))
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    for K in ((-X.sqdist(Y) * 2.0).exp(), (-X.sqdist(Y) * P).exp()):
        got = K.sum(axis=1, engine="torch-tiled")[:, 0].double().numpy()
        np.testing.assert_allclose(got, np.exp(-2.0 * d).sum(1), rtol=rtol)
    got = (-X.sqdist(Y) * 2.0).logsumexp(axis=1, engine="torch-tiled")[:, 0].double().numpy()
    with np.errstate(divide="ignore"):
        ref = logsumexp(-2.0 * d, axis=1)
    assert got[7] == -np.inf and not np.isnan(got).any()
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol)


def test_the_benchmarked_data_keeps_the_gemm(exact_calls: dict[str, list[int]]) -> None:
    """Unit-cube clouds, the benchmarks' Gaussian (gamma 50) and softmin (eps 0.01) in
    float32: the bound allows the GEMM everywhere (no exact pair), values as dense float64."""
    x, y = RNG.random((500, 3), dtype=np.float32), RNG.random((700, 3), dtype=np.float32)
    g = 0.1 * RNG.random((700, 1), dtype=np.float32)
    d = _sqdist(x.astype(np.float64), y.astype(np.float64))
    X, Y, G = lm.Vi(torch.tensor(x)), lm.Vj(torch.tensor(y)), lm.Vj(torch.tensor(g))
    kernel = (-50.0 * X.sqdist(Y)).exp().sum(axis=1, engine="torch-tiled")[:, 0].numpy()
    softmin = ((G - X.sqdist(Y)) / 0.01).logsumexp(axis=1, engine="torch-tiled")[:, 0].numpy()
    np.testing.assert_allclose(kernel, np.exp(-50.0 * d).sum(1), rtol=1e-5)
    np.testing.assert_allclose(softmin, logsumexp((g[:, 0][None] - d) / 0.01, axis=1), rtol=1e-5)
    assert exact_calls == {"blocks": [], "pairs": []}
