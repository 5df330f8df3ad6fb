"""torch-tiled folds the scalar steps of an exponential's argument, s |x - y|^2 + t_j,
into the GEMM (lazymat_torch.gemm.ExpArgGemm): values against dense float64 numpy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import lazymat as lm
from lazymat_torch import gemm

RNG = np.random.default_rng(0)
X, Y, G = RNG.random((70, 3)), RNG.random((90, 3)), 0.1 * RNG.random((90, 1))
D2 = ((X[:, None] - Y[None]) ** 2).sum(-1)
GJ = G[:, 0][None]


def _lse(v: np.ndarray) -> np.ndarray:
    m = v.max(1)
    return m + np.log(np.exp(v - m[:, None]).sum(1))


#: (lazymat formula of x, y, g; reduction; dense float64 value)
CASES: list[tuple[Callable[..., Any], str, np.ndarray]] = [
    (lambda x, y, g: (-50.0 * x.sqdist(y)).exp(), "sum", np.exp(-50 * D2).sum(1)),
    (lambda x, y, g: (-x.sqdist(y) / 0.3).exp(), "sum", np.exp(-D2 / 0.3).sum(1)),
    (lambda x, y, g: (g - x.sqdist(y)) / 0.01, "lse", _lse((GJ - D2) / 0.01)),
    (lambda x, y, g: x.sqdist(y) * -20.0 + g, "lse", _lse(-20 * D2 + GJ)),
    (lambda x, y, g: (2.0 * (g - (-x.sqdist(y)) * 3.0)).exp(), "sum", np.exp(2 * (GJ + 3 * D2)).sum(1)),
]


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_folded_exponentials_match_dense_float64(case: int, dtype: torch.dtype) -> None:
    formula, reduction, ref = CASES[case]
    x, y, g = (
        lm.Vi(torch.tensor(X, dtype=dtype)),
        lm.Vj(torch.tensor(Y, dtype=dtype)),
        lm.Vj(torch.tensor(G, dtype=dtype)),
    )
    lazy = formula(x, y, g)
    got = (
        lazy.sum(axis=1, engine="torch-tiled")
        if reduction == "sum"
        else lazy.logsumexp(axis=1, engine="torch-tiled")
    )
    # float32: GEMM rounds |x|^2 + |y|^2 - 2<x, y> to ~1e-7, times the scale (up to 100)
    rtol = 1e-4 if dtype == torch.float32 else 1e-11
    np.testing.assert_allclose(got[:, 0].numpy(), ref, rtol=rtol)


def test_fold_applies_to_the_benchmarked_formulas(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel product and the softmin's log-sum-exp take one GEMM node for their argument."""
    x, y, g = lm.Vi(torch.tensor(X)), lm.Vj(torch.tensor(Y)), lm.Vj(torch.tensor(G))
    seen: list[float] = []
    original = gemm.ExpArgGemm.augmented

    def spy(self: gemm.ExpArgGemm, *args: Any) -> Any:
        seen.append(self.scale)
        return original(self, *args)

    monkeypatch.setattr(gemm.ExpArgGemm, "augmented", spy)
    ((g - x.sqdist(y)) / 0.01).logsumexp(axis=1, engine="torch-tiled")
    (-50.0 * x.sqdist(y)).exp().sum(axis=1, engine="torch-tiled")
    assert set(seen) == {-100.0, -50.0}
