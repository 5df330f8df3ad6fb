"""The keops engine's translations are KeOps formulas that pykeops itself compiles, made once.

A reduction's spec is translated into a KeOps formula string (``keops_formula.translate``)
once per spec: ``keops_engine._translation`` keeps it (bounded LRU), so a loop of small
reductions does not walk and spell the formula again on every call. These tests hand the
cached translation straight to ``pykeops.torch.Genred`` (not through the engine) and compare
with dense float64 torch, and count the translations made over repeated calls.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
import torch

import lazymat as lm
from lazymat_torch import keops_engine

pytestmark = [
    pytest.mark.keops,
    pytest.mark.skipif(importlib.util.find_spec("pykeops") is None, reason="pykeops is not installed"),
]

# the formulas, dimensions and dtype of two that the KeOps conformance suite compiles anyway
# (TestKeOps' far-from-origin Gaussian of constant width and Gaussian log-sum-exp over j, in
# float64): a fresh machine compiles no formula for this module
F64 = torch.float64
G = torch.Generator().manual_seed(5)
X, Y = torch.randn(37, 3, generator=G, dtype=F64), torch.randn(29, 3, generator=G, dtype=F64)
S = torch.tensor([0.7], dtype=F64)
D = ((X[:, None, :] - Y[None, :, :]) ** 2).sum(-1)  # dense squared distances, float64


def _gauss_product() -> tuple[Any, str, torch.Tensor]:
    """exp(-2 |x - y|^2) summed over j: a literal constant becomes a KeOps parameter."""
    return (-lm.Vi(X).sqdist(lm.Vj(Y)) * 2.0).exp(), "sum", torch.exp(-2.0 * D).sum(1, keepdim=True)


def _gauss_lse() -> tuple[Any, str, torch.Tensor]:
    """log sum_j exp(exp(-s |x - y|^2)), s a parameter array (a log-sum-exp of kernel values)."""
    want = torch.logsumexp(torch.exp(-S * D), dim=1, keepdim=True)
    return (-lm.Vi(X).sqdist(lm.Vj(Y)) * lm.Pm(S)).exp(), "lse", want


@pytest.mark.parametrize("case", [_gauss_product, _gauss_lse], ids=["keops-gauss", "keops-gauss-lse"])
def test_cached_translation_runs_on_pykeops(case: Any) -> None:
    """The cached translation is the one made afresh, and pykeops' Genred on that very
    string, aliases and parameters gives the dense float64 values."""
    from pykeops.torch import Genred

    matrix, reduction, want = case()
    spec, args = matrix.prepare(reduction, 1)
    found = keops_engine._translation(spec)
    assert not isinstance(found, str), found
    assert keops_engine._translation(spec) is found  # kept, not made again
    assert found == keops_engine.translate(spec)  # the same formula as a fresh translation
    constants = [torch.tensor(values, dtype=F64) for values, _ in found.constants]
    routine = Genred(found.formula, found.aliases, reduction_op=found.reduction, axis=1)
    got = routine(*args, *constants, backend="CPU")
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-13)


def test_a_loop_translates_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten reductions of one formula on the keops engine: one translation, dense values."""
    calls = [0]
    translate = keops_engine.translate

    def counted(spec: Any) -> Any:
        calls[0] += 1
        return translate(spec)

    monkeypatch.setattr(keops_engine, "translate", counted)
    keops_engine._translation.cache_clear()
    matrix, _, want = _gauss_product()
    with lm.config(engine="keops"):
        for _ in range(10):
            torch.testing.assert_close(matrix.sum(axis=1), want, rtol=1e-12, atol=1e-13)
    assert calls[0] == 1
