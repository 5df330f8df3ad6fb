"""jax arrays on the native-cpu engine (the primitive's callback) against dense numpy: which
requests dispatch sends there, jax's 32-bit mode, and clear errors when it cannot run one.

Transformations (jit, grad of grad, jvp, vmap) with native-cpu forced are in
test_jax_autodiff.py, the conformance suite in test_jax_conformance.py.
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

import lazymat as lm
from lazymat.builtin_engines.native_build import find_compiler
from lazymat.builtin_engines.native_cpu import COMPILE_MIN_PAIRS, NativeCpuEngine
from lazymat.dispatch import make_call
from lazymat_jax.engine import JaxXlaEngine

jax.config.update("jax_enable_x64", True)
pytestmark = pytest.mark.skipif(isinstance(find_compiler(), str), reason=f"no C compiler: {find_compiler()}")

RNG = np.random.default_rng(3)


@pytest.fixture
def native_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the native-cpu engine's runs (one per callback)."""
    runs = [0]
    run = NativeCpuEngine.run

    def counted(self: NativeCpuEngine, request: Any) -> Any:
        runs[0] += 1
        return run(self, request)

    monkeypatch.setattr(NativeCpuEngine, "run", counted)
    return runs


def _gauss(x: np.ndarray, y: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.exp(-np.sum((x[:, None] - y[None]) ** 2, -1)) @ b


#: a formula no other test compiles (its scale is part of the kernel)
SCALE = 0.8125


@pytest.mark.parametrize("n", [60, 600])
def test_dispatch_sends_large_cpu_requests_to_native(
    native_runs: list[int], n: int, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under jax.jit, a request of more than jax-xla's ``fused_max_pairs`` (hence more than
    COMPILE_MIN_PAIRS) runs on native-cpu; a smaller one runs fused into the program
    (jax-xla), whose kernel is neither loaded nor on disk (an empty kernel cache, no
    background build); a forced engine wins over priority."""
    monkeypatch.setenv("LAZYMAT_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("LAZYMAT_NATIVE_BACKGROUND", "0")
    x, y, b = RNG.standard_normal((n, 3)), RNG.standard_normal((n, 3)), RNG.standard_normal((n, 2))

    def gauss(x: Any, y: Any, b: Any) -> Any:
        return (-lm.Vi(x).sqdist(lm.Vj(y)) * SCALE).exp() @ b

    got = jax.jit(gauss)(jnp.asarray(x), jnp.asarray(y), jnp.asarray(b))
    want = np.exp(-SCALE * np.sum((x[:, None] - y[None]) ** 2, -1)) @ b
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-13)  # b has both signs
    native = n * n > JaxXlaEngine.fused_max_pairs and n * n >= COMPILE_MIN_PAIRS
    assert native_runs[0] == (1 if native else 0)
    with lm.config(engine="jax-xla"):  # a forced engine wins over priority
        jax.jit(lambda *a: gauss(*a))(jnp.asarray(x), jnp.asarray(y), jnp.asarray(b))  # a new trace
    assert native_runs[0] == (1 if native else 0)


def test_float32_without_x64(native_runs: list[int]) -> None:
    """jax's 32-bit mode: float32 values and int32 indices from the engine's int64 ones."""
    x, y = RNG.standard_normal((40, 3)), RNG.standard_normal((30, 3))
    D = np.sum((x[:, None] - y[None]) ** 2, -1)
    with jax.enable_x64(False), warnings.catch_warnings(), lm.config(engine="native-cpu"):
        warnings.simplefilter("error")
        K = lm.Vi(jnp.asarray(x, jnp.float32)).sqdist(lm.Vj(jnp.asarray(y, jnp.float32)))
        lse = (-K).logsumexp(axis=1)
        values, indices = K.Kmin_argKmin(2, axis=1)
        y32 = jnp.asarray(y, jnp.float32)
        grad = jax.grad(lambda x: jnp.sum((-lm.Vi(x).sqdist(lm.Vj(y32))).exp().sum(1)))(
            jnp.asarray(x, jnp.float32)
        )
    assert native_runs[0] >= 3
    assert lse.dtype == jnp.float32 and values.dtype == jnp.float32 and indices.dtype == jnp.int32
    np.testing.assert_allclose(lse, logsumexp(-D, axis=1)[:, None], rtol=1e-5)
    np.testing.assert_allclose(values, np.sort(D, 1)[:, :2], rtol=1e-5)
    np.testing.assert_array_equal(indices, np.argsort(D, 1, kind="stable")[:, :2])
    ref = np.sum(-2 * (x[:, None] - y[None]) * np.exp(-D)[..., None], axis=1)
    np.testing.assert_allclose(grad, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_forcing_native_on_an_unsupported_request_says_why() -> None:
    x = jnp.asarray(RNG.standard_normal((5, 2000)))
    with lm.config(engine="native-cpu"), pytest.raises(ValueError, match=r"native-cpu.*dimension up to"):
        (-lm.Vi(x).sqdist(lm.Vj(x)) * lm.Vi(x)).logsumexp(axis=1)


# -- the host callback differentiated in forward mode -------------------------------------

_HX = RNG.standard_normal((6, 2))
_HY = RNG.standard_normal((5, 2))


def _hooked_loss(x: Any) -> Any:
    """sum_i sin(lse_j -|x_i - y_j|^2) with the reduction's forward pass run outside the
    primitive (``call.run`` inside the generic ``Backend.custom_vjp`` hook), so that an outer
    derivative traces the engine's host callback itself."""
    backend = lm.get_registry().backend("jax")
    spec, args = (-lm.Vi(x).sqdist(lm.Vj(jnp.asarray(_HY)))).prepare("lse", 1)
    return jnp.sum(jnp.sin(lm.Backend.apply_reduction(backend, make_call(spec, backend), tuple(args))[0]))


def _dense_grad(x: np.ndarray) -> np.ndarray:
    """The gradient of ``_hooked_loss``, written out in float64 numpy."""
    diff = x[:, None] - _HY[None]
    logits = -np.sum(diff**2, -1)
    lse = logsumexp(logits, axis=1)
    p = np.exp(logits - lse[:, None])
    return np.cos(lse)[:, None] * np.sum(p[..., None] * -2 * diff, axis=1)


def _dense_hessian(x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """Central differences of ``_dense_grad``: (x.size, x.size)."""
    columns = []
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        columns.append(((_dense_grad(x + e) - _dense_grad(x - e)) / (2 * h)).ravel())
    return np.stack(columns, axis=1)


@pytest.mark.filterwarnings("error::lazymat.EngineWarning")
@pytest.mark.parametrize("forced", [True, False], ids=["native-cpu", "dispatch"])
def test_host_callback_under_forward_mode(native_runs: list[int], forced: bool) -> None:
    """grad of grad, jax.hessian (jacfwd of jacrev) and jvp of grad trace native-cpu's host
    callback under a JVP trace: its jax.custom_jvp rule gives the dense float64 values, with
    no EngineWarning (jax refuses to differentiate a bare pure_callback) and native-cpu run."""
    x = jnp.asarray(_HX)
    v = RNG.standard_normal(_HX.shape)
    grad, hess = _dense_grad(_HX), _dense_hessian(_HX)
    with lm.config(engine="native-cpu" if forced else None):
        got_grad = jax.grad(_hooked_loss)(x)
        got_gg = jax.grad(lambda x: jnp.sum(jax.grad(_hooked_loss)(x) ** 2))(x)
        got_hess = jax.hessian(_hooked_loss)(x)
        got_jvp = jax.jvp(jax.grad(_hooked_loss), (x,), (jnp.asarray(v),))[1]
    tol = {"rtol": 1e-7, "atol": 1e-8 * np.abs(hess).max()}
    np.testing.assert_allclose(got_grad, grad, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(got_gg, (2 * hess @ grad.ravel()).reshape(_HX.shape), **tol)
    np.testing.assert_allclose(np.asarray(got_hess).reshape(hess.shape), hess, **tol)
    np.testing.assert_allclose(got_jvp, (hess @ v.ravel()).reshape(_HX.shape), **tol)
    if forced:
        assert native_runs[0] >= 4
