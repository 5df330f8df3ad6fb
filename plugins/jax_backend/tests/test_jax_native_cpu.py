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


@pytest.mark.parametrize("n", [60, 300])
def test_dispatch_sends_large_cpu_requests_to_native(
    native_runs: list[int], n: int, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request of at least COMPILE_MIN_PAIRS pairs runs on native-cpu; a smaller one whose
    kernel is neither loaded nor on disk (an empty kernel cache, no background build) runs
    elsewhere; a forced engine wins over priority."""
    monkeypatch.setenv("LAZYMAT_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("LAZYMAT_NATIVE_BACKGROUND", "0")
    x, y, b = RNG.standard_normal((n, 3)), RNG.standard_normal((n, 3)), RNG.standard_normal((n, 2))

    def gauss(x: Any, y: Any, b: Any) -> Any:
        return (-lm.Vi(x).sqdist(lm.Vj(y)) * SCALE).exp() @ b

    got = jax.jit(gauss)(jnp.asarray(x), jnp.asarray(y), jnp.asarray(b))
    want = np.exp(-SCALE * np.sum((x[:, None] - y[None]) ** 2, -1)) @ b
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-13)  # b has both signs
    assert native_runs[0] == (1 if n * n >= COMPILE_MIN_PAIRS else 0)
    with lm.config(engine="jax-xla"):  # a forced engine wins over priority
        jax.jit(lambda *a: gauss(*a))(jnp.asarray(x), jnp.asarray(y), jnp.asarray(b))  # a new trace
    assert native_runs[0] == (1 if n * n >= COMPILE_MIN_PAIRS else 0)


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
