"""Sinkhorn divergences and entropic OT (lazymat.solvers.sinkhorn), checked against peers.

References: GeomLoss 0.3.1 (torch, "tensorized": dense cost matrices) for values and
potentials, step for step; POT for converged entropic OT (balanced and KL-unbalanced);
SciPy (L-BFGS-B on the dual) for the total-variation penalty; and properties of the
divergence (S(a, a) = 0, S >= 0, symmetry, translations). Every test runs on numpy and
on the other installed backends with float64 data.
"""

from __future__ import annotations

import logging
import math
import re

import numpy as np
import pytest

import lazymat
from lazymat.solvers import sinkhorn
from lazymat.solvers.schedule import epsilon_schedule

# jax (slow to compile each reduction) has its own few tests at the end of the file
BACKENDS = [name for name in ("numpy", "torch") if name in lazymat.backends()]
# the array API standard and nothing more: proves the solvers need nothing else
WITH_STRICT = ["array_api_strict", *BACKENDS]
needs_jax = pytest.mark.skipif(
    "jax" not in lazymat.backends(), reason="the lazymat-jax plugin is not installed"
)


def _enable_x64(name: str) -> None:
    if name == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)


def arr(name: str, v: np.ndarray) -> object:
    _enable_x64(name)
    return lazymat.get_registry().backend(name).from_numpy(np.ascontiguousarray(v))


def npy(v: object) -> np.ndarray:
    b = lazymat.backend_for(v)
    return np.asarray(b.to_numpy(b.stop_gradient(v)))


def problem(seed: int, n: int = 23, m: int = 31, d: int = 2, mass_b: float = 1.0, y_low: float = 0.3):
    """Weights a (mass 1), b (mass ``mass_b``), x in [0, 1)^d, y in [y_low, y_low + 0.8)^d.

    Shared with the other Sinkhorn test files (autodiff, multiscale).
    """
    rng = np.random.default_rng(seed)
    x = rng.random((n, d))
    y = rng.random((m, d)) * 0.8 + y_low
    a = rng.random(n) + 0.2
    b = rng.random(m) + 0.2
    return a / a.sum(), x, mass_b * b / b.sum(), y


def torch_cost(p: int):
    """Cost functions for GeomLoss's tensorized backend, exact at coincident points."""

    def cost(x, y):
        d2 = ((x[:, :, None, :] - y[:, None, :, :]) ** 2).sum(-1)
        return d2 / 2 if p == 2 else (d2 + 1e-30).sqrt()

    return cost


def geomloss(a, x, b, y, *, potentials=False, **kw):
    """GeomLoss's SamplesLoss("sinkhorn", backend="tensorized") on float64 torch tensors."""
    gl = pytest.importorskip("geomloss")
    torch = pytest.importorskip("torch")
    if kw.get("p", 2) == 1 and "cost" not in kw:  # its p=1 cost clamps |x - y| at 1e-4
        kw["cost"] = torch_cost(1)
    loss = gl.SamplesLoss("sinkhorn", backend="tensorized", potentials=potentials, **kw)
    out = loss(*(torch.tensor(v) for v in (a, x, b, y)))
    return tuple(o.numpy() for o in out) if potentials else out.numpy()


# -- GeomLoss -------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", WITH_STRICT)
@pytest.mark.parametrize(
    "kw",
    [
        {"scaling": 0.9},
        {"scaling": 0.9, "p": 1},
        {"scaling": 0.9, "reach": 0.2},
        {"scaling": 0.9, "reach": 1.0, "p": 1},
        {"scaling": 0.9, "debias": False},
        {"scaling": 0.9, "reach": 0.3, "debias": False},
        {},  # GeomLoss's defaults: scaling 0.5, blur 0.05
        {"blur": 0.01, "scaling": 0.7},
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "defaults",
)
def test_values_match_geomloss(backend, kw):
    a, x, b, y = problem(0, mass_b=1.0 if "reach" not in kw else 1.4)
    ref = geomloss(a, x, b, y, **kw)
    r = sinkhorn(*(arr(backend, v) for v in (x, y, a, b)), **kw)
    np.testing.assert_allclose(npy(r.value), ref, rtol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kw", [{"scaling": 0.8}, {"scaling": 0.8, "reach": 0.5}, {"debias": False}])
def test_potentials_match_geomloss(backend, kw):
    a, x, b, y = problem(1)
    ref_f, ref_g = (v.reshape(-1) for v in geomloss(a, x, b, y, potentials=True, **kw))  # GeomLoss: (1, N)
    r = sinkhorn(*(arr(backend, v) for v in (x, y, a, b)), **kw)
    f, g = (r.f - r.f_aa, r.g - r.g_bb) if kw.get("debias", True) else (r.f, r.g)
    np.testing.assert_allclose(npy(f), ref_f, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(npy(g), ref_g, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batches_match_geomloss_and_single_problems(backend):
    rng = np.random.default_rng(2)
    x, y = rng.random((3, 17, 3)), rng.random((3, 22, 3)) + 0.2
    a, b = rng.random((3, 17)) + 0.1, rng.random((3, 22)) + 0.1
    a, b = a / a.sum(1, keepdims=True), b / b.sum(1, keepdims=True)
    r = sinkhorn(*(arr(backend, v) for v in (x, y, a, b)), scaling=0.8)
    assert npy(r.value).shape == (3,) and npy(r.f).shape == (3, 17) and npy(r.g).shape == (3, 22)
    np.testing.assert_allclose(npy(r.value), geomloss(a, x, b, y, scaling=0.8), rtol=1e-7)
    # a batch is its problems side by side, with the diameter of the whole batch
    for k in (0, 2):
        single = sinkhorn(*(arr(backend, v[k]) for v in (x, y, a, b)), scaling=0.8, diameter=math.sqrt(3))
        batch = sinkhorn(*(arr(backend, v) for v in (x, y, a, b)), scaling=0.8, diameter=math.sqrt(3))
        np.testing.assert_allclose(npy(batch.value)[k], npy(single.value), rtol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_custom_cost_matches_geomloss(backend):
    a, x, b, y = problem(3)

    def ours(xi, yj):
        return xi.sqdist(yj).sqrt() * 0.5 + xi.sqdist(yj)

    def theirs(x, y):
        d2 = ((x[:, :, None, :] - y[:, None, :, :]) ** 2).sum(-1)
        return (d2 + 1e-30).sqrt() * 0.5 + d2

    ref = geomloss(a, x, b, y, cost=theirs, scaling=0.8, debias=False)
    r = sinkhorn(*(arr(backend, v) for v in (x, y, a, b)), cost=ours, scaling=0.8, debias=False)
    np.testing.assert_allclose(npy(r.value), ref, rtol=1e-7)


def test_schedule_is_geomloss_schedule():
    gl = pytest.importorskip("geomloss._legacy.sinkhorn_divergence")
    for p, diameter, blur, scaling in [
        (2, 1.7, 0.05, 0.5),
        (1, 3.0, 0.01, 0.9),
        (2, 0.5, 0.1, 0.25),
        (2, 0.01, 0.1, 0.5),
    ]:
        ours = epsilon_schedule(p, diameter, blur, scaling)
        theirs = gl.epsilon_schedule(p, diameter, blur, scaling)
        np.testing.assert_allclose(ours, theirs, rtol=1e-13)


# -- POT (converged entropic OT) -----------------------------------------------------------
def dense_plan(plan, m: int) -> np.ndarray:
    """The plan as a dense array, from products with the identity (tests only)."""
    return npy(plan @ plan.backend.from_numpy(np.eye(m)))


def kl(p: np.ndarray, q: np.ndarray) -> float:
    """Generalised KL(p | q) = <p, log(p / q)> - <p, 1> + <q, 1>."""
    p, q = p.ravel(), q.ravel()
    pos = p > 0
    return float(np.sum(p[pos] * np.log(p[pos] / q[pos])) - p.sum() + q.sum())


@pytest.mark.parametrize("backend", BACKENDS)
def test_balanced_entropic_ot_matches_pot(backend):
    ot = pytest.importorskip("ot")
    a, x, b, y = problem(4, n=12, m=15)
    eps = 0.3**2
    C = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1) / 2
    G = ot.sinkhorn(a, b, C, eps, method="sinkhorn_log", stopThr=1e-14, numItermax=100000)
    # our value <a, f> + <b, g> is the primal <pi, C> + eps KL(pi | a x b) (masses 1)
    primal = float(np.sum(G * C)) + eps * kl(G, np.outer(a, b))
    r = sinkhorn(*(arr(backend, v) for v in (x, y, a, b)), blur=0.3, debias=False, scaling=0.8, tol=1e-13)
    assert r.converged
    np.testing.assert_allclose(npy(r.value), primal, rtol=1e-6)
    np.testing.assert_allclose(dense_plan(r.plan, 15), G, atol=1e-8)
    # POT's sinkhorn2 value is the transport part <pi, C> only
    np.testing.assert_allclose(
        float(ot.sinkhorn2(a, b, C, eps, method="sinkhorn_log", stopThr=1e-14, numItermax=100000)),
        np.sum(dense_plan(r.plan, 15) * C),
        rtol=1e-6,
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("p", [1, 2])
def test_unbalanced_kl_matches_pot(backend, p):
    ot = pytest.importorskip("ot")
    a, x, b, y = problem(5, n=12, m=15, mass_b=1.5)
    eps, rho = 0.3**p, 0.4**p
    d = np.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1))
    C = d if p == 1 else d**2 / 2
    G = ot.unbalanced.sinkhorn_unbalanced(
        a, b, C, eps, rho, method="sinkhorn_stabilized", reg_type="kl", stopThr=1e-15, numItermax=100000
    )
    primal = (
        float(np.sum(G * C)) + eps * kl(G, np.outer(a, b)) + rho * kl(G.sum(1), a) + rho * kl(G.sum(0), b)
    )
    r = sinkhorn(
        *(arr(backend, v) for v in (x, y, a, b)),
        p=p,
        blur=0.3,
        reach=0.4,
        debias=False,
        scaling=0.8,
        tol=1e-13,
    )
    assert r.converged
    np.testing.assert_allclose(dense_plan(r.plan, 15), G, atol=1e-8)
    # GeomLoss's formula (rho + eps/2)(<a, 1 - e^{-f/rho}> + <b, 1 - e^{-g/rho}>) is
    # OT + eps (m_a + m_b) / 2 - eps m_a m_b (see lazymat.solvers.sinkhorn)
    ma, mb = a.sum(), b.sum()
    np.testing.assert_allclose(npy(r.value), primal + eps * (ma + mb) / 2 - eps * ma * mb, rtol=1e-6)


# -- total variation: SciPy on the dual ----------------------------------------------------
def tv_dual_scipy(a, b, C, eps, rho):
    """max over f, g in [-rho, rho] of <a, f> + <b, g> - eps <a x b, exp((f + g - C)/eps) - 1>."""
    optimize = pytest.importorskip("scipy.optimize")
    n = len(a)

    def neg_dual(z):
        f, g = z[:n], z[n:]
        e = np.outer(a, b) * np.exp((f[:, None] + g[None, :] - C) / eps)
        val = a @ f + b @ g - eps * (e.sum() - a.sum() * b.sum())
        grad = np.concatenate([a - e.sum(1), b - e.sum(0)])
        return -val, -grad

    bounds = [(-rho, rho)] * (n + len(b))
    res = optimize.minimize(
        neg_dual, np.zeros(n + len(b)), jac=True, method="L-BFGS-B", bounds=bounds,
        options={"ftol": 1e-16, "gtol": 1e-13, "maxiter": 20000},
    )  # fmt: skip
    return -res.fun


@pytest.mark.parametrize("backend", WITH_STRICT)
@pytest.mark.parametrize("debias", [False, True])
def test_total_variation_matches_scipy_dual(backend, debias):
    a, x, b, y = problem(6, n=7, m=9, mass_b=1.6)
    eps, rho = 0.25**2, 0.3**2
    r = sinkhorn(
        *(arr(backend, v) for v in (x, y, a, b)),
        blur=0.25, reach=0.3, penalty="tv", debias=debias, scaling=0.8, tol=1e-13, max_iter=20000,
    )  # fmt: skip
    assert r.converged

    def cost(u, v):
        return ((u[:, None, :] - v[None, :, :]) ** 2).sum(-1) / 2

    ot_ab = tv_dual_scipy(a, b, cost(x, y), eps, rho)
    if not debias:
        np.testing.assert_allclose(npy(r.value), ot_ab, rtol=1e-7)
        # no duality gap: the primal objective of our plan is the same number
        P = dense_plan(r.plan, 9)
        primal = (
            np.sum(P * cost(x, y)) + eps * kl(P, np.outer(a, b))
            + rho * np.abs(P.sum(1) - a).sum() + rho * np.abs(P.sum(0) - b).sum()
        )  # fmt: skip
        np.testing.assert_allclose(primal, ot_ab, rtol=1e-6)
    else:
        ot_aa = tv_dual_scipy(a, a, cost(x, x), eps, rho)
        ot_bb = tv_dual_scipy(b, b, cost(y, y), eps, rho)
        expected = ot_ab - ot_aa / 2 - ot_bb / 2 + eps / 2 * (a.sum() - b.sum()) ** 2
        np.testing.assert_allclose(npy(r.value), expected, rtol=1e-7)


# -- properties ------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kw", [{"p": 2}, {"p": 1}, {"p": 2, "reach": 0.3}])
def test_divergence_properties(backend, kw):
    a, x, b, y = problem(7)
    X, Y, A, B = (arr(backend, v) for v in (x, y, a, b))
    s_xx = sinkhorn(X, X, A, A, **kw)
    np.testing.assert_allclose(npy(s_xx.value), 0.0, atol=1e-12)
    s_xy = sinkhorn(X, Y, A, B, **kw)
    s_yx = sinkhorn(Y, X, B, A, **kw)
    assert npy(s_xy.value) > 1e-3
    np.testing.assert_allclose(npy(s_xy.value), npy(s_yx.value), rtol=1e-10)
    np.testing.assert_allclose(npy(s_xy.f), npy(s_yx.g), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_translation_costs_half_squared_shift(backend):
    a, x, _, _ = problem(8, d=3)
    t = np.array([0.3, -0.2, 0.1])
    r = sinkhorn(arr(backend, x), arr(backend, x + t), arr(backend, a), arr(backend, a), blur=0.5, tol=1e-12)
    np.testing.assert_allclose(npy(r.value), 0.5 * t @ t, rtol=1e-8)


@pytest.mark.parametrize("backend", WITH_STRICT)
def test_plan_marginals_and_row_queries(backend):
    a, x, b, y = problem(9, n=14, m=19)
    r = sinkhorn(*(arr(backend, v) for v in (x, y, a, b)), blur=0.3, scaling=0.8, tol=1e-12)
    P = dense_plan(r.plan, 19)
    np.testing.assert_allclose(P.sum(1), a, atol=1e-10)
    np.testing.assert_allclose(P.sum(0), b, atol=1e-10)
    np.testing.assert_allclose(npy(r.plan.sum(axis=1))[:, 0], a, atol=1e-10)
    np.testing.assert_array_equal(npy(r.plan.argmax(axis=1))[:, 0], P.argmax(1))
    err_a, err_b = r.marginal_errors
    assert npy(err_a) < 1e-10 and npy(err_b) < 1e-10
    # the plan is the Gibbs kernel rescaled by the potentials (independent dense formula)
    C = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1) / 2
    gibbs = np.outer(a, b) * np.exp((npy(r.f)[:, None] + npy(r.g)[None, :] - C) / r.eps)
    np.testing.assert_allclose(P, gibbs, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_agrees_with_float64(backend):
    a, x, b, y = problem(10)
    r64 = sinkhorn(*(arr(backend, v) for v in (x, y, a, b)))
    r32 = sinkhorn(*(arr(backend, v.astype(np.float32)) for v in (x, y, a, b)))
    assert npy(r32.value).dtype == np.float32 and npy(r32.f).dtype == np.float32
    np.testing.assert_allclose(npy(r32.value), npy(r64.value), rtol=2e-3)


def test_zero_weights_drop_points():
    a, x, b, y = problem(11)
    a[:5] = 0.0
    a /= a.sum()
    full = sinkhorn(x, y, a, b, scaling=0.8)
    kept = sinkhorn(x[5:], y, a[5:], b, scaling=0.8, diameter=full.schedule[0] ** 0.5)
    np.testing.assert_allclose(full.value, kept.value, rtol=1e-10)


def test_iterations_and_verbose(caplog):
    a, x, b, y = problem(12)
    with caplog.at_level(logging.INFO, logger="lazymat"):
        r = sinkhorn(x, y, a, b, verbose=True)
    assert r.n_iter == len(r.schedule) and r.converged is None
    assert r.schedule[-1] == pytest.approx(0.05**2) and r.eps == pytest.approx(0.05**2)
    # verbose: one INFO record per iteration (with the schedule's eps), on the loop's logger
    lines = [m.getMessage() for m in caplog.records if m.name == "lazymat.solvers.sinkhorn_loop"]
    steps = [line for line in lines if re.match(r"sinkhorn: iteration \d+/\d+, eps ", line)]
    assert len(steps) == r.n_iter
    logged_eps = [float(line.split("eps ")[1].split(",")[0]) for line in steps]
    assert logged_eps == pytest.approx(r.schedule, rel=1e-2)
    capped = sinkhorn(x, y, a, b, tol=1e-30, max_iter=len(r.schedule) + 3)
    assert capped.n_iter == len(r.schedule) + 3 and capped.converged is False


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, error, match",
    [
        ({"a": "negative"}, ValueError, "nonnegative"),
        ({"a": "nan"}, ValueError, "NaN"),
        ({"b": "heavier"}, ValueError, "reach"),
        ({"y": "3d"}, ValueError, "dimension 2, y of dimension 3"),
        ({"x": "empty"}, ValueError, "empty"),
        ({"a": "short"}, ValueError, "shape"),
        ({"blur": 0.0}, ValueError, "blur must be a positive"),
        ({"blur": -1.0}, ValueError, "blur must be a positive"),
        ({"reach": 0.0}, ValueError, "reach must be a positive"),
        ({"scaling": 1.0}, ValueError, "scaling"),
        ({"p": 3}, ValueError, "p must be 1 or 2"),
        ({"penalty": "l2"}, ValueError, "penalty"),
        ({"cost": "SqDist(X,Y)"}, TypeError, "formula strings"),
        ({"x": "int"}, TypeError, "floating"),
        ({"x": "batched"}, ValueError, "both be batched"),
    ],
)
def test_bad_input(change, error, match):
    a, x, b, y = problem(13)
    args = {"x": x, "y": y, "a": a, "b": b}
    kw = {}
    bad = {
        "negative": lambda v: v - 0.1,
        "nan": lambda v: np.where(np.arange(len(v)) == 2, np.nan, v),
        "heavier": lambda v: 1.5 * v,
        "3d": lambda v: np.concatenate([v, v[:, :1]], axis=1),
        "empty": lambda v: v[:0],
        "short": lambda v: v[:-1],
        "int": lambda v: (10 * v).astype(np.int64),
        "batched": lambda v: v[None],
    }
    for key, what in change.items():
        if key in args:
            args[key] = bad[what](args[key])
        else:
            kw[key] = what
    with pytest.raises(error, match=match):
        sinkhorn(args["x"], args["y"], args["a"], args["b"], **kw)


def test_unbalanced_accepts_different_masses():
    a, x, b, y = problem(14, mass_b=2.0)
    with pytest.raises(ValueError, match="reach"):
        sinkhorn(x, y, a, b)
    assert np.isfinite(sinkhorn(x, y, a, b, reach=0.5).value)


# -- jax ---------------------------------------------------------------------------------------
@needs_jax
def test_jax_matches_geomloss():
    kw = {"reach": 0.3, "p": 1}
    a, x, b, y = problem(15, n=9, m=11, mass_b=1.3)
    r = sinkhorn(*(arr("jax", v) for v in (x, y, a, b)), **kw)
    np.testing.assert_allclose(npy(r.value), geomloss(a, x, b, y, **kw), rtol=1e-7)
    # the plan as a LazyMatrix of jax arrays: its (unconverged) Gibbs form, densely
    C = np.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1))
    gibbs = np.outer(a, b) * np.exp((npy(r.f)[:, None] + npy(r.g)[None, :] - C) / r.eps)
    np.testing.assert_allclose(dense_plan(r.plan, 11), gibbs, rtol=1e-9, atol=1e-15)


@needs_jax
def test_jax_jit():
    import jax

    a, x, b, y = problem(17, n=8, m=9)
    X, Y, A, B = (arr("jax", v) for v in (x, y, a, b))
    jitted = jax.jit(lambda *v: sinkhorn(*v, diameter=1.5).value)
    np.testing.assert_allclose(npy(jitted(X, Y, A, B)), geomloss(a, x, b, y, diameter=1.5), rtol=1e-7)
    with pytest.raises(TypeError, match="diameter="):
        jax.jit(lambda *v: sinkhorn(*v).value)(X, Y, A, B)
    with pytest.raises(TypeError, match="tol=None"):
        jax.jit(lambda *v: sinkhorn(*v, diameter=1.5, tol=1e-6).value)(X, Y, A, B)
