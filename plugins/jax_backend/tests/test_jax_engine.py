"""The jax-xla engine: every reduction against dense float64 numpy, on several row and
column tiles with padding on both sides; jit; float32 without x64; peak memory; OTT-JAX."""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

import lazymat as lm
from lazymat.builtin_engines.reference import formula_width, tile_sizes
from lazymat.request import build_request

jax.config.update("jax_enable_x64", True)

BE = lm.get_registry().backend("jax")
N, M, K = 7, 1500, 3  # 3 row tiles of 3 (2 padded rows), 2 column tiles of 1024 (548 padded)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    # y far from the origin: padded (zero) columns would be the nearest points, so a
    # reduction that let padding in would return a wrong min/max/log-sum-exp/K-min
    return {
        "x": rng.standard_normal((N, 3)),
        "y": rng.standard_normal((M, 3)) + 3.0,
        "b": rng.standard_normal((M, 2)),
    }


def _tile_bytes(K_: lm.LazyMatrix, reduction: str) -> int:
    """A budget giving 3-row by 1024-column tiles for this formula (float64)."""
    spec, args = K_.prepare(reduction, 1, K if reduction.startswith(("k", "argk")) else 0)
    probe = build_request(spec, args, BE, 1 << 30)
    budget = 3 * 1024 * formula_width(probe) * 8
    assert tile_sizes(build_request(spec, args, BE, budget), 8) == (3, 1024)
    return budget


def _dense(data: dict[str, np.ndarray]) -> dict[str, Any]:
    x, y, b = data["x"], data["y"], data["b"]
    D = np.sum((x[:, None] - y[None]) ** 2, -1)
    order = np.argsort(D, axis=1, kind="stable")[:, :K]
    return {
        "sum": [np.sum(np.exp(-D / 10)[..., None] * b[None] + 1.0, 1)],
        "lse": [logsumexp(-D, axis=1)[:, None]],
        "min": [D.min(1)[:, None]],
        "argmin": [D.argmin(1)[:, None]],
        "min_argmin": [D.min(1)[:, None], D.argmin(1)[:, None]],
        "max": [(-D).max(1)[:, None]],
        "argmax": [(-D).argmax(1)[:, None]],
        "max_argmax": [(-D).max(1)[:, None], (-D).argmax(1)[:, None]],
        "kmin": [np.take_along_axis(D, order, 1)],
        "argkmin": [order],
        "kmin_argkmin": [np.take_along_axis(D, order, 1), order],
    }


def _matrix(reduction: str, x: Any, y: Any, b: Any) -> lm.LazyMatrix:
    D = lm.Vi(x).sqdist(lm.Vj(y))
    if reduction == "sum":
        return (-D / 10).exp() * lm.Vj(b) + 1.0
    if reduction in ("lse", "max", "argmax", "max_argmax"):
        return -D
    return D


REDUCTIONS = ["sum", "lse", "min", "argmin", "min_argmin", "max", "argmax", "max_argmax"]
REDUCTIONS += ["kmin", "argkmin", "kmin_argkmin"]


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_every_reduction_against_dense_numpy(data: dict[str, np.ndarray], reduction: str) -> None:
    arrays = {k: jnp.asarray(v) for k, v in data.items()}
    K_ = _matrix(reduction, arrays["x"], arrays["y"], arrays["b"])
    with lm.config(tile_bytes=_tile_bytes(K_, reduction)):
        got = K_.reduce(reduction, 1, k=K)
    assert lm.engines()["jax-xla"] and all(BE.recognizes(g) for g in got)
    for g, r in zip(got, _dense(data)[reduction], strict=True):
        assert g.shape == r.shape
        if np.issubdtype(r.dtype, np.integer):
            assert g.dtype == jnp.int64
            np.testing.assert_array_equal(g, r)
        else:
            assert g.dtype == jnp.float64
            np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12)


def test_jit_and_retracing_with_new_shapes(data: dict[str, np.ndarray]) -> None:
    @jax.jit
    def f(x: Any, y: Any) -> Any:
        D = lm.Vi(x).sqdist(lm.Vj(y))
        return (-D).logsumexp(axis=1), D.argKmin(2, axis=0)

    for n, m in ((N, M), (4, 9)):  # the second call traces again, for the new shapes
        x, y = data["x"][:n], data["y"][:m]
        lse, arg = f(jnp.asarray(x), jnp.asarray(y))
        D = np.sum((x[:, None] - y[None]) ** 2, -1)
        np.testing.assert_allclose(lse, logsumexp(-D, axis=1)[:, None], rtol=1e-12)
        np.testing.assert_array_equal(arg, np.argsort(D, axis=0, kind="stable")[:2].T)


def test_float32_without_x64(data: dict[str, np.ndarray]) -> None:
    """jax's 32-bit mode: float32 values, int32 indices (jax has no int64), no warnings."""
    D = np.sum((data["x"][:, None] - data["y"][None]) ** 2, -1)
    with jax.enable_x64(False), warnings.catch_warnings():
        warnings.simplefilter("error")
        x, y = jnp.asarray(data["x"], jnp.float32), jnp.asarray(data["y"], jnp.float32)
        K_ = lm.Vi(x).sqdist(lm.Vj(y))
        lse = (-K_).logsumexp(axis=1)
        values, indices = K_.Kmin_argKmin(2, axis=1)
    assert lse.dtype == jnp.float32 and values.dtype == jnp.float32 and indices.dtype == jnp.int32
    np.testing.assert_allclose(lse, logsumexp(-D, axis=1)[:, None], rtol=1e-5)
    np.testing.assert_allclose(values, np.sort(D, 1)[:, :2], rtol=1e-5)
    np.testing.assert_array_equal(indices, np.argsort(D, 1, kind="stable")[:, :2])


def test_batch_dimensions_broadcast(data: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(1)
    x, y, s = rng.standard_normal((2, 1, 5, 3)), rng.standard_normal((3, 6, 3)), rng.random((2, 3, 1)) + 0.5
    K_ = (-lm.Vi(jnp.asarray(x)).sqdist(lm.Vj(jnp.asarray(y))) / lm.Pm(jnp.asarray(s))).exp()
    got = K_.sum(axis=1)
    D = np.sum((x[..., :, None, :] - y[..., None, :, :]) ** 2, -1)
    np.testing.assert_allclose(got[..., 0], np.sum(np.exp(-D / s[..., None]), -1), rtol=1e-12)


def test_forced_reference_engine_agrees_under_jit_and_grad(data: dict[str, np.ndarray]) -> None:
    x, y = jnp.asarray(data["x"]), jnp.asarray(data["y"][:40])

    def loss(x: Any) -> Any:
        return jnp.sum(lm.Vi(x).sqdist(lm.Vj(y)).Kmin(2, axis=1) ** 2)

    with lm.config(engine="reference"):
        ref = jax.jit(jax.value_and_grad(loss))(x)
    got = jax.jit(jax.value_and_grad(loss))(x)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-12)
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-12)


def test_peak_memory_stays_linear() -> None:
    """XLA's own accounting: no N*M buffer in a reduction, its gradient, or grad of grad."""
    n = m = 2000
    rng = np.random.default_rng(2)
    x, y = jnp.asarray(rng.random((n, 3)), jnp.float32), jnp.asarray(rng.random((m, 3)), jnp.float32)

    def f(x: Any, y: Any) -> Any:
        with lm.config(tile_bytes=2**20, engine="jax-xla"):  # by priority, native-cpu at this size
            return jnp.sum((-lm.Vi(x).sqdist(lm.Vj(y))).logsumexp(axis=1))

    def dense(x: Any, y: Any) -> Any:
        return jnp.sum(jax.nn.logsumexp(-jnp.sum((x[:, None] - y[None]) ** 2, -1), 1))

    def grad_norm(x: Any, y: Any) -> Any:
        return jnp.sum(jax.grad(f)(x, y) ** 2)

    nm_bytes = n * m * 4
    temps = {}
    for fn in (f, jax.grad(f, argnums=(0, 1)), jax.grad(grad_norm), dense):
        analysis = jax.jit(fn).lower(x, y).compile().memory_analysis()
        assert analysis is not None, "XLA gave no memory analysis on this platform"
        temps[fn] = analysis.temp_size_in_bytes
    assert temps[dense] >= nm_bytes  # the accounting does see an N*M buffer when there is one
    assert max(temps[fn] for fn in temps if fn is not dense) < nm_bytes / 8, temps


def test_log_sum_exp_against_ott_jax(data: dict[str, np.ndarray]) -> None:
    """OTT-JAX's PointCloud.apply_lse_kernel: eps * log sum_j exp((g_j - |x_i - y_j|^2) / eps)."""
    from ott.geometry.pointcloud import PointCloud

    eps = 0.7
    x, y = jnp.asarray(data["x"]), jnp.asarray(data["y"][:300])
    g = jnp.asarray(np.random.default_rng(3).standard_normal(300))
    geom = PointCloud(x, y, epsilon=eps)
    ref = geom.apply_lse_kernel(jnp.zeros(N), g, eps, axis=1)[0]
    got = eps * ((lm.Vj(g) - lm.Vi(x).sqdist(lm.Vj(y))) / eps).logsumexp(axis=1)
    np.testing.assert_allclose(got[:, 0], ref, rtol=1e-12)


def _gaussian_loss(x: Any, y: Any, b: Any) -> Any:
    return ((-lm.Vi(x).sqdist(lm.Vj(y))).exp() @ b).sum()


def _dense_loss_and_grad(x: np.ndarray, y: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray]:
    """sum_ij exp(-|x_i - y_j|^2) b_j and its gradient in x, dense float64."""
    diff = x[:, None, :] - y[None, :, :]
    k = np.exp(-(diff**2).sum(-1)) * b[None, :, 0]
    return float(k.sum()), -2.0 * (k[:, :, None] * diff).sum(1)


@pytest.mark.parametrize(("n", "fused"), [(60, True), (600, False)])
def test_small_reductions_under_jit_are_fused_into_the_users_program(n: int, fused: bool) -> None:
    """Under jax.jit, a reduction of at most ``fused_max_pairs`` pairs that fits one tile runs
    as XLA code inside the user's program, gradient included (no ``pure_callback`` to
    native-cpu, which costs more than the small problem); a larger one keeps native-cpu.
    Values and gradients against dense float64 numpy either way."""
    rng = np.random.default_rng(3)
    x, y, b = rng.standard_normal((n, 3)), rng.standard_normal((n, 3)), rng.random((n, 1))
    f = jax.jit(jax.value_and_grad(_gaussian_loss))
    hlo = f.lower(jnp.asarray(x), jnp.asarray(y), jnp.asarray(b)).as_text()
    assert ("callback" not in hlo) is fused, "a small reduction under jit must not call back to the host"
    value, grad = f(jnp.asarray(x), jnp.asarray(y), jnp.asarray(b))
    want, want_grad = _dense_loss_and_grad(x, y, b)
    np.testing.assert_allclose(float(value), want, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-10, atol=1e-12)
