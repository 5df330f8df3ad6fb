"""Gradients of reductions (``lazymat.vjp`` / ``lazymat.grad``) on numpy, against
central finite differences of dense numpy float64 computations and against dense
analytic gradients, including broadcast batch dimensions.

numpy has no autodiff: these gradients are the core's symbolic VJP reductions, the same
ones every backend's autodiff hook calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp, softmax
from test_formulas import ALL_OPS, dense, lazy, problems, variables_of

import lazymat as lm

Arrays = list[np.ndarray]


@pytest.fixture(autouse=True, scope="module")
def reference_engine() -> Iterator[None]:
    """Gradients are core code (symbolic VJPs); run them on the reference engine."""
    with lm.config(engine="reference"):
        yield


def finite_differences(f: Callable[[Arrays], float], arrays: Arrays, h: float = 1e-6) -> Arrays:
    """Central differences of the scalar ``f`` with respect to every entry of every array."""
    grads = []
    for k, a in enumerate(arrays):
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            plus = [b.copy() for b in arrays]
            minus = [b.copy() for b in arrays]
            plus[k][idx] += h
            minus[k][idx] -= h
            g[idx] = (f(plus) - f(minus)) / (2 * h)
        grads.append(g)
    return grads


def assert_grads_close(got: tuple[Any, ...], want: Arrays, rtol: float, what: str) -> None:
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        g = np.asarray(g)
        assert g.shape == w.shape, f"{what}: gradient {k} of shape {g.shape}, expected {w.shape}"
        scale = max(1.0, float(np.abs(w).max()))
        np.testing.assert_allclose(g, w, rtol=0, atol=rtol * scale, err_msg=f"{what}: gradient {k}")


# -- every differentiable reduction, i-, j- and parameter variables ---------------------

#: reduction -> dense numpy version over the last axis of (rows, dim, reduced), and K
DENSE: dict[str, tuple[Callable[[np.ndarray], np.ndarray], int]] = {
    "sum": (lambda v: v.sum(-1), 0),
    "lse": (lambda v: logsumexp(v, axis=-1), 0),
    "min": (lambda v: v.min(-1), 0),
    "max": (lambda v: v.max(-1), 0),
    "min_argmin": (lambda v: v.min(-1), 0),
    "max_argmax": (lambda v: v.max(-1), 0),
    "kmin": (lambda v: np.sort(v[..., 0, :], axis=-1)[..., :3], 3),
    "kmin_argkmin": (lambda v: np.sort(v[..., 0, :], axis=-1)[..., :3], 3),
}


def scalar_formula(x: Any, y: Any, p: Any) -> Any:
    """F_ij = p0 |x_i - y_j|^2 + sin(<x_i, y_j>) + p1 (lazy if the inputs are, else dense)."""
    if isinstance(x, lm.LazyMatrix):
        return x.sqdist(y) * p[0] + (x | y).sin() + p[1]
    xi, yj = x[:, None, :], y[None, :, :]
    return (p[0] * ((xi - yj) ** 2).sum(-1) + np.sin((xi * yj).sum(-1)) + p[1])[..., None]


def vector_formula(x: Any, y: Any, p: Any) -> Any:
    """F_ij = exp(-p0 (x_i - y_j)^2) * y_j + p1 x_i, element-wise on dimension 2."""
    if isinstance(x, lm.LazyMatrix):
        return (-((x - y) ** 2) * p[0]).exp() * y + x * p[1]
    xi, yj = x[:, None, :], y[None, :, :]
    return np.exp(-p[0] * (xi - yj) ** 2) * yj + p[1] * xi


CASES = [
    (reduction, build)
    for reduction in sorted(DENSE)
    for build in (scalar_formula, vector_formula)
    if not (reduction.startswith("kmin") and build is vector_formula)  # K-min: scalar formulas only
]


@pytest.mark.parametrize(("reduction", "build"), CASES, ids=[f"{r}-{b.__name__}" for r, b in CASES])
@pytest.mark.parametrize("axis", [1, 0])
def test_vjp_matches_finite_differences(reduction: str, build: Callable[..., Any], axis: int) -> None:
    rng = np.random.default_rng(sorted(DENSE).index(reduction) * 2 + axis)
    n, m = 4, 5
    x, y, p = rng.normal(size=(n, 2)), rng.normal(size=(m, 2)), rng.uniform(0.5, 1.5, size=2)
    red, k = DENSE[reduction]

    def dense_values(arrays: Arrays) -> np.ndarray:
        F = build(*arrays)  # (N, M, dim)
        F = np.swapaxes(F, 0, 1) if axis == 0 else F
        return red(np.moveaxis(F, 1, -1))  # reduce over the last axis

    out_shape = dense_values([x, y, p]).shape
    cot = rng.normal(size=out_shape)
    want = finite_differences(lambda arrays: float((cot * dense_values(arrays)).sum()), [x, y, p])
    K = build(lm.Vi(x), lm.Vj(y), lm.Pm(p))
    got = lm.vjp(K, cot, reduction=reduction, axis=axis, k=k, wrt=[x, y, p])
    assert_grads_close(got, want, 1e-6, f"{reduction} axis={axis}")
    # lazymat.grad: the gradient of the sum of the values
    want = finite_differences(lambda arrays: float(dense_values(arrays).sum()), [x, y, p])
    got = lm.grad(K, reduction=reduction, axis=axis, k=k, wrt=[x, y, p])
    assert_grads_close(got, want, 1e-6, f"grad {reduction} axis={axis}")


def test_same_array_on_both_sides_gets_both_contributions() -> None:
    """K(x, x) with x as Vi and as Vj: d/dx sums the i- and the j-side gradients."""
    rng = np.random.default_rng(5)
    x, b = rng.normal(size=(6, 3)), rng.normal(size=(6, 1))

    def f(arrays: Arrays) -> float:
        (z,) = arrays
        K = np.exp(-((z[:, None, :] - z[None, :, :]) ** 2).sum(-1))
        return float((K @ b).sum())

    K = (-lm.Vi(x).sqdist(lm.Vj(x))).exp() * lm.Vj(b)
    assert_grads_close(lm.grad(K, wrt=[x]), finite_differences(f, [x]), 1e-6, "K(x, x) b")


def test_arrays_the_formula_does_not_use_get_zeros() -> None:
    rng = np.random.default_rng(6)
    x, y, z = rng.normal(size=(3, 2)), rng.normal(size=(4, 2)), rng.normal(size=(3, 1))
    K = lm.Vi(x).sqdist(lm.Vj(y)) + 0 * lm.Vi(z)  # 0 * z_i is simplified away
    gx, gz = lm.grad(K, wrt=[x, z])
    np.testing.assert_allclose(gx, 2 * (x[:, None, :] - y[None, :, :]).sum(1), rtol=1e-13)
    np.testing.assert_array_equal(gz, np.zeros_like(z))


# -- dense analytic gradients -----------------------------------------------------------


def test_gaussian_kernel_product_gradient_matches_the_formula() -> None:
    """d/dx, d/dy, d/db of <g, K b> with K_ij = exp(-|x_i - y_j|^2 / s^2), written out."""
    rng = np.random.default_rng(7)
    n, m, s = 30, 40, 0.7
    x, y = rng.normal(size=(n, 3)), rng.normal(size=(m, 3))
    b, g = rng.normal(size=(m, 2)), rng.normal(size=(n, 2))
    diff = x[:, None, :] - y[None, :, :]
    Kd = np.exp(-(diff**2).sum(-1) / s**2)
    w = Kd * (g @ b.T)  # (N, M): g_i . b_j K_ij
    want_x = -2 / s**2 * (w[..., None] * diff).sum(1)
    want_y = 2 / s**2 * (w[..., None] * diff).sum(0)
    want_b = Kd.T @ g
    K = (-lm.Vi(x).sqdist(lm.Vj(y)) / s**2).exp() * lm.Vj(b)
    got = lm.vjp(K, g, wrt=[x, y, b])
    for gv, wv in zip(got, (want_x, want_y, want_b), strict=True):
        np.testing.assert_allclose(gv, wv, rtol=1e-11, atol=1e-13)
    # the same sum over i (axis=0): the transposed problem
    gt = rng.normal(size=(m, 2))
    Kt = (-lm.Vi(x).sqdist(lm.Vj(y)) / s**2).exp() * lm.Vi(g)
    gx, gy = lm.vjp(Kt, gt, axis=0, wrt=[x, y])
    wt = Kd * (g @ gt.T)
    np.testing.assert_allclose(gx, -2 / s**2 * (wt[..., None] * diff).sum(1), rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(gy, 2 / s**2 * (wt[..., None] * diff).sum(0), rtol=1e-11, atol=1e-13)


def test_logsumexp_gradient_is_the_softmax() -> None:
    """d/dx_i of <g, lse_j(-|x_i - y_j|^2 / e)> = g_i sum_j softmax_j (-2/e)(x_i - y_j)."""
    rng = np.random.default_rng(8)
    x, y, g = rng.normal(size=(20, 2)), rng.normal(size=(25, 2)), rng.normal(size=(20, 1))
    e = 0.3
    diff = x[:, None, :] - y[None, :, :]
    P = softmax(-(diff**2).sum(-1) / e, axis=1)
    want_x = g * (-2 / e) * (P[..., None] * diff).sum(1)
    want_y = (2 / e) * ((g * P)[..., None] * diff).sum(0)
    gx, gy = lm.vjp(-lm.Vi(x).sqdist(lm.Vj(y)) / e, g, reduction="lse", wrt=[x, y])
    np.testing.assert_allclose(gx, want_x, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(gy, want_y, rtol=1e-11, atol=1e-13)


def test_min_gradient_flows_through_the_argmin_only() -> None:
    rng = np.random.default_rng(9)
    x, y, g = rng.normal(size=(7, 2)), rng.normal(size=(9, 2)), rng.normal(size=(7, 1))
    diff = x[:, None, :] - y[None, :, :]
    j = (diff**2).sum(-1).argmin(1)
    want_y = np.zeros_like(y)
    np.add.at(want_y, j, -2 * g * diff[np.arange(7), j])
    gx, gy = lm.vjp(lm.Vi(x).sqdist(lm.Vj(y)), g, reduction="min", wrt=[x, y])
    np.testing.assert_allclose(gx, 2 * g * diff[np.arange(7), j], rtol=1e-13)
    np.testing.assert_allclose(gy, want_y, rtol=1e-13)


# -- batch dimensions -------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["sum", "lse", "min"])
def test_broadcast_batches_match_a_loop(reduction: str) -> None:
    """x (2,1,N,D), y (3,M,D), scale (2,3,1): gradients sum over the broadcast batch axes."""
    rng = np.random.default_rng(10)
    n, m, d = 5, 6, 2
    x, y = rng.normal(size=(2, 1, n, d)), rng.normal(size=(3, m, d))
    s = rng.uniform(0.5, 2.0, size=(2, 3, 1))
    g = rng.normal(size=(2, 3, n, 1))
    K = -lm.Vi(x).sqdist(lm.Vj(y)) * lm.Pm(s)
    got = lm.vjp(K, g, reduction=reduction, wrt=[x, y, s])
    want = [np.zeros_like(x), np.zeros_like(y), np.zeros_like(s)]
    for a in range(2):
        for c in range(3):
            diff = x[a, 0][:, None, :] - y[c][None, :, :]  # (N, M, D)
            F = -s[a, c, 0] * (diff**2).sum(-1)
            if reduction == "sum":
                W = np.broadcast_to(g[a, c], F.shape)
            elif reduction == "lse":
                W = g[a, c] * softmax(F, axis=1)
            else:
                W = np.zeros_like(F)
                W[np.arange(n), F.argmin(1)] = g[a, c, :, 0]
            want[0][a, 0] += (W[..., None] * -2 * s[a, c, 0] * diff).sum(1)
            want[1][c] += (W[..., None] * 2 * s[a, c, 0] * diff).sum(0)
            want[2][a, c, 0] += (W * -(diff**2).sum(-1)).sum()
    for gv, wv in zip(got, want, strict=True):
        assert gv.shape == wv.shape
        np.testing.assert_allclose(gv, wv, rtol=1e-11, atol=1e-12)


# -- random formulas --------------------------------------------------------------------


@pytest.mark.parametrize("root", ALL_OPS)
@settings(
    max_examples=3,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
@given(data=st.data())
def test_random_formula_gradients(root: str, data: st.DataObject) -> None:
    """vjp of sum, lse, min and K-min of random formulas (each operation at the top of a
    few) vs finite differences of dense numpy."""
    tree, dim, n, m, _, seed = data.draw(problems(root))
    n, m = min(n, 3), min(m, 4)  # finite differences cost 2 reductions per entry
    rng = np.random.default_rng(seed)
    keys = sorted(variables_of(tree))
    rows = {"i": (n,), "j": (m,), "p": ()}
    arrays = [rng.uniform(-1.5, 1.5, rows[key[0]] + (key[2],)) for key in keys]

    def grid(arrs: Arrays) -> np.ndarray:
        with np.errstate(all="ignore"):
            F = dense(tree, dict(zip(keys, arrs, strict=True)))
        G = np.broadcast_to(F, (n, m, dim)).sum(-1)  # the scalar version, (N, M)
        return G

    G0 = grid(arrays)
    if not (np.isfinite(G0).all() and np.abs(G0).max() < 1e4):
        return  # NaN/overflow cases are not about gradients
    wrappers = {"i": lm.Vi, "j": lm.Vj, "p": lm.Pm}
    F = lazy(tree, {key: wrappers[key[0]](a) for key, a in zip(keys, arrays, strict=True)})
    G = F.sum(axis=-1) if dim > 1 else F
    k = min(2, m)
    reductions: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "sum": lambda v: v.sum(1, keepdims=True),
        "lse": lambda v: logsumexp(v, axis=1, keepdims=True),
        "min": lambda v: v.min(1, keepdims=True),
        "kmin": lambda v: np.sort(v, axis=1)[:, :k],
    }
    for name, red in reductions.items():
        cot = rng.normal(size=red(G0).shape)
        want = finite_differences(lambda arrs: float((cot * red(grid(arrs))).sum()), arrays)  # noqa: B023
        got = lm.vjp(G, cot, reduction=name, k=k if name == "kmin" else 0, wrt=arrays)
        assert_grads_close(got, want, 1e-5, f"{name} of {tree}")
