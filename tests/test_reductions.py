"""Reductions on awkward sizes, extreme values, NaN and ties, against dense numpy.

The random-formula tests (test_formulas.py) use small, tame data; this file pushes the
reductions' online merges: sizes of 1, primes, more j-points than one tile holds, values of
+-1e4, infinite rows, NaN in the data, and exact ties (the lowest index must win).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from scipy.special import logsumexp

import lazymat as lm

TINY_TILES = 4096  # bytes: one i-row per tile, and the smallest j-tile (1024 points)
#: engines that run numpy float64 reductions: each must pass every test here
ENGINES = [name for name in ("reference", "native-cpu") if name in lm.engines()]


@pytest.fixture(autouse=True, params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Iterator[str]:
    with lm.config(engine=request.param):
        yield request.param


def gaussian(x: np.ndarray, y: np.ndarray, s: float = 0.5) -> np.ndarray:
    """exp(-|x_i - y_j|^2 / s^2) on the dense (N, M) grid."""
    return np.exp(-((x[:, None, :] - y[None, :, :]) ** 2).sum(-1) / s**2)


def lazy_gaussian(x: np.ndarray, y: np.ndarray, s: float = 0.5) -> Any:
    return (-lm.Vi(x).sqdist(lm.Vj(y)) / s**2).exp()


def lowest_kmin(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """K smallest entries of each row and their indices, ties to the lowest index."""
    order = np.argsort(values, axis=-1, kind="stable")[..., :k]
    return np.take_along_axis(values, order, axis=-1), order


# -- awkward sizes ------------------------------------------------------------------------


SIZES = [(1, 1), (1, 7), (7, 1), (2, 3), (13, 31), (31, 13), (3, 2053), (2053, 3)]


@pytest.mark.parametrize(("n", "m"), SIZES)
@pytest.mark.parametrize("tile_bytes", [None, TINY_TILES])
def test_awkward_sizes(n: int, m: int, tile_bytes: int | None) -> None:
    """Every reduction kind on sizes of 1, primes and more than one j-tile (2053 > 2 * 1024)."""
    rng = np.random.default_rng(n * 1000 + m)
    x, y = rng.normal(size=(n, 3)), rng.normal(size=(m, 3))
    b = rng.normal(size=(m, 2))
    Kd = gaussian(x, y)
    Dd = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    with lm.config(tile_bytes=tile_bytes):
        K = lazy_gaussian(x, y)
        D = lm.Vi(x).sqdist(lm.Vj(y))
        np.testing.assert_allclose(K @ b, Kd @ b, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(K.sum(axis=1)[:, 0], Kd.sum(1), rtol=1e-12)
        np.testing.assert_allclose(K.sum(axis=0)[:, 0], Kd.sum(0), rtol=1e-12)
        np.testing.assert_allclose(D.logsumexp(axis=1)[:, 0], logsumexp(Dd, axis=1), rtol=1e-12)
        np.testing.assert_allclose(D.logsumexp(axis=0)[:, 0], logsumexp(Dd, axis=0), rtol=1e-12)
        for axis, dense in ((1, Dd), (0, Dd.T)):
            vals, idx = D.min_argmin(axis=axis)
            np.testing.assert_allclose(vals[:, 0], dense.min(1), rtol=1e-13)
            np.testing.assert_array_equal(idx[:, 0], dense.argmin(1))
            np.testing.assert_array_equal(D.argmax(axis=axis)[:, 0], dense.argmax(1))
            np.testing.assert_allclose(D.max(axis=axis)[:, 0], dense.max(1), rtol=1e-13)
            k = min(4, dense.shape[1])
            want_vals, want_idx = lowest_kmin(dense, k)
            vals, idx = D.Kmin_argKmin(k, axis=axis)
            np.testing.assert_allclose(vals, want_vals, rtol=1e-13)
            np.testing.assert_array_equal(idx, want_idx)
            np.testing.assert_array_equal(D.argKmin(k, axis=axis), want_idx)
            np.testing.assert_allclose(D.Kmin(k, axis=axis), want_vals, rtol=1e-13)


def test_kmin_with_k_equal_to_the_reduced_size() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(5, 2)), rng.normal(size=(6, 2))
    Dd = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    vals, idx = lm.Vi(x).sqdist(lm.Vj(y)).Kmin_argKmin(6)
    want_vals, want_idx = lowest_kmin(Dd, 6)
    np.testing.assert_allclose(vals, want_vals, rtol=1e-13)
    np.testing.assert_array_equal(idx, want_idx)


def test_float32_long_sum_is_accurate() -> None:
    """A float32 sum over 2*10^5 j-points stays within 1e-5 of the float64 value."""
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(3, 1))
    y = rng.uniform(size=(200_000, 1))
    Kd = np.exp(-((x - y.T) ** 2))  # (3, M) in float64
    K = (-lm.Vi(x.astype(np.float32)).sqdist(lm.Vj(y.astype(np.float32)))).exp()
    got = K.sum(axis=1)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got[:, 0], Kd.sum(1), rtol=1e-5)


# -- extreme values in log-sum-exp --------------------------------------------------------


@pytest.mark.parametrize("offset", [1e4, -1e4])
@pytest.mark.parametrize("tile_bytes", [None, TINY_TILES])
def test_logsumexp_of_huge_values(offset: float, tile_bytes: int | None) -> None:
    """exp(+-1e4) over/underflows; log-sum-exp must not."""
    rng = np.random.default_rng(1)
    a, c = rng.normal(size=(4, 1)), rng.normal(size=(1500, 1))
    dense = offset + a + c.T
    with lm.config(tile_bytes=tile_bytes):
        F = offset + lm.Vi(a) + lm.Vj(c)
        np.testing.assert_allclose(F.logsumexp(axis=1)[:, 0], logsumexp(dense, axis=1), rtol=1e-13)
        np.testing.assert_allclose(F.logsumexp(axis=0)[:, 0], logsumexp(dense, axis=0), rtol=1e-13)
        soft = np.exp(dense - logsumexp(dense, axis=1, keepdims=True))
        np.testing.assert_allclose(F.sumsoftmaxweight(lm.Vj(c), axis=1)[:, 0], soft @ c[:, 0], rtol=1e-12)


@pytest.mark.parametrize("tile_bytes", [None, TINY_TILES])
def test_logsumexp_with_infinite_entries(tile_bytes: int | None) -> None:
    """Rows of -inf give -inf, a +inf entry gives +inf, -inf tiles before finite ones are harmless."""
    m = 2100  # three j-tiles with tiny tiles
    a = np.array([[0.0], [-np.inf], [1.0], [0.5], [2.0]])
    c = np.linspace(-1, 1, m)[:, None]
    c[:1100] = -np.inf  # the first j-tile (and a bit of the second) is all -inf
    # -inf + inf and log(0) are part of the data here: numpy's warnings about them are expected
    with lm.config(tile_bytes=tile_bytes), np.errstate(divide="ignore", invalid="ignore"):
        F = lm.Vi(a) + lm.Vj(c)
        got = F.logsumexp(axis=1)[:, 0]
        np.testing.assert_allclose(got, logsumexp(a + c.T, axis=1), rtol=1e-13)
        assert got[1] == -np.inf
        np.testing.assert_allclose(F.logsumexp(axis=0)[:, 0], logsumexp(a + c.T, axis=0), rtol=1e-13)

        c_inf = c.copy()
        c_inf[1500] = np.inf  # every row gets a +inf entry (row 1: -inf + inf = NaN)
        got = (lm.Vi(a) + lm.Vj(c_inf)).logsumexp(axis=1)[:, 0]
        want = logsumexp(a + c_inf.T, axis=1)
        np.testing.assert_array_equal(got, want)
        assert np.isposinf(got[[0, 2, 3, 4]]).all() and np.isnan(got[1])

        assert np.isneginf(F.logsumexp(axis=1, weight=lm.Vj(np.zeros((m, 1))))).all()
        w = np.ones((m, 1))
        w[1800] = 0.0  # a zero weight: log(0) = -inf on one column
        got = F.logsumexp(axis=1, weight=lm.Vj(w))[:, 0]
        np.testing.assert_allclose(got, logsumexp(a + c.T + np.log(w.T), axis=1), rtol=1e-13)


# -- NaN propagation ----------------------------------------------------------------------

REDUCTIONS = ["sum", "lse", "min", "max", "min_argmin", "max_argmax", "kmin_argkmin", "matmul", "softmax"]


def reduce_all(F: Any, b: np.ndarray, axis: int) -> dict[str, tuple[Any, Any]]:
    """name -> (values, indices or None) for every reduction of a scalar formula."""
    wrap = lm.Vj if axis == 1 else lm.Vi
    out: dict[str, tuple[Any, Any]] = {
        "sum": (F.sum(axis=axis), None),
        "lse": (F.logsumexp(axis=axis), None),
        "softmax": (F.sumsoftmaxweight(wrap(b), axis=axis), None),
        "matmul": ((F if axis == 1 else F.T) @ b, None),
    }
    for name in ("min_argmin", "max_argmax", "kmin_argkmin"):
        vals, idx = F.reduce(name, axis, k=3 if name == "kmin_argkmin" else 0)
        out[name] = (vals, idx)
    out["min"] = (F.min(axis=axis), F.argmin(axis=axis))
    out["max"] = (F.max(axis=axis), F.argmax(axis=axis))
    out["kmin"] = (F.Kmin(3, axis=axis), F.argKmin(3, axis=axis))
    return out


@pytest.mark.parametrize("where", ["i", "j"])
@pytest.mark.parametrize("tile_bytes", [None, TINY_TILES])
def test_nan_propagates(where: str, tile_bytes: int | None) -> None:
    """A NaN in x_7 (or y_1500) makes row 7 (or every row) NaN; min/argmin point at it.

    Reductions over j; the rows without NaN must still equal the dense values.
    """
    rng = np.random.default_rng(2)
    n, m = 11, 2100
    x, y = rng.normal(size=(n, 2)), rng.normal(size=(m, 2))
    b = rng.normal(size=(m, 1))
    if where == "i":
        x[7, 1] = np.nan
        affected, nan_col = np.arange(n) == 7, 0  # every entry of row 7 is NaN: first index 0
    else:
        y[1500, 0] = np.nan
        affected, nan_col = np.ones(n, bool), 1500
    Dd = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    with lm.config(tile_bytes=tile_bytes):
        results = reduce_all(lm.Vi(x).sqdist(lm.Vj(y)), b, axis=1)
    for name, (vals, idx) in results.items():
        vals = vals.reshape(n, -1)
        assert np.isnan(vals[affected]).any(axis=1).all(), f"{name}: a NaN row came out finite"
        if name in ("sum", "lse", "matmul", "softmax", "min", "max", "min_argmin", "max_argmax"):
            assert np.isnan(vals[affected]).all(), name
        assert np.isfinite(vals[~affected]).all(), f"{name}: NaN leaked into clean rows"
        if idx is not None:
            idx = idx.reshape(n, -1)
            assert (idx[affected] == nan_col).any(axis=1).all(), f"{name}: index does not point at the NaN"
    clean = ~affected
    if clean.any():
        np.testing.assert_allclose(results["sum"][0][clean, 0], Dd[clean].sum(1), rtol=1e-12)
        np.testing.assert_array_equal(results["min"][1][clean, 0], Dd[clean].argmin(1))
        np.testing.assert_array_equal(results["kmin"][1][clean], lowest_kmin(Dd[clean], 3)[1])


def test_nan_propagates_over_i() -> None:
    """The same over i (axis=0): a NaN in x_3 makes every output row NaN and points at 3."""
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(9, 2)), rng.normal(size=(5, 2))
    x[3, 0] = np.nan
    b = rng.normal(size=(9, 1))
    for name, (vals, idx) in reduce_all(lm.Vi(x).sqdist(lm.Vj(y)), b, axis=0).items():
        vals = vals.reshape(5, -1)
        assert np.isnan(vals).any(axis=1).all(), name
        if idx is not None:
            assert (idx.reshape(5, -1) == 3).any(axis=1).all(), name


# -- ties ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tile_bytes", [None, TINY_TILES])
def test_ties_go_to_the_lowest_index(tile_bytes: int | None) -> None:
    """Values j mod 7 repeat across j-tiles: argmin is the first 0, argKmin the first 0s."""
    m = 2100
    y = (np.arange(m) % 7).astype(float)[:, None]
    x = np.zeros((4, 1))
    dense = np.broadcast_to(y.T, (4, m))
    with lm.config(tile_bytes=tile_bytes):
        F = lm.Vi(x) * 0.0 + lm.Vj(y)
        np.testing.assert_array_equal(F.argmin(axis=1)[:, 0], dense.argmin(1))
        np.testing.assert_array_equal(F.argmax(axis=1)[:, 0], dense.argmax(1))
        vals, idx = F.Kmin_argKmin(5, axis=1)
        want_vals, want_idx = lowest_kmin(dense, 5)
        np.testing.assert_array_equal(idx, want_idx)
        np.testing.assert_array_equal(vals, want_vals)
        assert idx[0].tolist() == [0, 7, 14, 21, 28]
        # the same over i
        G = lm.Vi(y) + lm.Vj(x) * 0.0
        np.testing.assert_array_equal(G.argmin(axis=0)[:, 0], dense.argmin(1))
        np.testing.assert_array_equal(G.argKmin(5, axis=0), want_idx)
        np.testing.assert_array_equal(G.max_argmax(axis=0)[1][:, 0], dense.argmax(1))


def test_ties_between_vector_components() -> None:
    """Each inner coordinate has its own argmin, ties to the lowest index for each."""
    y = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    x = np.zeros((2, 2))
    F = lm.Vi(x) + lm.Vj(y)
    np.testing.assert_array_equal(F.argmin(axis=1), [[1, 0], [1, 0]])
    np.testing.assert_array_equal(F.argmax(axis=1), [[0, 2], [0, 2]])
