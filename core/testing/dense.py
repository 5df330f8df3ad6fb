"""Dense float64 references for engine tests: reductions of a full grid, and comparisons.

An engine's kernels are checked against numpy (and SciPy) on the dense values F of a
formula over the whole ``(*batch, N, M, D)`` grid, computed independently of lazymat's engines:
:func:`dense_values` evaluates a formula with each operation's numpy twin (``Node.dense``)
on the full grid (no tiles, no online merges, no engine), :func:`dense_reduce` reduces F
with lazymat's semantics (ties to the lowest index, the first NaN wins, K-min in
ascending order), :func:`dense_reduction` does both for a spec (block-sparse ones
included), :func:`close` compares values within a
tolerance per dtype (:data:`RTOL`, relative to the largest entry) and
:func:`check_outputs` checks all the outputs of a reduction (indices exactly in float64;
in lower precisions, rounding may reorder near-ties, so the values they pick instead).
:func:`gaussian_product_vjp` gives the gradients of a Gaussian kernel product, the
gradient test every engine runs. Needs SciPy (the ``test`` extra).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.special import logsumexp

from lazymat.reductions import get_reduction

__all__ = [
    "Grid",
    "K_REDUCTIONS",
    "REDUCTIONS",
    "RTOL",
    "check_outputs",
    "close",
    "dense_reduce",
    "dense_reduction",
    "dense_values",
    "gaussian_product_vjp",
]

#: relative tolerance of an engine's values against the float64 reference, per dtype
RTOL: Mapping[str, float] = {"float64": 1e-10, "float32": 1e-5, "float16": 2e-3}
#: the reductions of values and indices over j (dense_reduce also knows the K ones)
REDUCTIONS = ("sum", "lse", "min", "max", "argmin", "argmax", "min_argmin", "max_argmax")
K_REDUCTIONS = ("kmin", "argkmin", "kmin_argkmin")


class Grid:
    """The arrays of a formula's variables laid out on the ``(*batch, N|1, M|1, dim)`` grid.

    What ``Node.dense`` twins read: ``var(v)`` is variable ``v``'s array (``arrays[v.index]``)
    with the axis of the other side (and both, for a parameter) inserted; ``index("i")`` and
    ``index("j")`` are the row and column indices, broadcastable to the grid.
    """

    def __init__(self, arrays: Sequence[Any], n: int, m: int) -> None:
        self.arrays = [np.asarray(a) for a in arrays]
        self.n, self.m = n, m

    def var(self, v: Any) -> np.ndarray:
        a = self.arrays[v.index]
        if not np.issubdtype(a.dtype, np.integer):
            a = a.astype(np.float64)
        if v.cat == "i":
            return a[..., :, None, :]
        if v.cat == "j":
            return a[..., None, :, :]
        return a[..., None, None, :]

    def index(self, axis: str) -> np.ndarray:
        return np.arange(self.n)[:, None, None] if axis == "i" else np.arange(self.m)[:, None]


def dense_values(formula: Any, arrays: Sequence[Any], n: int, m: int) -> np.ndarray:
    """F on the whole ``(*batch, N, M, dim)`` grid in float64, from the operations' numpy twins.

    ``arrays[k]`` is bound to variable k of ``formula`` (lazymat's request layout: i- and
    j-variables ``(*batch, N|M, dim)``, parameters ``(*batch, dim)``). Memory O(N M dim): tests only.
    """
    grid = Grid(arrays, n, m)
    values: dict[Any, np.ndarray] = {}
    with np.errstate(all="ignore"):
        for node in formula.walk():
            values[node] = np.asarray(node.dense(grid, *(values[c] for c in node.children)))
    out = values[formula]
    lead = np.broadcast_shapes(out.shape[:-1], (n, m))
    return np.broadcast_to(out, (*lead, out.shape[-1])).astype(np.float64)


def dense_reduction(spec: Any, arrays: Sequence[Any]) -> tuple[np.ndarray, ...]:
    """The outputs of a j-reduction spec (``lazymat.ReductionSpec``) on ``arrays``, densely.

    Block-sparse specs (``spec.ranges``) reduce over the visited pairs only: the others are
    masked out as the empty set of their reduction (0 for sums, -inf for log-sum-exp, +inf
    for min and K-min, with index -1).
    """
    n = m = 0
    for v, a in zip(spec.variables, arrays, strict=True):
        if v.cat == "i":
            n = int(np.shape(a)[-2])
        elif v.cat == "j":
            m = int(np.shape(a)[-2])
    F = dense_values(spec.formula, arrays, n, m)
    if spec.ranges is None:
        return dense_reduce(F, spec.reduction, spec.k)
    mask = spec.ranges.dense_mask()
    outs = dense_reduce(_masked(F, mask, spec.reduction), spec.reduction, spec.k)
    kinds = get_reduction(spec.reduction).outputs
    rows = np.arange(n)[:, None]
    # an index that points at an entry outside the pattern is "none": -1 (rows visiting
    # nothing, K-min rows visiting fewer than K columns)
    return tuple(
        np.where(mask[rows, o], o, -1) if kind == "index" else o for kind, o in zip(kinds, outs, strict=True)
    )


def _masked(F: np.ndarray, mask: np.ndarray, reduction: str) -> np.ndarray:
    """F where ``mask`` (N, M) is True, the reduction's neutral value elsewhere."""
    neutral = {"sum": 0.0, "lse": -np.inf}.get(reduction)
    if neutral is None:  # min, K-min: +inf never wins; max: -inf never wins
        neutral = -np.inf if reduction.startswith(("max", "argmax")) else np.inf
    return np.where(mask[..., None], F, neutral)


def dense_reduce(F: np.ndarray, reduction: str, k: int = 0) -> tuple[np.ndarray, ...]:
    """numpy/SciPy reductions over axis -2 of values F ``(*batch, N, M, D)``, lazymat's semantics."""
    with np.errstate(all="ignore"):
        if reduction == "sum":
            return (F.sum(-2),)
        if reduction == "lse":
            return (logsumexp(F, axis=-2),)
        if reduction in ("min", "max", "argmin", "argmax", "min_argmin", "max_argmax"):
            pick = np.argmin if reduction.startswith(("min", "argmin")) else np.argmax
            idx = pick(F, axis=-2)  # numpy: the first NaN wins, ties go to the first index
            val = np.take_along_axis(F, idx[..., None, :], axis=-2)[..., 0, :]
            out = {"value": val, "index": idx}
            kinds = {"min": "value", "max": "value", "argmin": "index", "argmax": "index"}
            return (out[kinds[reduction]],) if reduction in kinds else (val, idx)
        key = np.where(np.isnan(F[..., 0]), -np.inf, F[..., 0])
        order = np.argsort(key, axis=-1, kind="stable")[..., :k]
        vals = np.take_along_axis(F[..., 0], order, axis=-1)
        return {"kmin": (vals,), "argkmin": (order,), "kmin_argkmin": (vals, order)}[reduction]


def close(got: Any, ref: np.ndarray, dtype: str, what: str, rtol: Mapping[str, float] = RTOL) -> None:
    """``got`` equals ``ref``: same shape, NaN and infinities in the same places, the rest
    within ``rtol[dtype]`` relative to the largest finite entry of ``ref``."""
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, expected {ref.shape}"
    tol = rtol[dtype]
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=f"{what}: NaN positions")
    np.testing.assert_array_equal(got[~finite], ref[~finite], err_msg=f"{what}: infinities")
    scale = np.max(np.abs(ref[finite]), initial=1.0)
    np.testing.assert_allclose(got[finite], ref[finite], rtol=tol, atol=tol * scale, err_msg=what)


def check_outputs(
    outs: Sequence[Any],
    F: np.ndarray,
    reduction: str,
    dtype: str,
    k: int = 0,
    what: str = "",
    rtol: Mapping[str, float] = RTOL,
) -> None:
    """An engine's numpy outputs of ``reduction`` against the dense reduction of the values F."""
    ref = dense_reduce(F, reduction, k)
    kinds = get_reduction(reduction).outputs
    assert len(outs) == len(ref) == len(kinds)
    for kind, g, r in zip(kinds, outs, ref, strict=True):
        label = f"{what} {reduction} {kind} ({dtype})"
        assert isinstance(g, np.ndarray) and g.shape == r.shape, (
            f"{label}: shape {g.shape}, expected {r.shape}"
        )
        if kind == "value":
            assert g.dtype == np.dtype(dtype), label
            close(g, r, dtype, label, rtol)
            continue
        assert g.dtype == np.int64, label
        if dtype == "float64":
            np.testing.assert_array_equal(g, r, err_msg=label)
        elif reduction.endswith("kmin"):  # rounding may reorder near-ties: compare what was picked
            F2 = F[..., 0]
            close(np.take_along_axis(F2, g, -1), np.take_along_axis(F2, r, -1), dtype, label, rtol)
        else:
            pick = np.take_along_axis(F, g[..., None, :], -2)
            close(pick, np.take_along_axis(F, r[..., None, :], -2), dtype, label, rtol)


def gaussian_product_vjp(
    x: np.ndarray, y: np.ndarray, b: np.ndarray, cot: np.ndarray, scale: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients in x, y and b of ``sum_i <cot_i, sum_j exp(-scale |x_i - y_j|^2) b_j>`` (b: (M, 1))."""
    d = x[:, None, :] - y[None, :, :]
    kernel = np.exp(-scale * np.sum(d**2, -1))  # (N, M)
    w = cot * kernel * b[:, 0][None, :]  # (N, M)
    gx = -2.0 * scale * np.einsum("ij,ijd->id", w, d)
    gy = 2.0 * scale * np.einsum("ij,ijd->jd", w, d)
    return gx, gy, (cot * kernel).sum(0)[:, None]
