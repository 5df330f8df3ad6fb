"""native-cpu's row groups (wide sums: several rows share each j load) against dense float64 numpy.

Wide sum formulas (16 or more j components) run rows in groups of ``ROW_GROUP``, with the
difference of a squared ``x_i - y_j`` emitted as ``y_j - x_i``; the rest of a tile, rows
of another batch element and row chunks of a block-sparse reduction run one by one. The
cases put group edges everywhere: row counts not a multiple of the group, batch elements
that start inside a tile, chunks of a block-sparsity, a difference that is also used
unsquared.
"""

from __future__ import annotations

import numpy as np
import pytest

import lazymat as lm
from lazymat.block_sparse import BlockSparsity
from lazymat.builtin_engines.native_build import find_compiler
from lazymat.codegen.cpu import CpuSkeleton
from lazymat.codegen.kernel_spec import KernelSpec

pytestmark = pytest.mark.skipif(isinstance(find_compiler(), str), reason=f"no C compiler: {find_compiler()}")

RNG = np.random.default_rng(7)
CASES = [((), 77, 130, 16), ((3,), 37, 41, 50), ((2, 1), 42, 19, 64), ((5,), 9, 70, 24)]


def _data(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    return (RNG.standard_normal(shape) / np.sqrt(shape[-1])).astype(dtype)


def _close(got: np.ndarray, ref: np.ndarray, dtype: str) -> None:
    rtol = 1e-11 if dtype == "float64" else 2e-6
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * np.abs(ref).max())


def test_wide_sums_are_grouped() -> None:
    """The cases below do reach the grouped code (and narrow formulas do not)."""
    for d, grouped in ((3, False), (16, True)):
        x, y = lm.Vi(np.zeros((4, d))), lm.Vj(np.zeros((4, d)))
        formula = (-x.sqdist(y)).exp().formula
        spec = KernelSpec(formula, "sum", 0, "float64", (x.formula, y.formula))
        assert ("lm_block_rows(" in CpuSkeleton(spec).source()) is grouped


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("batch", "n", "m", "d"), CASES)
def test_wide_sums_match_dense(batch: tuple[int, ...], n: int, m: int, d: int, dtype: str) -> None:
    x, y = _data((*batch, n, d), dtype), _data((*batch[:1], m, d), dtype)
    s, b = (RNG.random((*batch, 1)) + 0.5).astype(dtype), _data((*batch[:1], m, 2), dtype)
    X, Y, S, B = lm.Vi(x), lm.Vj(y), lm.Pm(s), lm.Vj(b)
    diff = X - Y
    with lm.config(engine="native-cpu"):
        gauss = ((-X.sqdist(Y) / S).exp() * B).sum(axis=1)
        dots = (X | Y).sum(axis=1)
        shared = (diff.sqnorm2() + diff.inner_sum()).sum(axis=1)  # x - y squared and not
        reversed_ = Y.sqdist(X).sqrt().sum(axis=1)
    xd, yd, sd, bd = (a.astype(np.float64) for a in (x, y, s, b))
    delta = xd[..., :, None, :] - yd[..., None, :, :]
    D2 = np.sum(delta**2, -1)
    _close(gauss, np.einsum("...ij,...jk->...ik", np.exp(-D2 / sd[..., None]), bd), dtype)
    _close(dots[..., 0], np.einsum("...id,...jd->...i", xd, yd), dtype)
    _close(shared[..., 0], np.sum(D2 + delta.sum(-1), -1), dtype)
    _close(reversed_[..., 0], np.sum(np.sqrt(D2), -1), dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_wide_block_sparse_sum_matches_dense_masked(dtype: str) -> None:
    n, m, d = 70, 90, 40
    x, y, b = _data((n, d), dtype), _data((m, d), dtype), _data((m, 1), dtype)
    ranges = BlockSparsity((0, 6, 37, 70), (0, 30, 61, 90), ((0, 2), (1,), (0, 1, 2)))
    with lm.config(engine="native-cpu"):
        got = ((-lm.Vi(x).sqdist(lm.Vj(y))).exp() * lm.Vj(b)).reduce("sum", 1, ranges=ranges)[0]
    xd, yd, bd = (a.astype(np.float64) for a in (x, y, b))
    K = np.where(ranges.dense_mask(), np.exp(-np.sum((xd[:, None] - yd[None]) ** 2, -1)), 0.0)
    _close(got, K @ bd, dtype)
