"""Values of the torch engines (torch-tiled and keops) against dense float64 torch.

The dense reference builds the whole N x M matrix with plain torch operations, independently
of lazymat's formulas. KeOps compiles each new formula (5-10 s on a quiet machine, cached on
disk), so keops runs here only what its conformance suite (``TestKeOps`` in
``test_torch_conformance.py``: every reduction, both dtypes, against dense float64) does not:
half precision, float32 against float64, the vector operations.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

import lazymat as lm
from lazymat.request import build_request
from lazymat_torch.gemm import DotGemm, ExpArgGemm, SqDistGemm
from lazymat_torch.tiled_loop import plan_for, tile_shape

HAS_KEOPS = importlib.util.find_spec("pykeops") is not None
ENGINES = [
    "torch-tiled",
    pytest.param("keops", marks=pytest.mark.skipif(not HAS_KEOPS, reason="pykeops is not installed")),
]
#: the engines of the tests whose keops case is its conformance suite's (see the module docstring)
TILED = ["torch-tiled"]
F64 = torch.float64


def _data(n: int = 37, m: int = 29, d: int = 3, dtype: torch.dtype = F64, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=F64).to(dtype)
    y = torch.randn(m, d, generator=g, dtype=F64).to(dtype)
    b = torch.randn(m, 1, generator=g, dtype=F64).to(dtype)
    s = torch.tensor([0.7], dtype=dtype)
    return x, y, b, s


def _softmin(x, y, b, s):  # -s |x - y|^2 + b_j, as a LazyMatrix
    return -lm.Vi(x).sqdist(lm.Vj(y)) * lm.Pm(s) + lm.Vj(b)


def _softmin_dense(x, y, b, s):
    x, y, b, s = (t.to(F64) for t in (x, y, b, s))
    return -s * ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1) + b[None, :, 0]


def _stable_kmin(dense: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.sort(dense, dim=1, stable=True)[1][:, :k]
    return torch.gather(dense, 1, idx), idx


# -- every reduction (keops: its conformance suite) --------------------------------------


@pytest.mark.parametrize("engine", TILED)
def test_kernel_product_matches_dense(engine: str) -> None:
    x, y, _, s = _data()
    w = torch.randn(29, 2, dtype=F64)
    K = (-lm.Vi(x).sqdist(lm.Vj(y)) * lm.Pm(s)).exp()
    got = (K * lm.Vj(w)).sum(axis=1, engine=engine)
    dense = torch.exp(-s * torch.cdist(x, y) ** 2)
    torch.testing.assert_close(got, dense @ w, rtol=1e-12, atol=1e-12)
    got0 = (K * lm.Vi(torch.ones(37, 1, dtype=F64))).sum(axis=0, engine="torch-tiled")
    torch.testing.assert_close(got0[:, 0], dense.sum(0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("engine", TILED)
def test_logsumexp_matches_dense(engine: str) -> None:
    x, y, b, s = _data()
    got = _softmin(x, y, b, s).logsumexp(axis=1, engine=engine)
    torch.testing.assert_close(
        got[:, 0], torch.logsumexp(_softmin_dense(x, y, b, s), 1), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("engine", TILED)
@pytest.mark.parametrize("kind", ["min", "max"])
def test_extrema_match_dense(engine: str, kind: str) -> None:
    x, y, b, s = _data()
    F = _softmin(x, y, b, s)
    dense = _softmin_dense(x, y, b, s)
    ref_val, ref_idx = dense.min(1) if kind == "min" else dense.max(1)
    value, index = F.reduce(f"{kind}_arg{kind}", engine=engine)
    assert index.dtype == torch.int64
    torch.testing.assert_close(value[:, 0], ref_val, rtol=1e-12, atol=1e-12)
    assert torch.equal(index[:, 0], ref_idx)
    torch.testing.assert_close(F.reduce(kind, engine=engine)[0][:, 0], ref_val, rtol=1e-12, atol=1e-12)
    assert torch.equal(F.reduce(f"arg{kind}", engine=engine)[0][:, 0], ref_idx)


@pytest.mark.parametrize("engine", TILED)
def test_kmin_matches_dense(engine: str) -> None:
    x, y, b, s = _data()
    F = _softmin(x, y, b, s)
    ref_val, ref_idx = _stable_kmin(_softmin_dense(x, y, b, s), 4)
    values, indices = F.Kmin_argKmin(4, axis=1, engine=engine)
    torch.testing.assert_close(values, ref_val, rtol=1e-12, atol=1e-12)
    assert torch.equal(indices, ref_idx)
    torch.testing.assert_close(F.Kmin(4, axis=1, engine=engine), ref_val, rtol=1e-12, atol=1e-12)
    assert torch.equal(F.argKmin(4, axis=1, engine=engine), ref_idx)


def test_ties_go_to_the_lowest_index() -> None:
    """Duplicated columns: every engine must return the first of equal values (as sorted stably)."""
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 3, (50, 1), generator=g).to(F64)  # many exact ties
    x = torch.randint(0, 3, (20, 1), generator=g).to(F64)
    F = (lm.Vi(x) - lm.Vj(y)).abs()
    dense = (x - y.T).abs()
    with lm.config(tile_bytes=4096):  # several j-tiles: ties across tiles too
        i = F.argmin(axis=1, engine="torch-tiled")
        kv, ki = F.Kmin_argKmin(7, axis=1, engine="torch-tiled")
    ref_v, ref_i = _stable_kmin(dense, 7)
    assert torch.equal(i[:, 0], ref_i[:, 0])
    assert torch.equal(ki, ref_i)
    torch.testing.assert_close(kv, ref_v)


# -- tiles, views, batches, dtypes --------------------------------------------------------


@pytest.mark.parametrize("reduction", ["sum", "lse", "min_argmin", "kmin_argkmin"])
def test_many_small_tiles(reduction: str) -> None:
    """A tile budget far below N*M: row blocks and j-tiles with remainders."""
    x, y, b, s = _data(n=101, m=211)
    F = _softmin(x, y, b, s)
    dense = _softmin_dense(x, y, b, s)
    with lm.config(tile_bytes=4096):
        got = F.reduce(reduction, k=5, engine="torch-tiled")
    if reduction == "sum":
        torch.testing.assert_close(got[0][:, 0], dense.sum(1), rtol=1e-12, atol=1e-12)
    elif reduction == "lse":
        torch.testing.assert_close(got[0][:, 0], torch.logsumexp(dense, 1), rtol=1e-12, atol=1e-12)
    elif reduction == "min_argmin":
        assert torch.equal(got[1][:, 0], dense.argmin(1))
    else:
        ref_v, ref_i = _stable_kmin(dense, 5)
        assert torch.equal(got[1], ref_i)
        torch.testing.assert_close(got[0], ref_v)


def test_kmin_last_tile_narrower_than_k() -> None:
    """M = 57 in j-tiles of 11 columns: the last tile holds 2 columns, fewer than K = 5."""
    x, y, b, s = _data(n=7, m=57)
    F = _softmin(x, y, b, s)
    spec, args = F.prepare("kmin_argkmin", 1, 5)
    request = build_request(spec, args, lm.backend_for(x), 1024)
    assert tile_shape(request, plan_for(spec)[0], 8) == (1, 11)
    with lm.config(tile_bytes=1024):
        values, indices = F.Kmin_argKmin(5, axis=1, engine="torch-tiled")
    ref_v, ref_i = _stable_kmin(_softmin_dense(x, y, b, s), 5)
    assert torch.equal(indices, ref_i)
    torch.testing.assert_close(values, ref_v, rtol=1e-12, atol=1e-12)


def test_non_contiguous_and_expanded_views() -> None:
    g = torch.Generator().manual_seed(2)
    base = torch.randn(3, 40, generator=g, dtype=F64)
    x = base.T[::2]  # (20, 3), strided
    y = torch.randn(1, 3, generator=g, dtype=F64).expand(25, 3)  # stride 0 rows
    w = torch.randn(25, 4, generator=g, dtype=F64)[:, 1:3]  # column slice
    assert not x.is_contiguous() and y.stride(0) == 0
    K = (-lm.Vi(x).sqdist(lm.Vj(y))).exp()
    got = (K * lm.Vj(w)).sum(axis=1, engine="torch-tiled")
    dense = torch.exp(-(torch.cdist(x, y) ** 2))
    torch.testing.assert_close(got, dense @ w, rtol=1e-12, atol=1e-12)
    i = lm.Vi(x).sqdist(lm.Vj(y)).argmin(axis=1, engine="torch-tiled")
    assert torch.equal(i[:, 0], torch.zeros(20, dtype=torch.int64))  # all columns equal: first wins


def test_batch_dims_broadcast_through_gemm() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 1, 17, 3, generator=g, dtype=F64)
    y = torch.randn(3, 19, 3, generator=g, dtype=F64)
    w = torch.randn(19, 2, generator=g, dtype=F64)
    s = torch.rand(2, 3, 1, generator=g, dtype=F64) + 0.5
    K = (-lm.Vi(x).sqdist(lm.Vj(y)) * lm.Pm(s)).exp()
    got = (K * lm.Vj(w)).sum(axis=1, engine="torch-tiled")
    dense = torch.exp(-s[..., None] * ((x[..., :, None, :] - y[..., None, :, :]) ** 2).sum(-1))
    assert got.shape == (2, 3, 17, 2)
    torch.testing.assert_close(got, dense @ w, rtol=1e-12, atol=1e-12)
    lse = (lm.Vi(x) | lm.Vj(y)).logsumexp(axis=1, engine="torch-tiled")
    torch.testing.assert_close(
        lse[..., 0], torch.logsumexp(x @ y.transpose(-1, -2), -1), rtol=1e-12, atol=1e-12
    )


def test_gemm_rewrites_apply_to_sums_only() -> None:
    x, y, b, s = _data()
    K = (-lm.Vi(x).sqdist(lm.Vj(y)) * lm.Pm(s)).exp() * lm.Vj(b)
    spec, _ = K.prepare("sum", 1)
    plan, kernel_product = plan_for(spec)
    assert kernel_product
    assert any(isinstance(n, ExpArgGemm) for n in plan.mixed)  # the parameter's scale folded in
    dot_spec, _ = (lm.Vi(x) | lm.Vj(y)).prepare("lse", 1)
    assert any(isinstance(n, DotGemm) for n in plan_for(dot_spec)[0].mixed)
    min_spec, _ = K.prepare("min", 1)
    assert not any(isinstance(n, (SqDistGemm, ExpArgGemm)) for n in plan_for(min_spec)[0].mixed)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("engine", ENGINES)
def test_half_precision_accumulates_in_float32(dtype: torch.dtype, engine: str) -> None:
    """5000 ones summed: a float16 accumulator stalls at 2048, float32 gives 5000."""
    x = torch.zeros(8, 3, dtype=dtype)
    y = torch.zeros(5000, 3, dtype=dtype)
    out = (-lm.Vi(x).sqdist(lm.Vj(y))).exp().sum(axis=1, engine=engine)
    assert out.dtype == dtype
    assert torch.all(out == 5000)
    xs, ys, b, s = _data(dtype=dtype)
    got = _softmin(xs, ys, b, s).logsumexp(axis=1, engine=engine)
    assert got.dtype == dtype
    ref = torch.logsumexp(_softmin_dense(xs, ys, b, s), 1)
    torch.testing.assert_close(got[:, 0].double(), ref, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("engine", ENGINES)
def test_float32_matches_float64(engine: str) -> None:
    x, y, b, s = _data(dtype=torch.float32)
    F = _softmin(x, y, b, s)
    got = F.logsumexp(axis=1, engine=engine)
    assert got.dtype == torch.float32
    torch.testing.assert_close(
        got[:, 0].double(), torch.logsumexp(_softmin_dense(x, y, b, s), 1), rtol=1e-5, atol=1e-5
    )


# -- the whole IR on torch-tiled ------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_vector_operations_match_dense(engine: str) -> None:
    """Concat, slices, small matrix products, one-hot, ifelse, minimum, tanh vs dense torch."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(9, 2, generator=g, dtype=F64)
    y = torch.randn(11, 2, generator=g, dtype=F64)
    A = torch.randn(6, generator=g, dtype=F64)  # a 3x2 matrix, row-major
    c = torch.tensor([2.0], dtype=F64)
    X, Y, P = lm.Vi(x), lm.Vj(y), lm.Pm(A)
    F = (
        P.matvecmult(X - Y).concat(X.tensorprod(Y))[1:6].inner_sum()
        + (X[0] - Y[1]).ifelse(X[1], Y[0]).minimum(lm.Pm(c))
        + (X[0] * 2.0 - Y[0] * 0.0 + 1.0).one_hot(4)[2]
        + (X[1] * Y[0]).tanh() * (X[0] + Y[1]) ** -2
    )
    d = x[:, None, :] - y[None, :, :]
    mv = d @ A.reshape(3, 2).T
    tp = (x[:, None, :, None] * y[None, :, None, :]).reshape(9, 11, 4)
    cat = torch.cat((mv, tp), -1)[..., 1:6].sum(-1)
    ife = torch.where(x[:, None, 0] - y[None, :, 1] >= 0, x[:, None, 1], y[None, :, 0]).clamp(max=2.0)
    onehot = (torch.round(x[:, None, 0] * 2.0 + 1.0 + 0 * y[None, :, 0]) == 2).to(F64)
    tanh = torch.tanh(x[:, None, 1] * y[None, :, 0]) * (x[:, None, 0] + y[None, :, 1]) ** -2
    dense = cat + ife + onehot + tanh
    got = F.sum(axis=1, engine=engine)
    torch.testing.assert_close(got[:, 0], dense.sum(1), rtol=1e-12, atol=1e-12)
