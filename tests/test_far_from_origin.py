"""Issue 21 on every engine: +inf in one x_i and -inf in one y_j, and a Sinkhorn divergence
of clouds far from the origin.

exp(-|x_i - y_j|^2) is exp(-inf) = 0 for every pair that involves an infinite point, so the
Gaussian sum has no NaN row, and the log-sum-exp of a row of such pairs is -inf (the
reference's and numpy's semantics); the references are dense numpy and scipy here. (Every
reduction kind on far-from-origin data runs in the conformance suite:
``lazymat.testing.far_from_origin``.)
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from scipy.special import logsumexp

import lazymat as lm
from lazymat.builtin_engines.native_build import find_compiler

RNG = np.random.default_rng(2121)
X, Y = RNG.standard_normal((40, 3)), RNG.standard_normal((30, 3))
X[7, 1], Y[4, 2] = np.inf, -np.inf
D2 = ((X[:, None] - Y[None]) ** 2).sum(-1)


def _torch(a: np.ndarray) -> Any:
    import torch

    return torch.tensor(a)


def _jax(a: np.ndarray) -> Any:
    import jax

    jax.config.update("jax_enable_x64", True)
    return jax.numpy.asarray(a)


def _engines(keops_lse: bool = False) -> list[Any]:
    """(library's array constructor, engine) pairs installed here."""
    native = not isinstance(find_compiler(), str)
    cases: list[Any] = [(np.asarray, "reference")]
    if native:
        cases.append((np.asarray, "native-cpu"))
    if importlib.util.find_spec("torch"):
        cases += [(_torch, "torch-tiled")] + ([(_torch, "native-cpu")] if native else [])
        if importlib.util.find_spec("pykeops"):
            marks = [pytest.mark.slow]
            if keops_lse:  # as in the conformance suite's expected failures for KeOps
                reason = "KeOps' log-sum-exp of a row of -inf is NaN (exp(-inf + inf))"
                marks.append(pytest.mark.xfail(reason=reason, strict=True))
            cases.append(pytest.param(_torch, "keops", marks=marks))
    if importlib.util.find_spec("jax"):
        cases.append((_jax, "jax-xla"))
    return cases


def _arg(wrap: Callable[[np.ndarray], Any]) -> lm.LazyMatrix:
    return -lm.Vi(wrap(X)).sqdist(lm.Vj(wrap(Y))) * 0.5


@pytest.mark.parametrize(("wrap", "engine"), _engines())
def test_gaussian_sum_with_plus_inf_in_x_and_minus_inf_in_y(
    wrap: Callable[[np.ndarray], Any], engine: str
) -> None:
    got = np.asarray(_arg(wrap).exp().sum(axis=1, engine=engine))[:, 0]
    np.testing.assert_allclose(got, np.exp(-0.5 * D2).sum(1), rtol=1e-12)
    assert got[7] == 0.0


@pytest.mark.parametrize(("wrap", "engine"), _engines(keops_lse=True))
def test_logsumexp_with_plus_inf_in_x_and_minus_inf_in_y(
    wrap: Callable[[np.ndarray], Any], engine: str
) -> None:
    got = np.asarray(_arg(wrap).logsumexp(axis=1, engine=engine))[:, 0]
    with np.errstate(divide="ignore"):
        ref = logsumexp(-0.5 * D2, axis=1)
    assert got[7] == -np.inf and not np.isnan(got).any(), got
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_sinkhorn_of_clouds_far_from_the_origin_matches_geomloss_centred(backend: str) -> None:
    """float32 clouds 10^4 from the origin: the divergence of the centred clouds (GeomLoss,
    float64, tensorized), on numpy (native-cpu or reference) and on torch."""
    torch = pytest.importorskip("torch")
    geomloss = pytest.importorskip("geomloss")
    from lazymat.solvers import SamplesLoss

    x = (1e4 + RNG.random((150, 3))).astype(np.float32)
    y = (1e4 + 0.2 + RNG.random((200, 3))).astype(np.float32)
    args = (x, y) if backend == "numpy" else (torch.tensor(x), torch.tensor(y))
    got = float(SamplesLoss("sinkhorn", blur=0.05)(*args))
    centred = (torch.tensor(x, dtype=torch.float64) - 1e4, torch.tensor(y, dtype=torch.float64) - 1e4)
    ref = float(geomloss.SamplesLoss("sinkhorn", blur=0.05, backend="tensorized")(*centred))
    np.testing.assert_allclose(got, ref, rtol=1e-4)
