"""``lazymat.keops.Genred``: every KeOps reduction, the call options, the ``generic_*``
shortcuts and ``KernelSolve``, against dense numpy (float64) written here and against
``numpy.linalg.solve``; KeOps' ``ranges`` against the dense masked reduction.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from scipy.special import logsumexp, softmax

import lazymat.keops as pk
from lazymat.keops import Genred, KernelSolve, generic_argkmin, generic_argmin, generic_logsumexp, generic_sum
from lazymat.keops.cluster import from_matrix

RNG = np.random.default_rng(0)
X, Y = RNG.standard_normal((9, 3)), RNG.standard_normal((7, 3))
B, S = RNG.standard_normal((7, 2)), np.array([0.8])
ALIASES = ["x = Vi(3)", "y = Vj(3)", "b = Vj(2)", "s = Pm(1)"]
ARGS = (X, Y, B, S)


def _f(x: np.ndarray = X, y: np.ndarray = Y) -> np.ndarray:
    """F_ij = -s |x_i - y_j|^2 + b_j[0] (the scalar formula of the tests), (N, M)."""
    return -S[0] * ((x[:, None] - y[None]) ** 2).sum(-1) + B[None, :, 0]


FORMULA = "-s * SqDist(x, y) + Elem(b, 0)"


def _reduce_dense(name: str, v: np.ndarray, axis: int, w: np.ndarray | None = None) -> object:
    """KeOps' reductions of the (N, M) matrix v over ``axis``, with an (N|1, M|1, E) weight w."""
    take = np.moveaxis(v, axis, -1)  # reduced axis last
    if name == "Sum":
        return take.sum(-1)[..., None]
    if name == "LogSumExp":
        return logsumexp(take, -1)[..., None]
    if name in ("LogSumExpWeight", "SumSoftMaxWeight", "Max_SumShiftExpWeight"):
        assert w is not None
        ww = np.moveaxis(np.broadcast_to(w, (*v.shape, w.shape[-1])), axis, -2)
        e = np.exp(take - take.max(-1, keepdims=True))
        if name == "LogSumExpWeight":
            return np.log(np.einsum("...j,...je->...e", np.exp(take), ww))
        if name == "SumSoftMaxWeight":
            return np.einsum("...j,...je->...e", softmax(take, -1), ww)
        return np.concatenate([take.max(-1)[..., None], np.einsum("...j,...je->...e", e, ww)], -1)
    if name == "Max_SumShiftExp":
        return np.stack([take.max(-1), np.exp(take - take.max(-1, keepdims=True)).sum(-1)], -1)
    if name in ("Min", "Max"):
        return getattr(take, name.lower())(-1)[..., None]
    if name in ("ArgMin", "ArgMax"):
        return getattr(take, name.lower())(-1)[..., None]
    if name in ("Min_ArgMin", "Max_ArgMax"):
        base = name.split("_")[0].lower()
        return getattr(take, base)(-1)[..., None], getattr(take, "arg" + base)(-1)[..., None]
    order = np.argsort(take, -1, kind="stable")[..., :3]
    values = np.take_along_axis(take, order, -1)
    return {"KMin": values, "ArgKMin": order, "KMin_ArgKMin": (values, order)}[name]


SIMPLE = ["Sum", "LogSumExp", "Min", "Max", "ArgMin", "ArgMax", "Min_ArgMin", "Max_ArgMax", "Max_SumShiftExp"]


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("name", [*SIMPLE, "KMin", "ArgKMin", "KMin_ArgKMin"])
def test_every_reduction_without_weight(name: str, axis: int) -> None:
    op = Genred(FORMULA, ALIASES, reduction_op=name, axis=axis, opt_arg=3 if "KMin" in name else None)
    got, ref = op(*ARGS), _reduce_dense(name, _f(), axis)
    got, ref = (got, ref) if isinstance(got, tuple) else ((got,), (ref,))
    for g, r in zip(got, ref, strict=True):
        assert g.shape == r.shape, (g.shape, r.shape)
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-13)
    if "Arg" in name:  # indices are int64 (see the README's list of differences)
        assert got[-1].dtype == np.int64


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize(
    "name", ["LogSumExpWeight", "SumSoftMaxWeight", "Max_SumShiftExpWeight", "LogSumExp"]
)
def test_reductions_with_a_weight_formula(name: str, axis: int) -> None:
    """``formula2`` G: log sum exp(F) G, softmax-weighted sums, (max, shifted weighted sums)."""
    weight = "Exp(Sin(b))" if "LogSumExp" in name else "Concat(b, Elem(x, 1))"
    op = Genred(FORMULA, ALIASES, reduction_op=name, axis=axis, formula2=weight)
    grid = (len(X), len(Y))
    pair = [np.broadcast_to(B[None], (*grid, 2)), np.broadcast_to(X[:, None, 1:2], (*grid, 1))]
    w = np.exp(np.sin(B))[None] if "LogSumExp" in name else np.concatenate(pair, -1)
    dense = "LogSumExpWeight" if name == "LogSumExp" else name
    np.testing.assert_allclose(op(*ARGS), _reduce_dense(dense, _f(), axis, w), rtol=1e-12, atol=1e-13)


def test_kmin_of_a_vector_formula_is_per_entry() -> None:
    """KeOps' K-min of a D-vector formula: (N, K, D) values and indices."""
    op = Genred("Abs(x - y)", ALIASES[:2], reduction_op="KMin_ArgKMin", axis=1, opt_arg=2)
    values, indices = op(X, Y)
    d = np.abs(X[:, None] - Y[None])  # (N, M, 3)
    order = np.argsort(d, 1, kind="stable")[:, :2]  # (N, 2, 3)
    assert values.shape == indices.shape == (9, 2, 3)
    np.testing.assert_array_equal(indices, order)
    np.testing.assert_allclose(values, np.take_along_axis(d, order, 1), rtol=1e-15)


def test_batch_dimensions_and_one_sided_formulas() -> None:
    x, y = RNG.standard_normal((2, 5, 3)), RNG.standard_normal((1, 4, 3))
    got = Genred("SqDist(x, y)", ALIASES[:2], axis=1)(x, y, nbatchdims=1)
    np.testing.assert_allclose(
        got, ((x[:, :, None] - y[:, None]) ** 2).sum(-1).sum(-1)[..., None], rtol=1e-13
    )
    with pytest.raises(ValueError, match=r"nbatchdims=2, but the arrays have 1 batch"):
        Genred("SqDist(x, y)", ALIASES[:2], axis=1)(x, y, nbatchdims=2)
    # no j-variable: KeOps counts one column; no variable but a parameter: one row and one column
    np.testing.assert_allclose(Genred("Exp(x)", ["x = Vi(3)"], axis=1)(X), np.exp(X), rtol=1e-15)
    np.testing.assert_allclose(Genred("Exp(x)", ["x = Vi(3)"], axis=0)(X), np.exp(X).sum(0)[None], rtol=1e-14)
    np.testing.assert_allclose(Genred("s * 2", ["s = Pm(1)"], axis=1)(S), [[1.6]], rtol=1e-15)


def test_out_and_float64_accumulation() -> None:
    x, y = RNG.random((2000, 2)).astype(np.float32), RNG.random((3000, 2)).astype(np.float32)
    exact = np.exp(-((x[:, None].astype(np.float64) - y[None]) ** 2).sum(-1)).sum(1)
    out = np.empty((2000, 1), np.float32)
    op = Genred("Exp(-SqDist(x, y))", ["x = Vi(2)", "y = Vj(2)"], axis=1, use_double_acc=True)
    assert op(x, y, out=out) is out
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0], exact, rtol=1e-6)  # the float32 rounding of exact sums
    kahan = Genred("Exp(-SqDist(x, y))", ["x = Vi(2)", "y = Vj(2)"], axis=1, sum_scheme="kahan_scheme")
    np.testing.assert_allclose(kahan(x, y)[:, 0], exact, rtol=1e-6)


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (
            lambda: Genred(FORMULA, ALIASES, reduction_op="Median"),
            ValueError,
            r"unknown KeOps reduction 'Median'",
        ),
        (lambda: Genred(FORMULA, ALIASES, reduction_op="KMin"), ValueError, r"KMin needs opt_arg=K"),
        (lambda: Genred(FORMULA, ALIASES, "SumSoftMaxWeight"), ValueError, r"needs a weight formula"),
        (
            lambda: Genred(FORMULA, ALIASES, "Min", use_double_acc=True),
            ValueError,
            r"apply to sums, not to Min",
        ),
        (lambda: Genred(FORMULA, ALIASES, sum_scheme="fast"), ValueError, r"sum_scheme='fast'"),
        (lambda: Genred(FORMULA, ALIASES, axis=2), ValueError, r"axis 0 \(i\) or 1 \(j\)"),
        (lambda: Genred(FORMULA, ALIASES)(X, Y, B), ValueError, r"takes 4 arrays"),
        (
            lambda: Genred(FORMULA, ALIASES)(X, Y, B[:, :1], S),
            ValueError,
            r"b is declared Vj\(2\) but its array",
        ),
        (lambda: Genred(FORMULA, ALIASES)(*ARGS, backend="TPU"), ValueError, r"backend='TPU'"),
        (
            lambda: Genred(FORMULA, ALIASES)(*ARGS, out=np.empty((3, 1))),
            ValueError,
            r"out has shape \(3, 1\)",
        ),
    ],
)
def test_clear_errors(make: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        make()  # type: ignore[operator]


def test_gpu_backend_without_a_gpu_says_so() -> None:
    if pk.config.gpu_available:
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match=r"lazymat computes where the data lives"):
        Genred(FORMULA, ALIASES)(*ARGS, backend="GPU_1D")


def test_ranges_restrict_the_reduction_to_block_pairs() -> None:
    """KeOps' 6-tuple (from_matrix) vs the dense reduction of the masked matrix, both axes."""
    x, y = np.sort(RNG.random((12, 1)), 0), np.sort(RNG.random((10, 1)), 0)
    ranges_i, ranges_j = np.array([[0, 5], [5, 12]]), np.array([[0, 3], [3, 8], [8, 10]])
    keep = np.array([[True, False, True], [False, True, False]])
    ranges = from_matrix(ranges_i, ranges_j, keep)
    mask = np.zeros((12, 10), bool)
    for a, (i0, i1) in enumerate(ranges_i):
        for c, (j0, j1) in enumerate(ranges_j):
            mask[i0:i1, j0:j1] = keep[a, c]
    v = np.exp(-((x - y.T) ** 2))
    for axis in (0, 1):
        got = Genred("Exp(-SqDist(x, y))", ["x = Vi(1)", "y = Vj(1)"], axis=axis)(x, y, ranges=ranges)
        np.testing.assert_allclose(got[:, 0], np.where(mask, v, 0).sum(axis), rtol=1e-14)


def test_generic_shortcuts() -> None:
    f = "SqDist(x, y)"
    d = ((X[:, None] - Y[None]) ** 2).sum(-1)
    np.testing.assert_allclose(generic_sum(f, "out = Vi(1)", *ALIASES[:2])(X, Y)[:, 0], d.sum(1), rtol=1e-13)
    np.testing.assert_allclose(generic_sum(f, "out = Vj(1)", *ALIASES[:2])(X, Y)[:, 0], d.sum(0), rtol=1e-13)
    np.testing.assert_allclose(
        generic_logsumexp(f"-{f}", "a = Vi(1)", *ALIASES[:2])(X, Y)[:, 0], logsumexp(-d, 1)
    )
    np.testing.assert_array_equal(generic_argmin(f, "a = Vi(1)", *ALIASES[:2])(X, Y)[:, 0], d.argmin(1))
    np.testing.assert_array_equal(generic_argkmin(f, "a = Vj(2)", *ALIASES[:2])(X, Y), np.argsort(d, 0)[:2].T)


def test_pickle_round_trip() -> None:
    op = Genred(FORMULA, ALIASES, reduction_op="LogSumExp", axis=1)
    back = pickle.loads(pickle.dumps(op))
    np.testing.assert_array_equal(back(*ARGS), op(*ARGS))


def test_kernel_solve_against_numpy_solve_and_torch_gradients() -> None:
    torch = pytest.importorskip("torch")
    x = RNG.standard_normal((30, 2))
    b = RNG.standard_normal((30, 3))
    aliases = ["x = Vi(2)", "y = Vj(2)", "a = Vj(3)", "g = Pm(1)"]
    solve = KernelSolve("Exp(-g * SqDist(x, y)) * a", aliases, "a", axis=1)
    K = np.exp(-0.5 * ((x[:, None] - x[None]) ** 2).sum(-1))
    ref = np.linalg.solve(0.1 * np.eye(30) + K, b)
    got = solve(x, x, b, np.array([0.5]), alpha=0.1, eps=1e-12)
    np.testing.assert_allclose(got, ref, rtol=1e-8, atol=1e-10)
    # differentiable in the points: the implicit-function gradient vs torch's dense solve
    xt = torch.tensor(x, requires_grad=True)
    e = torch.tensor(RNG.standard_normal((30, 3)))
    sol = solve(xt, xt, torch.tensor(b), torch.tensor([0.5], dtype=torch.float64), alpha=0.1, eps=1e-12)
    (g,) = torch.autograd.grad(sol, xt, e)
    xd = xt.detach().requires_grad_(True)
    Kd = torch.exp(-0.5 * ((xd[:, None] - xd[None]) ** 2).sum(-1))
    (gd,) = torch.autograd.grad(
        torch.linalg.solve(0.1 * torch.eye(30, dtype=torch.float64) + Kd, torch.tensor(b)), xd, e
    )
    torch.testing.assert_close(g, gd, rtol=1e-7, atol=1e-9)
    with pytest.raises(NotImplementedError, match=r"K\(x, y\) \* .* with a scalar kernel"):
        KernelSolve("Exp(-g * SqDist(x, y)) + a", aliases, "a", axis=1)
