"""cupy-nvrtc on a GPU against dense float64 numpy: values, dtypes, devices, DLPack, gradients.

Skipped, with the CUDA runtime's error as the reason, where there is no CUDA device.
References are computed with numpy on the dense (N, M) grid from the same (rounded)
inputs; float16 results (float32 accumulation, rounded once on output) must agree to
2e-3 of the largest value, float32 to 1e-5, float64 to 1e-10.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy.special import logsumexp

import lazymat as lm
from lazymat.dispatch import select_engine
from lazymat.plugin_manager import get_registry
from lazymat.request import build_request
from lazymat.testing import dense as dense_reference

pytestmark = pytest.mark.cuda
cupy = pytest.importorskip("cupy", reason="cupy is not installed")

ENGINE = "cupy-nvrtc"


def close(got: Any, ref: np.ndarray, dtype: str, what: str) -> None:
    """A cupy (or numpy) result against the float64 reference, to ``RTOL[dtype]``."""
    dense_reference.close(cupy.asnumpy(got), ref, dtype, what)


def points(n: int, m: int, dtype: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Data rounded to ``dtype`` and returned in float64 (the reference sees the same numbers)."""
    rng = np.random.default_rng(seed)
    x, y, b = rng.standard_normal((n, 3)), rng.standard_normal((m, 3)), rng.standard_normal((m, 2))
    return tuple(a.astype(dtype).astype(np.float64) for a in (x, y, b))  # type: ignore[return-value]


def on_gpu(*arrays: np.ndarray, dtype: str) -> list[Any]:
    return [cupy.asarray(a.astype(dtype)) for a in arrays]


def test_cupy_nvrtc_is_the_default_engine_for_cupy_arrays() -> None:
    x, y = on_gpu(*points(10, 12, "float32")[:2], dtype="float32")
    spec, args = lm.Vi(x).sqdist(lm.Vj(y)).prepare("sum", 1)
    request = build_request(spec, args, get_registry().backend("cupy"), 2**20)
    assert select_engine(request).name == ENGINE


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_values_against_dense_numpy(dtype: str) -> None:
    x, y, b = points(700, 1500, dtype)
    X, Y, B = (lm.Vi(a) if k == 0 else lm.Vj(a) for k, a in enumerate(on_gpu(x, y, b, dtype=dtype)))
    D = np.sum((x[:, None, :] - y[None, :, :]) ** 2, -1)  # (N, M) in float64
    # Gaussian kernel product, softmin (log-sum-exp), min/argmin, K-min
    (got,) = ((-X.sqdist(Y) * 2.0).exp() * B).reduce("sum", engine=ENGINE)
    assert str(got.dtype) == dtype and isinstance(got, cupy.ndarray)
    close(got, np.exp(-2.0 * D) @ b, dtype, "gaussian product")
    (got,) = (-X.sqdist(Y) / 0.5).reduce("lse", engine=ENGINE)
    close(got, logsumexp(-D / 0.5, axis=1)[:, None], dtype, "softmin")
    val, idx = X.sqdist(Y).reduce("min_argmin", engine=ENGINE)
    close(val, D.min(1)[:, None], dtype, "min")
    idx = cupy.asnumpy(idx)
    assert idx.dtype == np.int64
    if dtype == "float64":
        np.testing.assert_array_equal(idx[:, 0], np.argmin(D, 1))
    else:  # rounding may reorder near-ties: the picked distances must be the minima
        close(np.take_along_axis(D, idx, 1), D.min(1)[:, None], dtype, "argmin picks")
    vals, idx = X.sqdist(Y).reduce("kmin_argkmin", k=10, engine=ENGINE)
    ref = np.sort(D, 1)[:, :10]
    close(vals, ref, dtype, "kmin")
    close(np.take_along_axis(D, cupy.asnumpy(idx), 1), ref, dtype, "argkmin picks")


def test_float16_sums_accumulate_in_float32() -> None:
    """20000 ones: float16 accumulation would stop at 2048 (2048 + 1 rounds to 2048)."""
    x = cupy.zeros((5, 1), dtype=cupy.float16)
    y = cupy.ones((20000, 1), dtype=cupy.float16)
    got = (lm.Vi(x) + lm.Vj(y)).sum(axis=1, engine=ENGINE)
    assert got.dtype == cupy.float16
    np.testing.assert_array_equal(cupy.asnumpy(got).astype(np.float64), np.full((5, 1), 20000.0))


def test_batches_and_non_contiguous_inputs() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 1, 300, 3))
    p = rng.random((2, 3, 1)) + 0.5
    yg = cupy.asarray(rng.standard_normal((3, 3, 400))).swapaxes(-1, -2)  # (3, 400, 3), strided
    assert not yg.flags.c_contiguous
    y = cupy.asnumpy(yg)
    K = (-lm.Vi(cupy.asarray(x)).sqdist(lm.Vj(yg)) * lm.Pm(cupy.asarray(p))).exp()
    got = K.sum(axis=1, engine=ENGINE)
    D = np.sum((x[..., :, None, :] - y[..., None, :, :]) ** 2, -1)  # (2, 3, 300, 400)
    close(got, np.exp(-D * p[..., None]).sum(-1)[..., None], "float64", "batch")


def test_gradients_through_lazymat_vjp_match_dense() -> None:
    x, y, b = points(200, 300, "float64", seed=4)
    b = b[:, :1]
    xg, yg, bg = on_gpu(x, y, b, dtype="float64")
    K = (-lm.Vi(xg).sqdist(lm.Vj(yg)) * 2.0).exp() * lm.Vj(bg)
    cot = np.random.default_rng(5).standard_normal((200, 1))
    with lm.config(engine=ENGINE):
        gx, gy, gb = lm.vjp(K, cupy.asarray(cot), wrt=[xg, yg, bg])
    ref_x, ref_y, ref_b = dense_reference.gaussian_product_vjp(x, y, b, cot, 2.0)
    close(gx, ref_x, "float64", "d/dx")
    close(gy, ref_y, "float64", "d/dy")
    close(gb, ref_b, "float64", "d/db")
    for g, a in ((gx, xg), (gy, yg), (gb, bg)):
        assert isinstance(g, cupy.ndarray) and g.device.id == a.device.id


def test_kernels_are_compiled_once_per_formula() -> None:
    engine = get_registry().engine(ENGINE)
    x, y = on_gpu(*points(50, 60, "float32")[:2], dtype="float32")
    (-lm.Vi(x).sqdist(lm.Vj(y)) * 0.37).exp().sum(axis=1, engine=ENGINE)
    count = len(engine._kernels)
    x2, y2 = on_gpu(*points(70, 90, "float32", seed=1)[:2], dtype="float32")
    (-lm.Vi(x2).sqdist(lm.Vj(y2)) * 0.37).exp().sum(axis=1, engine=ENGINE)
    assert len(engine._kernels) == count, "the same formula with new data must reuse its kernel"


def test_outputs_stay_on_the_inputs_device() -> None:
    count = cupy.cuda.runtime.getDeviceCount()
    if count < 2:
        pytest.skip(f"needs two CUDA devices, found {count}")
    x, y, _ = points(40, 50, "float32")
    with cupy.cuda.Device(1):
        xg, yg = on_gpu(x, y, dtype="float32")
    (out,) = (-lm.Vi(xg).sqdist(lm.Vj(yg))).exp().reduce("sum", engine=ENGINE)
    assert out.device.id == 1
    close(out, np.exp(-np.sum((x[:, None] - y[None]) ** 2, -1)).sum(1)[:, None], "float32", "device 1")


def test_dlpack_exchange_with_torch() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("this torch build has no CUDA device")
    be = get_registry().backend("cupy")
    xt = torch.randn(100, 3, device="cuda", dtype=torch.float64)
    yt = torch.randn(120, 3, device="cuda", dtype=torch.float64)
    xg, yg = be.from_dlpack(xt), be.from_dlpack(yt)
    assert xg.data.ptr == xt.data_ptr(), "DLPack must not copy"
    (out,) = (-lm.Vi(xg).sqdist(lm.Vj(yg))).exp().reduce("sum", engine=ENGINE)
    back = torch.from_dlpack(out)
    ref = torch.exp(-((xt[:, None, :] - yt[None, :, :]) ** 2).sum(-1)).sum(1, keepdim=True)
    torch.testing.assert_close(back, ref, rtol=1e-10, atol=1e-10)


def test_dlpack_exchange_with_jax() -> None:
    jax = pytest.importorskip("jax")
    try:
        gpu = jax.devices("gpu")[0]
    except RuntimeError as exc:
        pytest.skip(f"this jax build has no GPU: {exc}")
    be = get_registry().backend("cupy")
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((80, 3)).astype(np.float32), rng.standard_normal((90, 3)).astype(np.float32)
    xg = be.from_dlpack(jax.device_put(x, gpu))
    yg = be.from_dlpack(jax.device_put(y, gpu))
    (out,) = lm.Vi(xg).sqdist(lm.Vj(yg)).reduce("min", engine=ENGINE)
    back = np.asarray(jax.dlpack.from_dlpack(out))
    ref = np.sum((x[:, None].astype(np.float64) - y[None]) ** 2, -1).min(1)[:, None]
    np.testing.assert_allclose(back, ref, rtol=1e-5, atol=1e-5)
