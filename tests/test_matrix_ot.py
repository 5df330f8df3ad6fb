"""OT on a cost matrix the user holds (lazymat.solvers.solve) and its plan (MatrixPlan).

References: POT's converged log-domain Sinkhorn (``ot.sinkhorn(..., method="sinkhorn_log")``,
``ot.sinkhorn2``) and unbalanced Sinkhorn (``ot.sinkhorn_unbalanced``, KL marginals, KL(pi | a x b)
entropy) for plans and linear costs; the primal objective written here in dense float64 from the
plan's entries (a zero duality gap certifies the value); finite differences for the gradients in
C, a, b (torch) and POT's plan for dC (torch, jax); numpy sorts of POT's dense plan for
``to_sparse``; the point-cloud solver on C = |x - y|^2 / 2 for the iterates.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_sinkhorn import BACKENDS, WITH_STRICT, arr, npy

import lazymat
from lazymat.solvers import OTResult, sinkhorn, solve
from lazymat.solvers import matrix_plan as matrix_plan_module

ot = pytest.importorskip("ot")

EPS = 0.02


def problem(seed: int = 0, n: int = 23, m: int = 17, mass_b: float = 1.0):
    """A cost matrix (N, M) of random points' |x - y|^2 / 2, weights a (mass 1) and b (mass ``mass_b``)."""
    rng = np.random.default_rng(seed)
    x, y = rng.random((n, 2)), rng.random((m, 2)) * 0.8 + 0.2
    a, b = rng.random(n) + 0.2, rng.random(m) + 0.2
    c = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1) / 2
    return c, a / a.sum(), mass_b * b / b.sum(), x, y


def kl(p: np.ndarray, q: np.ndarray) -> float:
    return float((p * np.log(p / q) - p + q).sum())


def primal(plan: np.ndarray, c: np.ndarray, a: np.ndarray, b: np.ndarray, rho=None, kind="kl") -> float:
    """<pi, C> + eps KL(pi | a x b) + D(pi 1 | a) + D(pi^T 1 | b), in float64."""
    value = float((plan * c).sum()) + EPS * kl(plan, np.outer(a, b))
    if rho is None:
        return value
    rows, cols = plan.sum(1), plan.sum(0)
    if kind == "kl":
        return value + rho * (kl(rows, a) + kl(cols, b))
    return value + rho * float(np.abs(rows - a).sum() + np.abs(cols - b).sum())


def dense(plan, m: int, backend: str) -> np.ndarray:
    """The plan as a dense array, from products with the identity (tests only)."""
    return npy(plan @ arr(backend, np.eye(m)))


@pytest.mark.parametrize("backend", WITH_STRICT)
def test_balanced_plan_and_value_match_pot(backend: str) -> None:
    c, a, b, _, _ = problem()
    r = solve(arr(backend, c), arr(backend, a), arr(backend, b), reg=EPS, tol=1e-13)
    assert isinstance(r, OTResult) and r.converged
    pot = ot.sinkhorn(a, b, c, EPS, method="sinkhorn_log", stopThr=1e-15, numItermax=100_000)
    plan = dense(r.plan, c.shape[1], backend)
    np.testing.assert_allclose(plan, pot, atol=1e-11)
    linear = ot.sinkhorn2(a, b, c, EPS, method="sinkhorn_log", stopThr=1e-15, numItermax=100_000)
    np.testing.assert_allclose((plan * c).sum(), linear, rtol=1e-9)
    np.testing.assert_allclose(float(npy(r.value)), primal(pot, c, a, b), rtol=1e-9)
    rows, cols = (npy(v) for v in r.plan.marginals())
    np.testing.assert_allclose(rows, pot.sum(1), atol=1e-12)
    np.testing.assert_allclose(cols, pot.sum(0), atol=1e-12)
    assert max(float(npy(e)) for e in r.marginal_errors) < 1e-10
    assert r.f.shape == (c.shape[0],) and r.g.shape == (c.shape[1],) and r.f_aa is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_kl_unbalanced_plan_and_value_match_pot(backend: str) -> None:
    c, a, b, _, _ = problem(1, mass_b=1.7)
    rho = 0.3
    r = solve(arr(backend, c), arr(backend, a), arr(backend, b), reg=EPS, unbalanced=rho, tol=1e-13)
    pot = ot.sinkhorn_unbalanced(
        a, b, c, EPS, rho, method="sinkhorn_stabilized", reg_type="kl", stopThr=1e-15, numItermax=100_000
    )
    np.testing.assert_allclose(dense(r.plan, c.shape[1], backend), pot, atol=1e-11)
    np.testing.assert_allclose(float(npy(r.value)), primal(pot, c, a, b, rho), rtol=1e-9)
    assert r.rho == rho


def test_tv_unbalanced_value_has_no_duality_gap() -> None:
    """TV marginals (no POT solver): the dual value equals the primal objective at the plan."""
    c, a, b, _, _ = problem(2, mass_b=1.5)
    rho = 0.05
    r = solve(c, a, b, reg=EPS, unbalanced=rho, unbalanced_type="TV", tol=1e-13)
    plan = dense(r.plan, c.shape[1], "numpy")
    np.testing.assert_allclose(float(r.value), primal(plan, c, a, b, rho, "tv"), rtol=1e-9)
    # and the value is optimal: a feasible perturbation of the plan does not lower the primal
    rng = np.random.default_rng(0)
    for _ in range(3):
        other = plan * np.exp(0.01 * rng.standard_normal(plan.shape))
        assert primal(other, c, a, b, rho, "tv") > float(r.value)


def test_same_iterates_as_the_point_cloud_solver() -> None:
    """C = |x - y|^2 / 2, reg = blur^2, reg_start = diameter^2, scaling = s^2: the clouds' schedule."""
    c, a, b, x, y = problem(3)
    blur, diameter, s = 0.1, 1.5, 0.5
    clouds = sinkhorn(x, y, a, b, blur=blur, diameter=diameter, scaling=s, debias=False)
    matrix = solve(c, a, b, reg=blur**2, reg_start=diameter**2, scaling=s**2)
    assert matrix.schedule == pytest.approx(clouds.schedule, rel=1e-15)
    assert matrix.n_iter == clouds.n_iter
    np.testing.assert_allclose(matrix.f, clouds.f, atol=1e-12)
    np.testing.assert_allclose(matrix.g, clouds.g, atol=1e-12)
    # converged, the values agree (probability measures: both are OT)
    clouds = sinkhorn(x, y, a, b, blur=blur, diameter=diameter, scaling=s, debias=False, tol=1e-14)
    matrix = solve(c, a, b, reg=blur**2, reg_start=diameter**2, scaling=s**2, tol=1e-14)
    np.testing.assert_allclose(float(matrix.value), float(clouds.value), rtol=0, atol=1e-10)


@pytest.mark.parametrize("rho", [None, 0.3])
def test_torch_gradients_match_finite_differences(rho) -> None:
    torch = pytest.importorskip("torch")
    c, a, b, _, _ = problem(4, n=11, m=9)
    ct, at, bt = (torch.tensor(v, requires_grad=True) for v in (c, a, b))
    r = solve(ct, at, bt, reg=0.05, unbalanced=rho, tol=1e-14)
    gc, ga, gb = (v.numpy() for v in torch.autograd.grad(r.value, [ct, at, bt]))

    def value(cc, aa, bb) -> float:
        return float(solve(cc, aa, bb, reg=0.05, unbalanced=rho, tol=1e-14).value)

    rng = np.random.default_rng(5)
    dc, da, db = rng.standard_normal(c.shape), rng.standard_normal(a.shape), rng.standard_normal(b.shape)
    if rho is None:  # balanced: directions that keep the masses equal
        da, db = da - da.mean(), db - db.mean()
    h = 1e-6
    fd_c = (value(c + h * dc, a, b) - value(c - h * dc, a, b)) / (2 * h)
    fd_ab = (value(c, a + h * da, b + h * db) - value(c, a - h * da, b - h * db)) / (2 * h)
    np.testing.assert_allclose((gc * dc).sum(), fd_c, rtol=1e-6)
    np.testing.assert_allclose((ga * da).sum() + (gb * db).sum(), fd_ab, rtol=1e-6)


def test_gradient_in_c_is_pots_plan_torch_and_jax() -> None:
    c, a, b, _, _ = problem(6)
    pot = ot.sinkhorn(a, b, c, EPS, method="sinkhorn_log", stopThr=1e-15, numItermax=100_000)
    torch = pytest.importorskip("torch")
    ct = torch.tensor(c, requires_grad=True)
    (grad,) = torch.autograd.grad(solve(ct, torch.tensor(a), torch.tensor(b), reg=EPS, tol=1e-13).value, [ct])
    np.testing.assert_allclose(grad.numpy(), pot, atol=1e-11)
    if "jax" in lazymat.backends():
        import jax

        cj, aj, bj = (arr("jax", v) for v in (c, a, b))
        grad_j = jax.grad(lambda cc: solve(cc, aj, bj, reg=EPS, tol=1e-13).value)(cj)
        np.testing.assert_allclose(np.asarray(grad_j), pot, atol=1e-11)


@pytest.mark.parametrize("backend", BACKENDS)
def test_plan_queries_by_blocks(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Products, transpose and to_sparse against POT's dense plan, C walked by blocks of 2 rows."""
    c, a, b, _, y = problem(7)
    monkeypatch.setattr(matrix_plan_module, "BLOCK_ENTRIES", 2 * c.shape[1])
    r = solve(arr(backend, c), arr(backend, a), arr(backend, b), reg=EPS, tol=1e-13)
    pot = ot.sinkhorn(a, b, c, EPS, method="sinkhorn_log", stopThr=1e-15, numItermax=100_000)
    v = np.random.default_rng(0).standard_normal((c.shape[0], 3))
    np.testing.assert_allclose(npy(r.plan.T @ arr(backend, v)), pot.T @ v, atol=1e-11)
    np.testing.assert_allclose(npy(r.plan @ arr(backend, y)) / a[:, None], pot @ y / a[:, None], atol=1e-10)
    assert r.plan.shape == c.shape and r.plan.T.shape == c.shape[::-1]
    k = 3
    top = r.plan.to_sparse(top_k=k)
    if backend == "numpy":
        got = top.toarray()
    else:
        (rows, cols), values = (npy(t) for t in top[0]), npy(top[1])
        got = np.zeros(c.shape)
        got[rows, cols] = values
    order = np.argsort(-pot, axis=1)[:, :k]
    want = np.zeros(c.shape)
    np.put_along_axis(want, order, np.take_along_axis(pot, order, axis=1), axis=1)
    np.testing.assert_allclose(got, want, atol=1e-12)
    held = r.plan.to_sparse(mass=0.9)
    kept = held.toarray() if backend == "numpy" else None
    if kept is not None:
        assert np.all(kept.sum(1) >= 0.9 * pot.sum(1) - 1e-12)
        smaller = np.sort(pot, axis=1)[:, ::-1]
        need = (np.cumsum(smaller, axis=1) < 0.9 * pot.sum(1, keepdims=True) * (1 - 1e-12)).sum(1) + 1
        np.testing.assert_array_equal((kept > 0).sum(1), need)


def test_batched_matches_separate_pot_solves() -> None:
    c0, a0, b0, _, _ = problem(8)
    c1, a1, b1, _, _ = problem(9)
    r = solve(np.stack([c0, c1]), np.stack([a0, a1]), np.stack([b0, b1]), reg=EPS, tol=1e-13)
    assert r.value.shape == (2,) and r.f.shape == (2, c0.shape[0])
    plans = npy(r.plan @ np.eye(c0.shape[1]))
    for k, (c, a, b) in enumerate(((c0, a0, b0), (c1, a1, b1))):
        pot = ot.sinkhorn(a, b, c, EPS, method="sinkhorn_log", stopThr=1e-15, numItermax=100_000)
        np.testing.assert_allclose(plans[k], pot, atol=1e-11)
        np.testing.assert_allclose(r.value[k], primal(pot, c, a, b), rtol=1e-9)
    rows, _ = r.plan.marginals()
    assert rows.shape == (2, c0.shape[0])


def test_default_weights_are_uniform() -> None:
    c, _, _, _, _ = problem(10)
    n, m = c.shape
    r = solve(c, reg=EPS, tol=1e-13)
    pot = ot.sinkhorn(np.full(n, 1 / n), np.full(m, 1 / m), c, EPS, method="sinkhorn_log", stopThr=1e-15)
    np.testing.assert_allclose(dense(r.plan, m, "numpy"), pot, atol=1e-11)


def test_bad_input_raises_clear_errors() -> None:
    c, a, b, _, _ = problem(11)
    with pytest.raises(ValueError, match=r"shape \(N, M\) or a batch"):
        solve(c[0], reg=EPS)
    with pytest.raises(ValueError, match="finite costs"):
        solve(np.where(c > 0.3, np.nan, c), reg=EPS)
    with pytest.raises(ValueError, match="nonnegative"):
        solve(c, -a, b, reg=EPS)
    with pytest.raises(ValueError, match="equal total mass"):
        solve(c, a, 2 * b, reg=EPS)
    with pytest.raises(ValueError, match=r"b must have shape \(17,\) for C of shape \(23, 17\)"):
        solve(c, a, a, reg=EPS)
    with pytest.raises(ValueError, match="unbalanced_type"):
        solve(c, a, b, reg=EPS, unbalanced=1.0, unbalanced_type="L2")
    with pytest.raises(ValueError, match="reg must be a positive"):
        solve(c, a, b, reg=0.0)
    with pytest.raises(TypeError, match="real floating"):
        solve(c.astype(np.int64), reg=EPS)
    r = solve(c, a, b, reg=EPS)
    with pytest.raises(NotImplementedError, match="no points"):
        r.barycentric_map()


def dense_symmetric_loop(c: np.ndarray, a: np.ndarray, b: np.ndarray, schedule: list[float]) -> float:
    """GeomLoss's symmetric Sinkhorn loop (balanced) in dense float64 with SciPy, then the dual value."""
    from scipy.special import logsumexp

    def f_of(g, eps):  # -eps log sum_j b_j exp((g_j - C_ij) / eps)
        return -eps * logsumexp(np.log(b)[None, :] + (g[None, :] - c) / eps, axis=1)

    def g_of(f, eps):
        return -eps * logsumexp(np.log(a)[:, None] + (f[:, None] - c) / eps, axis=0)

    zf, zg = np.zeros(len(a)), np.zeros(len(b))
    f, g = f_of(zg, schedule[0]), g_of(zf, schedule[0])
    for eps in schedule:
        f, g = 0.5 * (f + f_of(g, eps)), 0.5 * (g + g_of(f, eps))
    eps = schedule[-1]
    f, g = f_of(g, eps), g_of(f, eps)
    mass = (np.outer(a, b) * np.exp((f[:, None] + g[None, :] - c) / eps)).sum()
    return float(a @ f + b @ g - eps * mass + eps * a.sum() * b.sum())


def test_jax_jit_matches_a_dense_loop_written_here() -> None:
    if "jax" not in lazymat.backends():
        pytest.skip("the lazymat-jax plugin is not installed")
    import jax

    c, a, b, _, _ = problem(12)
    cj, aj, bj = (arr("jax", v) for v in (c, a, b))
    value = jax.jit(lambda cc: solve(cc, aj, bj, reg=0.05, reg_start=1.0, scaling=0.5).value)(cj)
    schedule = solve(c, a, b, reg=0.05, reg_start=1.0, scaling=0.5).schedule
    assert len(schedule) == 7  # 1, 0.5, ..., 0.0625, 0.05
    np.testing.assert_allclose(float(value), dense_symmetric_loop(c, a, b, schedule), rtol=1e-12)
    with pytest.raises(TypeError, match="pass reg_start="):
        jax.jit(lambda cc: solve(cc, aj, bj, reg=0.05).value)(cj)


def test_unconverged_solve_warns() -> None:
    from lazymat.solvers import ConvergenceWarning

    c, a, b, _, _ = problem(13)
    with pytest.warns(ConvergenceWarning, match="before its tolerance"):
        r = solve(c, a, b, reg=EPS, tol=1e-14, max_iter=12)
    assert r.converged is False
