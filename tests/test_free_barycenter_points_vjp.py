"""The derivative of free-support barycenter points (lazymat.solvers.barycenter_implicit).

Reference: central finite differences of the whole solve (the fixed point re-solved to
stop=1e-26, every Sinkhorn solve to tol=1e-12, float64) along random directions; the
weights', lambdas' and b's directions keep their sums. The perturbed solves start from the
unperturbed points: the derivative is that of this local minimum. A negative control shows
the test can fail: the derivative with the Sinkhorn potentials frozen (the envelope gradient
differentiated again, written densely here with torch) is far from the finite differences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from lazymat.solvers.conjugate_gradient import ConvergenceWarning
from lazymat.solvers.free_barycenter import free_support_barycenter

OPTIONS = {"blur": 0.15, "tol": 1e-12, "max_iter": 2000, "stop": 1e-26}
H = 1e-5
NAMES = ("clouds", "weights", "lambdas", "b")


def problem(seed: int, batch: tuple[int, ...] = ()) -> tuple[np.ndarray, ...]:
    """Two noisy, scaled and shifted copies of one cloud (a well separated barycenter)."""
    rng = np.random.default_rng(seed)
    k, m, n, d = 2, 7, 5, 2
    base = rng.random((*batch, 1, m, d))
    scale = np.array([1.0, 1.3])[:, None, None]
    shift = np.array([[0.0, 0.0], [0.4, 0.1]])[:, None, :]
    y = base * scale + shift + 0.05 * rng.standard_normal((*batch, k, m, d))
    a = rng.random((*batch, k, m)) + 0.5
    lam = np.broadcast_to(np.array([0.3, 0.7]), (*batch, k)).copy()
    b = rng.random((*batch, n)) + 0.5
    return y, a / a.sum(-1, keepdims=True), lam, b / b.sum(-1, keepdims=True), rng.random((*batch, n, d))


def tangent(rng: np.random.Generator, v: np.ndarray, name: str) -> np.ndarray:
    d = rng.standard_normal(v.shape)
    return d if name == "clouds" else d - d.mean(-1, keepdims=True)


@dataclass
class Case:
    data: tuple[np.ndarray, ...]  # clouds, weights, lambdas, b
    x0: np.ndarray
    points: np.ndarray
    cotangent: np.ndarray
    directions: tuple[np.ndarray, ...]
    fd: tuple[float, ...]  # cotangent . dpoints along each direction


def solve(data: tuple[np.ndarray, ...], x0: np.ndarray, blur: float = OPTIONS["blur"]) -> np.ndarray:
    y, a, lam, b = data
    r = free_support_barycenter(y, x0, a, lambdas=lam, b=b, **{**OPTIONS, "blur": blur})
    assert r.converged
    return np.asarray(r.points)


def finite_differences(
    data: tuple[np.ndarray, ...],
    points: np.ndarray,
    v: np.ndarray,
    which: int,
    d: np.ndarray,
    blur: float = OPTIONS["blur"],
) -> float:
    plus, minus = list(data), list(data)
    plus[which], minus[which] = data[which] + H * d, data[which] - H * d
    moved = solve(tuple(plus), points, blur) - solve(tuple(minus), points, blur)
    return float((moved * v).sum() / (2 * H))


@pytest.fixture(scope="module")
def case() -> Case:
    y, a, lam, b, x0 = problem(8)
    data = (y, a, lam, b)
    points = solve(data, x0)
    assert np.ptp(points, axis=0).min() > 0.3  # the points have not collapsed
    rng = np.random.default_rng(0)
    v = rng.standard_normal(points.shape)
    directions = tuple(tangent(rng, t, name) for t, name in zip(data, NAMES, strict=True))
    fd = tuple(finite_differences(data, points, v, k, d) for k, d in enumerate(directions))
    return Case(data, x0, points, v, directions, fd)


def check(case: Case, grads: tuple[object, ...]) -> None:
    for name, g, d, fd in zip(NAMES, grads, case.directions, case.fd, strict=True):
        np.testing.assert_allclose((np.asarray(g) * d).sum(), fd, rtol=1e-6, err_msg=name)


def test_torch_autograd_matches_finite_differences(case: Case) -> None:
    torch = pytest.importorskip("torch")
    inputs = [torch.tensor(v, requires_grad=True) for v in case.data]
    y, a, lam, b = inputs
    r = free_support_barycenter(y, torch.tensor(case.points), a, lambdas=lam, b=b, **OPTIONS)
    np.testing.assert_allclose(r.points.detach().numpy(), case.points, atol=1e-12)
    grads = torch.autograd.grad((r.points * torch.tensor(case.cotangent)).sum(), inputs)
    check(case, tuple(g.numpy() for g in grads))


def test_jax_grad_matches_finite_differences(case: Case) -> None:
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    with jax.enable_x64(True):

        def loss(y: object, a: object, lam: object, b: object) -> object:
            r = free_support_barycenter(y, jnp.asarray(case.points), a, lambdas=lam, b=b, **OPTIONS)
            return (r.points * jnp.asarray(case.cotangent)).sum()

        grads = jax.grad(loss, argnums=(0, 1, 2, 3))(*(jnp.asarray(v) for v in case.data))
    check(case, tuple(np.asarray(g) for g in grads))


def test_numpy_points_vjp_matches_finite_differences(case: Case) -> None:
    y, a, lam, b = case.data
    r = free_support_barycenter(y, case.points, a, lambdas=lam, b=b, **OPTIONS)
    check(case, r.points_vjp(case.cotangent))


def test_frozen_potentials_give_a_wrong_derivative(case: Case) -> None:
    """The negative control: -H_frozen^{-1} dG_frozen/dy, with G = sum_k lambda_k sum_j P^k_ij
    (x_i - y^k_j) and P's potentials f, g held constant (dense torch, float64), misses the
    finite differences by far; the derivative of lazymat does not (test above)."""
    torch = pytest.importorskip("torch")
    y, a, lam, b = (torch.tensor(v) for v in case.data)
    r = free_support_barycenter(
        *case.data[:1], case.points, case.data[1], lambdas=case.data[2], b=case.data[3], **OPTIONS
    )
    f, g, eps = torch.tensor(r.f), torch.tensor(r.g), r.eps

    def gradient(x: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
        c = ((x[None, :, None, :] - yy[:, None, :, :]) ** 2).sum(-1) / 2
        plan = b[None, :, None] * a[:, None, :] * torch.exp((f[:, :, None] + g[:, None, :] - c) / eps)
        moved = (plan[..., None] * (x[None, :, None, :] - yy[:, None, :, :])).sum(2)
        return (lam[:, None, None] * moved).sum(0).reshape(-1)

    x = torch.tensor(case.points)
    assert float(gradient(x, y).abs().max()) < 1e-9  # a stationary point
    hx = torch.autograd.functional.jacobian(lambda xx: gradient(xx, y), x).reshape(x.numel(), -1)
    hy = torch.autograd.functional.jacobian(lambda yy: gradient(x, yy), y).reshape(x.numel(), -1)
    dx = -torch.linalg.solve(hx, hy @ torch.tensor(case.directions[0]).reshape(-1))
    frozen = float((dx.numpy() * case.cotangent.reshape(-1)).sum())
    assert abs(frozen - case.fd[0]) > 0.1 * abs(case.fd[0])


def test_batched_barycenters() -> None:
    """Clouds (B, K, M, D): the B barycenters' points differentiated together (torch)."""
    torch = pytest.importorskip("torch")
    y, a, lam, b, x0 = problem(8, batch=(2,))
    data, blur = (y, a, lam, b), 0.2  # at 0.15 some Sinkhorn solves stop short of tol=1e-12
    points = solve(data, x0, blur)
    rng = np.random.default_rng(1)
    v = rng.standard_normal(points.shape)
    inputs = [torch.tensor(t, requires_grad=True) for t in data]
    options = {**OPTIONS, "blur": blur}
    r = free_support_barycenter(
        inputs[0], torch.tensor(points), inputs[1], lambdas=inputs[2], b=inputs[3], **options
    )
    grads = torch.autograd.grad((r.points * torch.tensor(v)).sum(), inputs)
    for k in (0, 3):  # clouds and b
        d = tangent(rng, data[k], NAMES[k])
        fd = finite_differences(data, points, v, k, d, blur)
        np.testing.assert_allclose((grads[k].numpy() * d).sum(), fd, rtol=1e-6)


def test_list_of_clouds_of_different_sizes() -> None:
    """A list of clouds (M_k differ): numpy points_vjp in the clouds and the lambdas."""
    y, a, lam, b, x0 = problem(12)
    ys, ws = [y[0], y[1][:5]], [a[0], a[1][:5] / a[1][:5].sum()]

    def points(clouds: list[np.ndarray], lambdas: np.ndarray, start: np.ndarray) -> np.ndarray:
        r = free_support_barycenter(clouds, start, ws, lambdas=lambdas, b=b, **OPTIONS)
        assert r.converged
        return np.asarray(r.points)

    x = points(ys, lam, x0)
    rng = np.random.default_rng(2)
    v = rng.standard_normal(x.shape)
    r = free_support_barycenter(ys, x, ws, lambdas=lam, b=b, **OPTIONS)
    gy, gw, glam, gb = r.points_vjp(v)
    assert [g.shape for g in gy] == [(7, 2), (5, 2)] and [g.shape for g in gw] == [(7,), (5,)]
    assert glam.shape == (2,) and gb.shape == (5,)
    dy = [rng.standard_normal(c.shape) for c in ys]
    plus, minus = ([c + s * H * d for c, d in zip(ys, dy, strict=True)] for s in (1, -1))
    fd = ((points(plus, lam, x) - points(minus, lam, x)) * v).sum() / (2 * H)
    np.testing.assert_allclose(sum((g * d).sum() for g, d in zip(gy, dy, strict=True)), fd, rtol=1e-6)
    dl = np.array([1.0, -1.0])
    fd = ((points(ys, lam + H * dl, x) - points(ys, lam - H * dl, x)) * v).sum() / (2 * H)
    np.testing.assert_allclose((glam * dl).sum(), fd, rtol=1e-6)


def test_what_is_not_supported_raises() -> None:
    """Second derivatives and forward mode raise; points short of the fixed point warn."""
    torch = pytest.importorskip("torch")
    y, a, _, _, x0 = problem(8)
    yt = torch.tensor(y, requires_grad=True)
    short = free_support_barycenter(yt, torch.tensor(x0), torch.tensor(a), **{**OPTIONS, "max_iter": 3})
    with pytest.warns(ConvergenceWarning, match="not a fixed point"):
        (g,) = torch.autograd.grad(short.points.sum(), [yt], create_graph=True)
    with pytest.raises(NotImplementedError, match="second derivatives"):
        torch.autograd.grad(g.sum(), [yt])
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    with jax.enable_x64(True), pytest.raises(TypeError, match=r"(?i)custom_vjp"):
        jax.jvp(
            lambda yy: free_support_barycenter(yy, jnp.asarray(x0), **{**OPTIONS, "max_iter": 1}).points,
            (jnp.asarray(y),),
            (jnp.ones(y.shape),),
        )
