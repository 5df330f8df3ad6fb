"""Bad input to the solvers and the public API (issue 21): one clear error at the entry,
naming the argument, what was expected and what was given, instead of zeros, NaN or a
library's error from deep inside (cg returned zeros for a NaN right-hand side, SamplesLoss
raised "cannot convert float NaN to integer", shooting returned all-NaN, argKmin(2.5)
failed three different ways). Finite input still gives the dense float64 answer.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import lazymat as lm
from lazymat.solvers import SamplesLoss, cg, flow, gaussian, register, shoot, sinkhorn

RNG = np.random.default_rng(21)
X, Y = RNG.random((20, 3)), RNG.random((25, 3))
P0 = 0.1 * RNG.standard_normal((20, 3))


def _spoiled(a: np.ndarray, value: float, at: tuple[int, ...] = (3, 1)) -> np.ndarray:
    out = a.copy()
    out[at] = value
    return out


def _raises(fn: Callable[[], Any], *parts: str, error: type[Exception] = ValueError) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a convergence warning would not be the answer
        with pytest.raises(error) as info:
            fn()
    for part in parts:
        assert part in str(info.value), f"{part!r} not in {info.value}"


# -- conjugate gradient -----------------------------------------------------------------
def _kernel(x: np.ndarray) -> lm.LazyMatrix:
    return (-lm.Vi(x).sqdist(lm.Vj(x)) / 0.1).exp()


@pytest.mark.parametrize(
    ("value", "count"), [(np.nan, "1 NaN and 0 infinite"), (np.inf, "0 NaN and 1 infinite")]
)
def test_cg_rejects_a_non_finite_right_hand_side(value: float, count: str) -> None:
    b = RNG.random((20, 1))
    _raises(lambda: cg(_kernel(X), _spoiled(b, value, (4, 0)), alpha=0.1), "'b'", "finite", count, "(20, 1)")


def test_cg_rejects_non_finite_points_and_x0() -> None:
    b = RNG.random((20, 1))
    _raises(lambda: cg(_kernel(_spoiled(X, np.nan)), b, alpha=0.1), "'A (its Vi array)'", "1 NaN")
    _raises(lambda: cg(_kernel(X), b, alpha=0.1, x0=_spoiled(b, np.inf, (0, 0))), "'x0'", "1 infinite")


def test_cg_on_finite_input_matches_a_dense_solve() -> None:
    b = RNG.random((20, 2))
    x, info = cg(_kernel(X), b, alpha=0.1, tol=1e-12)
    dense = np.exp(-((X[:, None] - X[None]) ** 2).sum(-1) / 0.1)
    np.testing.assert_allclose(x, np.linalg.solve(0.1 * np.eye(20) + dense, b), rtol=1e-8)
    assert info.converged


# -- Sinkhorn and SamplesLoss ----------------------------------------------------------------
@pytest.mark.parametrize("loss", ["sinkhorn", "energy", "hausdorff"])
def test_samples_loss_rejects_non_finite_points(loss: str) -> None:
    _raises(lambda: SamplesLoss(loss)(_spoiled(X, np.nan), Y), "'x'", "finite coordinates", "1 NaN")
    _raises(lambda: SamplesLoss(loss)(X, _spoiled(Y, -np.inf)), "'y'", "1 infinite")


def test_sinkhorn_rejects_non_finite_points() -> None:
    _raises(lambda: sinkhorn(_spoiled(X, np.inf), Y), "'x'", "finite coordinates", "1 infinite")


def test_samples_loss_rejects_infinite_and_negative_weights() -> None:
    a, b = np.full(20, 1 / 20), np.full(25, 1 / 25)
    _raises(lambda: SamplesLoss()(_spoiled(a, np.inf, (2,)), X, b, Y), "'a'", "finite weights", "1 infinite")
    _raises(lambda: SamplesLoss()(a, X, _spoiled(b, np.nan, (0,)), Y), "'b'", "1 NaN")
    _raises(lambda: SamplesLoss()(a, X, _spoiled(b, -0.1, (0,)), Y), "'b'", "nonnegative", "-0.1")


def test_finite_checks_on_torch_and_jax_arrays() -> None:
    torch = pytest.importorskip("torch")
    jnp = pytest.importorskip("jax.numpy")
    _raises(lambda: SamplesLoss()(torch.tensor(_spoiled(X, np.nan)), torch.tensor(Y)), "'x'", "torch.Tensor")
    b = torch.tensor(_spoiled(RNG.random((20, 1)), np.inf, (1, 0)))
    _raises(lambda: cg(_kernel(torch.tensor(X)), b, alpha=0.1), "'b'", "1 infinite")
    _raises(lambda: SamplesLoss()(jnp.asarray(X), jnp.asarray(_spoiled(Y, np.nan))), "'y'", "1 NaN")


# -- shooting ---------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_shooting_rejects_non_finite_momenta_and_points(value: float) -> None:
    kernel = gaussian(0.5)
    _raises(lambda: shoot(X, _spoiled(P0, value), kernel), "'p0'", "finite momenta")
    _raises(lambda: shoot(_spoiled(X, value), P0, kernel), "'q0'", "finite coordinates")
    _raises(lambda: flow(_spoiled(Y, value), X, P0, kernel), "'points'", "finite coordinates")
    _raises(lambda: flow(Y, X, _spoiled(P0, value), kernel), "'p0'")


def test_register_rejects_a_non_finite_target() -> None:
    _raises(lambda: register(X, _spoiled(Y, np.nan), gaussian(0.5), loss=None), "'target'", "1 NaN")


# -- the LazyMatrix entry ---------------------------------------------------------------------
def _backends() -> list[Callable[[np.ndarray], Any]]:
    out: list[Callable[[np.ndarray], Any]] = [np.asarray]
    try:
        import torch

        out.append(torch.tensor)
    except ImportError:
        pass
    try:
        import jax.numpy as jnp

        out.append(jnp.asarray)
    except ImportError:
        pass
    return out


@pytest.mark.parametrize("wrap", _backends())
def test_kmin_k_must_be_a_positive_integer_with_one_message(wrap: Callable[[np.ndarray], Any]) -> None:
    D = lm.Vi(wrap(X)).sqdist(lm.Vj(wrap(Y)))
    expected = "takes K, the number of smallest values per row, as an integer K >= 1"
    _raises(lambda: D.argKmin(2.5), "argkmin", expected, "K=2.5 of type float", error=TypeError)
    _raises(lambda: D.Kmin(True), "kmin", "K=True of type bool", error=TypeError)
    _raises(lambda: D.Kmin_argKmin(0), "kmin_argkmin", expected, "K=0")
    _raises(lambda: D.argKmin(-3, axis=0), "K=-3")
    # a numpy integer is an integer: the 2 nearest y_j of each x_i, as numpy's stable argsort
    d = ((X[:, None] - Y[None]) ** 2).sum(-1)
    got = np.asarray(D.argKmin(np.int64(2)))
    np.testing.assert_array_equal(got, np.argsort(d, axis=1, kind="stable")[:, :2])


def test_a_numpy_scalar_is_a_parameter_not_a_point_cloud() -> None:
    """``Pm(np.float64(s))`` is the parameter s (as a 0-d array); ``Vi``/``Vj`` of a scalar
    say they need one row per point (it was "no lazymat backend for numpy.float64")."""
    s = np.float64(3.0)
    _raises(lambda: lm.Vi(s), "Vi expects an array of shape (N,) or (..., N, D), got a scalar")
    _raises(lambda: lm.Vj(np.float32(1.0)), "Vj expects an array", "got a scalar")
    got = (-lm.Vi(X).sqdist(lm.Vj(Y)) * lm.Pm(s)).exp().sum(axis=1)[:, 0]
    np.testing.assert_allclose(got, np.exp(-3.0 * ((X[:, None] - Y[None]) ** 2).sum(-1)).sum(1), rtol=1e-12)
