"""Reductions under jax's transformations: grad, grad of grad, hessian and jvp against
finite differences (float64), vmap against dense numpy, and their compositions with jit.

Every test runs twice: engine chosen by dispatch (jax-xla at these sizes), and native-cpu
forced (the primitive's callback, which every rule binds again).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

import lazymat as lm
from lazymat.builtin_engines.native_build import find_compiler

jax.config.update("jax_enable_x64", True)

RNG = np.random.default_rng(0)
X, Y, S = RNG.standard_normal((6, 2)), RNG.standard_normal((5, 2)), np.array([0.8])
B, W = RNG.standard_normal((6, 1)), RNG.standard_normal((6, 2))


@pytest.fixture(autouse=True, params=[None, "native-cpu"], ids=["dispatch", "native-cpu"])
def engine(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "native-cpu" and isinstance(find_compiler(), str):
        pytest.skip(f"no C compiler: {find_compiler()}")
    with lm.config(engine=request.param):
        yield request.param


def loss(x: Any, y: Any, s: Any) -> Any:
    """A scalar built from a sum over i, a log-sum-exp, a min over i and a K-min over j."""
    D = lm.Vi(x).sqdist(lm.Vj(y))
    gauss = (-D / lm.Pm(s)).exp()
    total = jnp.sum(jnp.sin((gauss * lm.Vi(jnp.asarray(B))).sum(axis=0)))
    total += jnp.sum((-D / lm.Pm(s)).logsumexp(axis=1) ** 2)
    total += jnp.sum(jnp.cos(D.min(axis=0)))
    return total + jnp.sum(D.Kmin(2, axis=1) * jnp.asarray(W))


def _fd_grad(f: Any, args: list[np.ndarray], h: float = 1e-5) -> list[np.ndarray]:
    """Central finite differences of a scalar function in every coordinate of every input."""
    f = jax.jit(f)
    grads = []
    for k, a in enumerate(args):
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            e = np.zeros_like(a)
            e[idx] = h
            plus = [jnp.asarray(b + e if q == k else b) for q, b in enumerate(args)]
            minus = [jnp.asarray(b - e if q == k else b) for q, b in enumerate(args)]
            g[idx] = (float(f(*plus)) - float(f(*minus))) / (2 * h)
        grads.append(g)
    return grads


def _assert_close(got: Any, ref: Any, rtol: float = 1e-6) -> None:
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(np.asarray(g), r, rtol=rtol, atol=rtol * max(1.0, np.max(np.abs(r))))


def test_grad_matches_finite_differences() -> None:
    got = jax.grad(loss, argnums=(0, 1, 2))(jnp.asarray(X), jnp.asarray(Y), jnp.asarray(S))
    _assert_close(got, _fd_grad(loss, [X, Y, S]))


def test_jit_of_grad_equals_grad() -> None:
    args = (jnp.asarray(X), jnp.asarray(Y), jnp.asarray(S))
    eager = jax.grad(loss, argnums=(0, 1, 2))(*args)
    jitted = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*args)
    _assert_close(jitted, [np.asarray(e) for e in eager], rtol=1e-12)


def test_grad_of_grad_matches_finite_differences() -> None:
    weights = [jnp.asarray(RNG.standard_normal(a.shape)) for a in (X, Y, S)]

    def grad_summary(x: Any, y: Any, s: Any) -> Any:  # its gradient needs second derivatives
        grads = jax.grad(loss, argnums=(0, 1, 2))(x, y, s)
        return sum(jnp.sum(jnp.sin(g) * w) for g, w in zip(grads, weights, strict=True))

    got = jax.grad(grad_summary, argnums=(0, 1, 2))(jnp.asarray(X), jnp.asarray(Y), jnp.asarray(S))
    _assert_close(got, _fd_grad(grad_summary, [X, Y, S]), rtol=1e-5)


def test_hessian_matches_finite_differences_of_the_gradient() -> None:
    """jax.hessian is jacfwd of jacrev: forward mode over reverse mode."""
    y, s = jnp.asarray(Y), jnp.asarray(S)

    def f(x: Any) -> Any:
        return loss(x, y, s)

    hess = np.asarray(jax.hessian(f)(jnp.asarray(X))).reshape(X.size, X.size)
    grad = jax.jit(jax.grad(f))
    h = 1e-5
    columns = []
    for idx in np.ndindex(X.shape):
        e = np.zeros_like(X)
        e[idx] = h
        plus, minus = grad(jnp.asarray(X + e)), grad(jnp.asarray(X - e))
        columns.append((np.asarray(plus) - np.asarray(minus)) / (2 * h))
    fd = np.stack([c.ravel() for c in columns], axis=1)
    np.testing.assert_allclose(hess, fd, rtol=1e-5, atol=1e-6 * np.max(np.abs(fd)))
    np.testing.assert_allclose(hess, hess.T, rtol=1e-10, atol=1e-12)


def test_jvp_matches_finite_differences() -> None:
    tangents = [RNG.standard_normal(a.shape) for a in (X, Y, S)]
    primals = [jnp.asarray(a) for a in (X, Y, S)]
    value, tangent = jax.jvp(loss, primals, [jnp.asarray(t) for t in tangents])
    h = 1e-5
    plus = loss(*[jnp.asarray(a + h * t) for a, t in zip((X, Y, S), tangents, strict=True)])
    minus = loss(*[jnp.asarray(a - h * t) for a, t in zip((X, Y, S), tangents, strict=True)])
    np.testing.assert_allclose(float(value), float(loss(*primals)), rtol=1e-12)
    np.testing.assert_allclose(float(tangent), (float(plus) - float(minus)) / (2 * h), rtol=1e-6)


def _dense_reductions(x: np.ndarray, y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, ...]:
    D = np.sum((x[:, None] - y[None]) ** 2, -1)
    return logsumexp(-D / s, axis=1)[:, None], D.argmin(0)[:, None], np.sort(D, 1)[:, :2]


def _reductions(x: Any, y: Any, s: Any) -> tuple[Any, ...]:
    D = lm.Vi(x).sqdist(lm.Vj(y))
    return (-D / lm.Pm(s)).logsumexp(axis=1), D.argmin(axis=0), D.Kmin(2, axis=1)


def test_vmap_over_a_leading_batch_axis() -> None:
    xs = RNG.standard_normal((3, *X.shape))
    ss = RNG.random((3, 1)) + 0.5
    mapped = jax.jit(jax.vmap(_reductions, in_axes=(0, None, 0)))
    batched = mapped(jnp.asarray(xs), jnp.asarray(Y), jnp.asarray(ss))
    for b in range(3):
        for got, ref in zip(batched, _dense_reductions(xs[b], Y, ss[b]), strict=True):
            np.testing.assert_allclose(got[b], ref, rtol=1e-12)
    # the mapped axis may sit anywhere, here in the middle of y
    ys = RNG.standard_normal((Y.shape[0], 2, 2))
    batched = jax.vmap(_reductions, in_axes=(None, 1, None))(jnp.asarray(X), jnp.asarray(ys), jnp.asarray(S))
    for b in range(2):
        for got, ref in zip(batched, _dense_reductions(X, ys[:, b], S), strict=True):
            np.testing.assert_allclose(got[b], ref, rtol=1e-12)


def test_vmap_of_grad_and_grad_of_vmap() -> None:
    xs = jnp.asarray(RNG.standard_normal((2, *X.shape)))
    y, s = jnp.asarray(Y), jnp.asarray(S)
    per_example = jax.vmap(jax.grad(loss), in_axes=(0, None, None))(xs, y, s)
    looped = [jax.grad(loss)(xs[b], y, s) for b in range(2)]
    _assert_close(per_example, [np.asarray(g) for g in looped], rtol=1e-12)

    def summed(y: Any) -> Any:
        return jnp.sum(jax.vmap(loss, in_axes=(0, None, None))(xs, y, s))

    _assert_close([jax.grad(summed)(y)], _fd_grad(summed, [Y]))


def test_block_sparse_reduction_under_grad_and_jvp() -> None:
    """A block-sparse log-sum-exp (run by jax-xla) through jit, grad and jvp."""
    from lazymat.block_sparse import BlockSparsity

    ranges = BlockSparsity((0, 2, 6), (0, 3, 5), ((0,), (0, 1)))
    mask = ranges.dense_mask()
    y = jnp.asarray(Y)

    def f(x: Any) -> Any:
        lse = (-lm.Vi(x).sqdist(lm.Vj(y))).reduce("lse", 1, ranges=ranges)[0]
        return jnp.sum(jnp.sin(lse))

    def dense(x: np.ndarray) -> float:
        D = np.where(mask, -np.sum((x[:, None] - Y[None]) ** 2, -1), -np.inf)
        return float(np.sum(np.sin(logsumexp(D, axis=1))))

    np.testing.assert_allclose(float(jax.jit(f)(jnp.asarray(X))), dense(X), rtol=1e-12)
    _assert_close([jax.grad(f)(jnp.asarray(X))], _fd_grad(f, [X]))  # f itself agrees with dense
    t = RNG.standard_normal(X.shape)
    _, tangent = jax.jvp(f, (jnp.asarray(X),), (jnp.asarray(t),))
    h = 1e-5
    np.testing.assert_allclose(float(tangent), (dense(X + h * t) - dense(X - h * t)) / (2 * h), rtol=1e-6)
