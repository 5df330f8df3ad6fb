"""``sinkhorn(init=...)``: a warm start from the potentials of a nearby problem.

References: POT's log-domain Sinkhorn (``ot.sinkhorn``, ``method="sinkhorn_log"``) run to
1e-14 on the dense cost, whose primal value <pi, C> + eps KL(pi | a x b) is the entropic OT
value; the debiased divergence from three such solves; finite differences of POT's value
for the gradient. A warm start must give the cold solve's answer (it only changes where the
loop starts) in fewer iterations, on both stacked loops (one dense tile, lazy reductions).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_sinkhorn import WITH_STRICT, arr, kl, npy, problem

import lazymat
from lazymat.solvers import sinkhorn

BLUR = 0.3
EPS = BLUR**2
#: the tile budget of each stacked loop: None (the default) runs the problems on one dense
#: tile, 4096 bytes forces the lazy stacked reductions
PATHS = {"tile": None, "lazy": 4096}


def pot_entropic_ot(a: np.ndarray, x: np.ndarray, b: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """POT's converged entropic OT between (a, x) and (b, y), cost |x - y|^2 / 2: (value, plan)."""
    ot = pytest.importorskip("ot")
    cost = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1) / 2
    plan = ot.sinkhorn(a, b, cost, EPS, method="sinkhorn_log", stopThr=1e-14, numItermax=100000)
    return float(np.sum(plan * cost)) + EPS * kl(plan, np.outer(a, b)), plan


def moved(x: np.ndarray, seed: int) -> np.ndarray:
    """The points moved a little (a solver's step): the warm start's earlier problem."""
    return x + 0.001 * np.random.default_rng(seed).standard_normal(x.shape)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("backend", WITH_STRICT)
def test_warm_start_matches_pot_in_fewer_iterations(backend, path):
    a, x, b, y = problem(11, n=12, m=15)
    value, plan = pot_entropic_ot(a, x, b, y)
    options = {"blur": BLUR, "debias": False, "tol": 1e-12}
    with lazymat.config(tile_bytes=PATHS[path]):
        earlier = sinkhorn(*(arr(backend, v) for v in (moved(x, 1), y, a, b)), **options)
        args = [arr(backend, v) for v in (x, y, a, b)]
        cold = sinkhorn(*args, **options)
        warm = sinkhorn(*args, **options, init=(earlier.f, earlier.g))
    assert warm.converged and warm.schedule == [EPS]
    np.testing.assert_allclose(npy(warm.value), value, rtol=1e-9)
    np.testing.assert_allclose(npy(warm.plan @ warm.plan.backend.from_numpy(np.eye(15))), plan, atol=1e-10)
    assert warm.n_iter < 0.8 * cold.n_iter, (warm.n_iter, cold.n_iter)


@pytest.mark.parametrize("path", list(PATHS))
def test_warm_start_of_the_debiased_divergence_matches_pot(path):
    a, x, b, y = problem(12, n=10, m=13)
    ab, aa, bb = (pot_entropic_ot(*p)[0] for p in ((a, x, b, y), (a, x, a, x), (b, y, b, y)))
    options = {"blur": BLUR, "tol": 1e-12}
    with lazymat.config(tile_bytes=PATHS[path]):
        e = sinkhorn(*(arr("numpy", v) for v in (moved(x, 2), y, a, b)), **options)
        warm = sinkhorn(*(arr("numpy", v) for v in (x, y, a, b)), **options, init=(e.f, e.g, e.f_aa, e.g_bb))
    assert warm.converged
    np.testing.assert_allclose(npy(warm.value), ab - aa / 2 - bb / 2, rtol=1e-8)


def test_batched_warm_start_matches_pot():
    problems = [problem(s, n=9, m=11) for s in (13, 14)]
    a, x, b, y = (np.stack(v) for v in zip(*problems, strict=True))
    options = {"blur": BLUR, "debias": False, "tol": 1e-12}
    earlier = sinkhorn(*(arr("numpy", v) for v in (moved(x, 3), y, a, b)), **options)
    warm = sinkhorn(*(arr("numpy", v) for v in (x, y, a, b)), **options, init=(earlier.f, earlier.g))
    expected = [pot_entropic_ot(*p)[0] for p in problems]
    np.testing.assert_allclose(npy(warm.value), expected, rtol=1e-9)


def test_warm_started_gradient_matches_finite_differences_of_pot():
    torch = pytest.importorskip("torch")
    a, x, b, y = problem(15, n=8, m=9)
    options = {"blur": BLUR, "debias": False, "tol": 1e-13}
    earlier = sinkhorn(*(arr("torch", v) for v in (moved(x, 4), y, a, b)), **options)
    xs = torch.tensor(x, requires_grad=True)
    r = sinkhorn(xs, *(arr("torch", v) for v in (y, a, b)), **options, init=(earlier.f, earlier.g))
    (grad,) = torch.autograd.grad(r.value, [xs])
    h = 1e-5
    for i, k in [(0, 0), (3, 1), (7, 0)]:
        up, down = x.copy(), x.copy()
        up[i, k] += h
        down[i, k] -= h
        fd = (pot_entropic_ot(a, up, b, y)[0] - pot_entropic_ot(a, down, b, y)[0]) / (2 * h)
        np.testing.assert_allclose(float(grad[i, k]), fd, rtol=1e-5, atol=1e-9)


def test_a_warm_start_from_far_away_still_converges_to_pot():
    """The start changes the path, not the answer: potentials of an unrelated problem."""
    a, x, b, y = problem(16, n=12, m=15)
    value, _ = pot_entropic_ot(a, x, b, y)
    far = (np.full(12, 5.0), np.full(15, -3.0))
    near = sinkhorn(*(arr("numpy", v) for v in (moved(x, 5), y, a, b)), blur=BLUR, debias=False, tol=1e-12)
    args = [arr("numpy", v) for v in (x, y, a, b)]
    from_far = sinkhorn(*args, blur=BLUR, debias=False, tol=1e-12, init=far)
    from_near = sinkhorn(*args, blur=BLUR, debias=False, tol=1e-12, init=(near.f, near.g))
    np.testing.assert_allclose(npy(from_far.value), value, rtol=1e-9)
    assert from_near.n_iter < from_far.n_iter


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"debias": False}, "pass tol="),
        ({"debias": False, "tol": 1e-9, "multiscale": True}, "without multiscale"),
        ({"tol": 1e-9}, r"init must be a tuple \(f, g, f_aa, g_bb\)"),
    ],
)
def test_warm_start_without_its_conditions_raises(kwargs, message):
    a, x, b, y = problem(17, n=6, m=7)
    args = [arr("numpy", v) for v in (x, y, a, b)]
    with pytest.raises(ValueError, match=message):
        sinkhorn(*args, blur=BLUR, init=(np.zeros(6), np.zeros(7)), **kwargs)


def test_warm_start_with_wrong_potentials_raises():
    torch = pytest.importorskip("torch")
    a, x, b, y = problem(18, n=6, m=7)
    args = [arr("torch", v) for v in (x, y, a, b)]
    options = {"blur": BLUR, "debias": False, "tol": 1e-9}
    with pytest.raises(ValueError, match=r"init's g must have shape \(7,\)"):
        sinkhorn(*args, **options, init=(torch.zeros(6), torch.zeros(6)))
    with pytest.raises(ValueError, match="'init's f' must hold finite potentials"):
        sinkhorn(*args, **options, init=(torch.full((6,), float("nan")), torch.zeros(7)))
    with pytest.raises(TypeError, match="init's f must be an array of the points' library"):
        sinkhorn(*args, **options, init=(np.zeros(6), np.zeros(7)))
