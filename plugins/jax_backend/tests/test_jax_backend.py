"""The jax backend's adapter: recognition, namespace, dtypes and x64, devices, errors,
and the generic ``custom_vjp`` hook (checked against finite differences)."""

from __future__ import annotations

import subprocess
import sys
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lazymat as lm
from lazymat.dispatch import make_call, reduce
from lazymat.ir.node import DimensionError

jax.config.update("jax_enable_x64", True)

BE = lm.get_registry().backend("jax")


def test_plugin_loads_without_importing_jax() -> None:
    code = (
        "import sys, lazymat, lazymat_jax.plugin; "
        "assert 'jax' not in sys.modules, 'loading the plugin imported jax'; "
        "r = lazymat.get_registry(); "
        "assert 'jax' in r.backends and 'jax-xla' in r.engines, sorted(r.engines)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_recognizes_arrays_and_tracers_only() -> None:
    x = jnp.ones((3, 2))
    assert BE.recognizes(x)
    assert lm.backend_for(x) is BE
    assert not BE.recognizes(np.ones((3, 2)))
    assert not BE.recognizes(jax.ShapeDtypeStruct((3, 2), jnp.float32))
    assert not BE.recognizes([1.0, 2.0])
    seen: list[bool] = []

    def probe(a: Any) -> Any:
        seen.append(BE.recognizes(a) and lm.backend_for(a) is BE)
        return jnp.sum(a)

    jax.jit(probe)(x)
    jax.grad(probe)(x)
    jax.vmap(probe)(x)
    jax.jvp(probe, (x,), (x,))
    assert seen == [True] * 4


def test_namespace_gives_jax_indices() -> None:
    xp = BE.namespace(jnp.ones(2))
    assert xp.int64 == jnp.int64
    assert xp.exp is jnp.exp
    with jax.enable_x64(False), warnings.catch_warnings():
        warnings.simplefilter("error")  # jnp.int64 would warn and give int32 here
        assert xp.int64 == jnp.int32
        assert xp.zeros(2, dtype=xp.int64).dtype == jnp.int32


def test_numpy_round_trip_and_devices() -> None:
    a = np.random.default_rng(0).standard_normal((4, 3))
    x = BE.from_numpy(a, "cpu")
    assert BE.recognizes(x) and x.dtype == jnp.float64
    np.testing.assert_array_equal(BE.to_numpy(x), a)
    assert BE.device_name(x) == str(jax.devices("cpu")[0])
    assert BE.devices() == [str(d) for d in jax.devices()]
    assert BE.is_floating(x) and not BE.is_floating(jnp.arange(3))


def test_float64_without_x64_is_refused() -> None:
    with jax.enable_x64(False):
        with pytest.raises(TypeError, match="jax_enable_x64"):
            BE.from_numpy(np.ones((3, 2)))
        x = BE.from_numpy(np.ones((3, 2), dtype=np.float32))
        assert x.dtype == jnp.float32


def test_stop_gradient() -> None:
    def f(x: Any) -> Any:
        return jnp.sum(x * BE.stop_gradient(x))

    x = jnp.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(jax.grad(f)(x), np.asarray(x))  # d/dx (x * c) = c


def test_mixed_libraries_are_refused() -> None:
    x, y = jnp.ones((5, 2)), np.ones((4, 2))
    with pytest.raises(TypeError, match="several libraries"):
        lm.Vi(x).sqdist(lm.Vj(y))
    K = lm.Vi(jnp.ones((5, 2))).sqdist(lm.Vj(jnp.ones((4, 2))))
    spec, args = K.prepare("sum", 1)
    with pytest.raises(TypeError, match="must be jax arrays"):
        reduce(spec, [args[0], np.asarray(args[1])], backend=BE)


def test_mismatched_sizes_under_jit() -> None:
    def f(x: Any, y: Any, z: Any) -> Any:
        return (lm.Vi(x).sqdist(lm.Vj(y)) + lm.Vj(z).sum(axis=-1)).sum(axis=1)

    with pytest.raises(DimensionError, match="different lengths"):
        jax.jit(f)(jnp.ones((5, 2)), jnp.ones((4, 2)), jnp.ones((3, 1)))


# -- the generic custom_vjp hook ---------------------------------------------------------


def _central_fd(f: Any, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        g[idx] = (float(f(jnp.asarray(x + e))) - float(f(jnp.asarray(x - e)))) / (2 * h)
    return g


def _hooked_lse(x: Any, y: Any) -> Any:
    """A log-sum-exp through ``Backend.custom_vjp`` (the base class's ``apply_reduction``)."""
    K = -lm.Vi(x).sqdist(lm.Vj(y))
    spec, args = K.prepare("lse", 1)
    return lm.Backend.apply_reduction(BE, make_call(spec, BE), tuple(args))[0]


def test_custom_vjp_grad_and_grad_of_grad_match_finite_differences() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((6, 2)), jnp.asarray(rng.standard_normal((5, 2)))

    def loss(x: Any) -> Any:
        return jnp.sum(jnp.sin(_hooked_lse(x, y)))

    def dloss(x: Any) -> Any:  # a scalar of the gradient: its gradient needs second derivatives
        return jnp.sum(jnp.cos(jax.grad(loss)(x)) * jnp.arange(x.size).reshape(x.shape))

    np.testing.assert_allclose(jax.grad(loss)(jnp.asarray(x)), _central_fd(loss, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(jax.grad(dloss)(jnp.asarray(x)), _central_fd(dloss, x), rtol=1e-5, atol=1e-7)


def test_custom_vjp_integer_inputs_and_outputs() -> None:
    """Integer inputs get float0 zeros; integer outputs have no cotangent."""

    def forward(v: Any, idx: Any) -> tuple[Any, ...]:
        return (v[idx] ** 2, jnp.argmax(v))

    def backward(inputs: Any, outputs: Any, cots: Any, wanted: Any) -> list[Any]:
        v, idx = inputs
        assert cots[1] is None and wanted == [True, False]
        return [jnp.zeros_like(v).at[idx].add(2 * v[idx] * cots[0]), None]

    def f(v: Any, idx: Any) -> Any:
        value, arg = BE.custom_vjp(forward, backward, [v, idx])
        return jnp.sum(value) + arg

    v, idx = jnp.array([1.0, -2.0, 3.0]), jnp.array([2, 0, 2])
    np.testing.assert_allclose(jax.grad(f)(v, idx), [2.0, 0.0, 12.0])
    g_idx = jax.grad(f, argnums=1, allow_int=True)(v, idx)
    assert g_idx.dtype == jax.dtypes.float0


def test_custom_vjp_refuses_forward_mode_clearly() -> None:
    x, y = jnp.ones((3, 2)), jnp.zeros((4, 2))
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jvp(lambda x: _hooked_lse(x, y), (x,), (x,))


def test_transposition_refuses_nonlinear_reductions() -> None:
    """The primitive is linear only as a sum: transposing another reduction is an error."""
    K = -lm.Vi(jnp.ones((3, 2))).sqdist(lm.Vj(jnp.zeros((4, 2))))
    spec, args = K.prepare("lse", 1)

    def f(x: Any) -> Any:
        return reduce(spec, [x, args[1]], backend=BE)[0]

    with pytest.raises(NotImplementedError, match="linear only as a sum"):
        jax.linear_transpose(f, args[0])(jnp.ones((3, 1)))


def test_call_vjp_with_engine_outside_the_primitive() -> None:
    """The core's call.vjp on jax arrays, the forward run directly (no primitive)."""
    rng = np.random.default_rng(2)
    x, y = jnp.asarray(rng.standard_normal((4, 2))), jnp.asarray(rng.standard_normal((3, 2)))
    K = (-lm.Vi(x).sqdist(lm.Vj(y))).exp()
    spec, args = K.prepare("sum", 1)
    call = make_call(spec, BE)
    out = call.run(*args)
    cot = jnp.ones_like(out[0])
    gx, gy = call.vjp(args, out, [cot], [True, True])
    d = x[:, None] - y[None]
    k = np.exp(-np.sum(np.asarray(d) ** 2, -1))
    np.testing.assert_allclose(gx, np.sum(-2 * k[..., None] * np.asarray(d), 1), rtol=1e-12)
    np.testing.assert_allclose(gy, np.sum(2 * k[..., None] * np.asarray(d), 0), rtol=1e-12)
