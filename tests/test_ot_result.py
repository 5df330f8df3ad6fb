"""The one OT result object (lazymat.solvers.OTResult) and its plan (TransportPlan), on point clouds.

References: POT's converged log-domain Sinkhorn plan (``ot.sinkhorn(..., method="sinkhorn_log")``,
the same entropic problem: cost |x - y|^2 / 2, reg = eps) for the plan, its marginals, its largest
entries (numpy sorts of POT's dense plan) and the barycentric map (POT's plan times y, divided by a);
POT on the dense matrix of a custom cost (|x - y|_1) and POT's ``sinkhorn_unbalanced`` (KL marginals)
for the plans of those problems; GeomLoss for ``SamplesLoss(potentials=True)``. Grids have their own
tests (test_grid_ot.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_sinkhorn import BACKENDS, WITH_STRICT, arr, npy, problem

from lazymat.solvers import OTResult, SamplesLoss, TransportPlan, sinkhorn

ot = pytest.importorskip("ot")

BLUR = 0.3


def pot_plan(a: np.ndarray, x: np.ndarray, b: np.ndarray, y: np.ndarray, eps: float) -> np.ndarray:
    """POT's entropic plan for C = |x - y|^2 / 2 at reg = eps, run to convergence."""
    C = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1) / 2
    return ot.sinkhorn(a, b, C, eps, method="sinkhorn_log", stopThr=1e-14, numItermax=100_000)


def dense(plan: TransportPlan, m: int) -> np.ndarray:
    """The plan as a dense array, from products with the identity (tests only)."""
    return npy(plan @ plan.backend.from_numpy(np.eye(m)))


def solved(backend: str, seed: int = 3, n: int = 17, m: int = 13):
    a, x, b, y = problem(seed, n=n, m=m)
    r = sinkhorn(*(arr(backend, v) for v in (x, y, a, b)), blur=BLUR, scaling=0.8, tol=1e-13)
    return r, (a, x, b, y), pot_plan(a, x, b, y, BLUR**2)


def smallest_covering(row: np.ndarray, mass: float) -> int:
    """How many of the largest entries of ``row`` it takes to reach ``mass`` of its sum."""
    s = np.sort(row)[::-1]
    return int(np.searchsorted(np.cumsum(s), mass * row.sum() * (1 - 1e-12)) + 1)


@pytest.mark.parametrize("backend", WITH_STRICT)
def test_plan_marginals_and_map_match_pot(backend):
    r, (a, _, _, y), P = solved(backend)
    assert isinstance(r, OTResult) and isinstance(r.plan, TransportPlan)
    np.testing.assert_allclose(dense(r.plan, 13), P, rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(dense(r.plan.T, 17), P.T, rtol=1e-8, atol=1e-14)
    rows, cols = r.marginals
    assert rows.shape == (17,) and cols.shape == (13,)
    np.testing.assert_allclose(npy(rows), P.sum(1), rtol=1e-9)
    np.testing.assert_allclose(npy(cols), P.sum(0), rtol=1e-9)
    err_a, err_b = r.marginal_errors
    assert npy(err_a).shape == () and npy(err_a) < 1e-10 and npy(err_b) < 1e-10
    np.testing.assert_allclose(npy(r.barycentric_map()), P @ y / a[:, None], rtol=1e-8)
    # derived formulas are plain LazyMatrices; the transposed plan is a plan
    assert type(r.plan * 2) is not TransportPlan and isinstance(r.plan.T, TransportPlan)


@pytest.mark.parametrize("backend", BACKENDS)
def test_to_sparse_top_k_and_mass_match_sorted_pot_plan(backend):
    r, _, P = solved(backend)
    order = np.argsort(-P, axis=1)
    for k in (1, 4):
        out = r.plan.to_sparse(top_k=k)
        if backend == "numpy":
            S = out.toarray()
        else:
            idx, vals = (npy(v) for v in out)
            assert idx.shape == (2, 17 * k) and idx.dtype == np.int64
            S = np.zeros_like(P)
            S[idx[0], idx[1]] = vals
        expected = np.zeros_like(P)
        rows = np.arange(17)[:, None]
        expected[rows, order[:, :k]] = P[rows, order[:, :k]]
        np.testing.assert_allclose(S, expected, rtol=1e-8, atol=1e-300)
    for mass in (0.5, 0.9, 1.0):
        out = r.plan.to_sparse(mass=mass)
        if backend == "numpy":
            counts = np.diff(out.indptr)
            S = out.toarray()
        else:
            idx, vals = (npy(v) for v in out)
            counts = np.bincount(idx[0], minlength=17)
            S = np.zeros_like(P)
            S[idx[0], idx[1]] = vals
        need = [smallest_covering(row, mass) for row in P]
        np.testing.assert_array_equal(counts, need)
        kept = np.sort(-P, axis=1)
        for i in range(17):
            np.testing.assert_allclose(np.sort(-S[i][S[i] > 0]), kept[i, : need[i]], rtol=1e-8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_plan_marginals_sparse_and_map(backend):
    data = [problem(s, n=11, m=9) for s in (4, 5)]
    a, x, b, y = (np.stack([d[k] for d in data]) for k in range(4))
    r = sinkhorn(*(arr(backend, v) for v in (x, y, a, b)), blur=BLUR, scaling=0.8, tol=1e-13)
    rows, cols = r.marginals
    assert rows.shape == (2, 11) and cols.shape == (2, 9)
    assert npy(r.marginal_errors[0]).shape == (2,)
    maps = npy(r.barycentric_map())
    idx, vals = (npy(v) for v in r.plan.to_sparse(top_k=2))
    assert idx.shape == (3, 2 * 11 * 2)
    for k in range(2):
        P = pot_plan(a[k], x[k], b[k], y[k], BLUR**2)
        np.testing.assert_allclose(npy(rows)[k], P.sum(1), rtol=1e-9)
        np.testing.assert_allclose(npy(cols)[k], P.sum(0), rtol=1e-9)
        np.testing.assert_allclose(maps[k], P @ y[k] / a[k][:, None], rtol=1e-8)
        mine = idx[0] == k
        S = np.zeros_like(P)
        S[idx[1][mine], idx[2][mine]] = vals[mine]
        expected = np.where(np.sort(P, axis=1)[:, -2:-1] <= P, P, 0.0)
        np.testing.assert_allclose(S, expected, rtol=1e-8, atol=1e-300)


@pytest.mark.filterwarnings("ignore:divide by zero encountered in log")  # POT's log(0)
def test_map_is_nan_where_a_has_no_mass():
    a, x, b, y = problem(6, n=12, m=10)
    a[[2, 7]] = 0.0
    a /= a.sum()
    r = sinkhorn(x, y, a, b, blur=BLUR, scaling=0.8, tol=1e-13)
    P = pot_plan(a, x, b, y, BLUR**2)
    maps = npy(r.barycentric_map())
    assert np.isnan(maps[[2, 7]]).all()
    keep = a > 0
    np.testing.assert_allclose(maps[keep], (P @ y)[keep] / a[keep, None], rtol=1e-8)
    # rows without mass keep no entry
    assert np.diff(r.plan.to_sparse(mass=0.99).indptr)[[2, 7]].tolist() == [0, 0]


def test_to_sparse_rejects_bad_requests(monkeypatch):
    r, _, _ = solved("numpy")
    with pytest.raises(ValueError, match="exactly one of top_k"):
        r.plan.to_sparse()
    with pytest.raises(ValueError, match="exactly one of top_k"):
        r.plan.to_sparse(top_k=2, mass=0.5)
    for k in (0, 14, 2.0, True):
        with pytest.raises(ValueError, match=r"top_k must be an integer in \[1, 13\]"):
            r.plan.to_sparse(top_k=k)
    for mass in (0, 1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"mass must be a number in \(0, 1\]"):
            r.plan.to_sparse(mass=mass)
    import lazymat.solvers.lazy_plan as lazy_plan

    monkeypatch.setattr(lazy_plan, "MAX_SPARSE_ENTRIES", 17 * 12)
    with pytest.raises(ValueError, match="too spread out"):
        r.plan.to_sparse(mass=1.0)
    with pytest.raises(ValueError, match="13"):  # the core names both lengths
        r.plan @ np.ones(5)


def test_gradients_still_envelope_gradients():
    """gradients() moved into the cloud solution: still the POT plan's transport-cost gradient."""
    r, (a, x, b, y), P = solved("numpy")
    gx, gy = r.gradients()
    # d OT / dx_i = sum_j P_ij (x_i - y_j) for the balanced problem at convergence (debiased adds
    # the self terms, which the plain OT value has not: compare with debias=False)
    r0 = sinkhorn(x, y, a, b, blur=BLUR, scaling=0.8, tol=1e-13, debias=False)
    g0x, g0y = r0.gradients()
    np.testing.assert_allclose(g0x, a[:, None] * x - P @ y, atol=1e-9)
    np.testing.assert_allclose(g0y, b[:, None] * y - P.T @ x, atol=1e-9)
    assert gx.shape == x.shape and gy.shape == y.shape


@pytest.mark.parametrize("debias", [True, False])
def test_samples_loss_potentials_keep_geomloss_behaviour(debias):
    """GeomLoss returns f - f_aa, g - g_bb when debiased and f, g otherwise, also unbalanced."""
    gl = pytest.importorskip("geomloss")
    torch = pytest.importorskip("torch")
    a, x, b, y = problem(8, n=15, m=12, mass_b=1.4)
    kw = {"blur": 0.2, "reach": 0.5, "debias": debias, "potentials": True}
    F, G = SamplesLoss("sinkhorn", **kw)(a, x, b, y)
    ref = gl.SamplesLoss("sinkhorn", backend="tensorized", **kw)(*(torch.tensor(v) for v in (a, x, b, y)))
    # same values; shaped like the weights (GeomLoss's tensorized path gives (1, N) for (N,) weights)
    assert F.shape == a.shape and G.shape == b.shape
    np.testing.assert_allclose(F, ref[0].numpy().ravel(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(G, ref[1].numpy().ravel(), rtol=1e-10, atol=1e-12)


def test_plan_of_a_custom_cost_matches_pot_on_its_matrix():
    """A cost given as a formula (here |x - y|_1): the plan is POT's on that dense cost matrix."""
    a, x, b, y = problem(7, n=15, m=11)
    r = sinkhorn(x, y, a, b, cost=lambda u, v: (u - v).abs().inner_sum(), blur=BLUR, scaling=0.8, tol=1e-13)
    C = np.abs(x[:, None, :] - y[None, :, :]).sum(-1)
    P = ot.sinkhorn(a, b, C, BLUR**2, method="sinkhorn_log", stopThr=1e-14, numItermax=100_000)
    np.testing.assert_allclose(dense(r.plan, 11), P, rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(npy(r.barycentric_map()), P @ y / a[:, None], rtol=1e-8)


def test_unbalanced_plan_and_marginal_errors_match_pot():
    """KL marginals (reach): POT's sinkhorn_unbalanced with reg = eps, reg_m = rho = reach^2."""
    a, x, b, y = problem(8, n=14, m=12)
    b = 1.5 * b  # masses differ: the plan's marginals are neither a nor b
    r = sinkhorn(x, y, a, b, blur=BLUR, reach=0.5, scaling=0.8, tol=1e-13)
    C = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1) / 2
    P = ot.unbalanced.sinkhorn_unbalanced(
        a, b, C, BLUR**2, 0.5**2, method="sinkhorn_stabilized", stopThr=1e-15, numItermax=100_000
    )
    np.testing.assert_allclose(dense(r.plan, 12), P, rtol=1e-7, atol=1e-14)
    err_a, err_b = (float(npy(e)) for e in r.marginal_errors)
    expected = [np.abs(P.sum(1) - a).sum(), np.abs(P.sum(0) - b).sum()]
    np.testing.assert_allclose([err_a, err_b], expected, rtol=1e-6)
    assert err_a > 1e-3 and err_b > 1e-3
