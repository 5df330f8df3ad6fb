"""Multiscale Sinkhorn (grid clusters, kernel truncation), checked against dense solvers.

References: our bruteforce Sinkhorn of the same parameters (itself checked against
GeomLoss and POT in test_sinkhorn.py), converged (``tol``) so that both solve the same
problem, for values, potentials (in the caller's order) and gradients (numpy symbolic
VJPs, torch.autograd, jax.grad); GeomLoss's own multiscale backend (pykeops, on the CPU)
at its default schedule, step for step; and a dense numpy check that the kernel
truncation drops only negligible plan entries.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from scipy.special import logsumexp
from test_sinkhorn import problem

import lazymat
from lazymat.solvers import SamplesLoss, sinkhorn
from lazymat.solvers.multiscale_clusters import candidate_pairs, cloud_hierarchy, kept_pairs


def flat(*arrays) -> np.ndarray:
    return np.concatenate([np.asarray(v).ravel() for v in arrays])


def rel(u, v) -> float:
    """Relative error in norm of u (an array or a tuple of arrays) against v."""
    u, v = (flat(*w) if isinstance(w, tuple) else flat(w) for w in (u, v))
    return float(np.linalg.norm(u - v) / np.linalg.norm(v))


def logged(caplog) -> str:
    """The multiscale loop's verbose records, one a line."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "lazymat.solvers.multiscale")


CONVERGED = {"blur": 0.1, "tol": 1e-5, "max_iter": 2000}


@pytest.mark.parametrize(
    "kw",
    [{}, {"reach": 0.4}, {"p": 1}, {"cluster_levels": 2, "cluster_scale": 0.4}],
    ids=["balanced", "kl", "p=1", "three-levels"],
)
def test_matches_bruteforce_numpy(kw, caplog):
    mass_b = 1.3 if "reach" in kw else 1.0
    a, x, b, y = problem(0, n=100, m=80, mass_b=mass_b, y_low=0.15)
    options = {"cluster_scale": 0.2, **CONVERGED, **kw}
    dense_options = {k: v for k, v in options.items() if k not in ("cluster_scale", "cluster_levels")}
    ref = sinkhorn(x, y, a, b, **dense_options)
    with caplog.at_level(logging.INFO, logger="lazymat.solvers.multiscale"):
        ms = sinkhorn(x, y, a, b, multiscale=True, verbose=True, **options)
    out = logged(caplog)
    assert ref.converged and ms.converged
    levels = 3 if "cluster_levels" in kw else 2
    sizes = out.split("points per level")[1].split("\n")[0]  # "4x3, 16x12, 100x80, jumps ..."
    assert sizes.count("x") == levels
    np.testing.assert_allclose(float(ms.value), float(ref.value), rtol=1e-2)
    # potentials in the caller's order (the solver sorts the points inside)
    scale = np.abs(flat(ref.f, ref.g)).max()
    np.testing.assert_allclose(flat(ms.f, ms.g), flat(ref.f, ref.g), atol=1e-2 * scale)
    assert rel(ms.gradients(), ref.gradients()) < 1e-2


def test_truncation_drops_pairs_and_only_negligible_ones():
    """The coarse plan of kept_pairs vs the dense fine plan: what is dropped is tiny."""
    a, x, b, y = problem(1, n=400, m=300, y_low=0.15)
    s, eps, truncate = 0.1, 0.1**2, 5.0
    ref = sinkhorn(x, y, a, b, blur=0.1, tol=1e-8, max_iter=3000, debias=False)
    hx, hy = cloud_hierarchy(x, a, [s]), cloud_hierarchy(y, b, [s])
    lx, ly = hx.levels[0], hy.levels[0]
    # coarse potentials: the fine ones at the centroids (one soft-min), the best a level can hold
    coarse = sinkhorn(
        lx.points, ly.points, lx.weights, ly.weights, blur=0.1, tol=1e-8, max_iter=3000, debias=False
    )
    i, j = kept_pairs(lx, ly, coarse.f, coarse.g, lambda: candidate_pairs(None, lx, ly), eps, truncate, 2)
    mask = np.zeros((lx.size, ly.size), dtype=bool)
    mask[i, j] = True
    assert 0.1 < mask.mean() < 0.9  # the truncation does drop pairs
    # dense fine plan, in the sorted order, against the cluster mask
    xs, ys, as_, bs = x[hx.perm], y[hy.perm], a[hx.perm], b[hy.perm]
    f, g = np.asarray(ref.f)[hx.perm], np.asarray(ref.g)[hy.perm]
    cost = ((xs[:, None] - ys[None]) ** 2).sum(-1) / 2
    plan = as_[:, None] * bs[None] * np.exp((f[:, None] + g[None] - cost) / eps)
    lab_x = np.repeat(np.arange(lx.size), np.diff(lx.starts))
    lab_y = np.repeat(np.arange(ly.size), np.diff(ly.starts))
    dropped = plan[~mask[lab_x][:, lab_y]].sum()
    assert dropped < 1e-3 * plan.sum()


@pytest.mark.parametrize("p", [1, 2])
def test_kept_children_match_a_direct_enumeration(p, monkeypatch):
    """The padded, chunked candidate test against a plain loop over every child pair of the
    kept parent pairs, with the module's bound written out: the same pairs are kept, and
    every row and column keeps its best pair."""
    import lazymat.solvers.multiscale_clusters as mc

    monkeypatch.setattr(mc, "CHUNK", 256)  # many chunks, and blocks split across them
    rng = np.random.default_rng(4)
    x, y = rng.random((300, 2)), rng.random((250, 2)) + 0.1
    hx = cloud_hierarchy(x, np.full(300, 1 / 300), [0.4, 0.2])
    hy = cloud_hierarchy(y, np.full(250, 1 / 250), [0.4, 0.2])
    (px, cx), (py, cy) = hx.levels[:2], hy.levels[:2]
    parents = np.argwhere(rng.random((px.size, py.size)) < 0.6)
    kept = (parents[:, 0], parents[:, 1])
    f, g = rng.normal(size=cx.size) * 0.05, rng.normal(size=cy.size) * 0.05
    eps, truncate = 0.01, 3.0
    i, j = kept_pairs(cx, cy, f, g, lambda: candidate_pairs(kept, cx, cy), eps, truncate, p)

    h = np.full((cx.size, cy.size), -np.inf)
    slack = np.full((cx.size, cy.size), -np.inf)
    for a, b in parents:
        for u in range(cx.parents[a], cx.parents[a + 1]):
            for v in range(cy.parents[b], cy.parents[b + 1]):
                d = float(np.linalg.norm(cx.points[u] - cy.points[v]))
                h[u, v] = f[u] + g[v] - (d * d / 2 if p == 2 else d)
                w = cx.radii[u] + cy.radii[v]
                slack[u, v] = h[u, v] + w * (np.sqrt(2 * max(-h[u, v], 0.0)) if p == 2 else 2.0)
    # each row's (column's) total of the plan at eps, over its candidates
    row_total = eps * logsumexp(h / eps + np.log(cy.weights)[None, :], axis=1)
    col_total = eps * logsumexp(h / eps + np.log(cx.weights)[:, None], axis=0)
    expected = slack > np.minimum(row_total[:, None], col_total[None, :]) - truncate * eps
    seen = np.isfinite(slack)
    rows, cols = np.flatnonzero(seen.any(1)), np.flatnonzero(seen.any(0))
    expected[rows, slack[rows].argmax(1)] = True
    expected[slack[:, cols].argmax(0), cols] = True
    got = np.zeros_like(expected)
    got[i, j] = True
    assert 0.05 < expected.sum() / seen.sum() < 0.95  # the test does cut
    np.testing.assert_array_equal(got, expected)
    assert np.all(np.diff(i) >= 0) and np.all((np.diff(i) > 0) | (np.diff(j) > 0))  # sorted, distinct


def test_torch_autograd_matches_bruteforce():
    torch = pytest.importorskip("torch")
    if "torch" not in lazymat.backends():
        pytest.skip("the lazymat-torch plugin is not installed")
    a, x, b, y = problem(2, n=100, m=80, mass_b=1.2, y_low=0.15)
    grads = []
    for multiscale in (False, True):
        leaves = [torch.tensor(v, requires_grad=True) for v in (a, x, b, y)]
        extra = {"multiscale": True, "cluster_scale": 0.2} if multiscale else {}
        r = sinkhorn(leaves[1], leaves[3], leaves[0], leaves[2], reach=0.5, **CONVERGED, **extra)
        grads.append((r.value.item(), [g.numpy() for g in torch.autograd.grad(r.value, leaves)]))
    (v0, g0), (v1, g1) = grads
    assert v1 == pytest.approx(v0, rel=1e-2)
    assert rel(g1[1], g0[1]) < 1e-2 and rel(g1[3], g0[3]) < 1e-2  # points
    assert rel(g1[0], g0[0]) < 1e-2 and rel(g1[2], g0[2]) < 1e-2  # weights


def test_jax_grad_matches_bruteforce():
    jax = pytest.importorskip("jax")
    if "jax" not in lazymat.backends():
        pytest.skip("the lazymat-jax plugin is not installed")
    jax.config.update("jax_enable_x64", True)
    _, x, _, y = problem(3, n=60, m=50, y_low=0.15)

    def value(xx, multiscale):
        extra = {"multiscale": True, "cluster_scale": 0.15} if multiscale else {}
        return sinkhorn(xx, jax.numpy.asarray(y), blur=0.1, tol=1e-6, **extra).value

    g0 = jax.grad(lambda v: value(v, False))(jax.numpy.asarray(x))
    g1 = jax.grad(lambda v: value(v, True))(jax.numpy.asarray(x))
    assert rel(g1, g0) < 1e-2


@pytest.mark.keops  # GeomLoss's multiscale backend compiles pykeops formulas
def test_matches_geomloss_multiscale(monkeypatch):
    """GeomLoss's backend="multiscale" (pykeops CPU), same clouds and scales, its default schedule
    (without the final iterations that our default adds: test_geomloss_multiscale.py)."""
    geomloss = pytest.importorskip("geomloss")
    torch = pytest.importorskip("torch")
    pytest.importorskip("pykeops")
    import lazymat.solvers.multiscale as ms

    monkeypatch.setattr(ms, "POLISH", 0)
    a, x, b, y = problem(4, n=300, m=250, d=3, y_low=0.15)
    for blur in (0.05, 0.1):
        ref = geomloss.SamplesLoss("sinkhorn", blur=blur, backend="multiscale", cluster_scale=0.2)(
            *(torch.tensor(v) for v in (a, x, b, y))
        )
        ours = SamplesLoss("sinkhorn", blur=blur, backend="multiscale", cluster_scale=0.2)(a, x, b, y)
        np.testing.assert_allclose(float(ours), ref.item(), rtol=1e-2)


def test_samples_loss_auto_rule():
    L = SamplesLoss("sinkhorn")
    big3, big4 = np.empty((20_000, 3)), np.empty((20_000, 4))
    assert L._multiscale(big3, big3)
    assert not L._multiscale(big4, big4)  # dimension 4: online
    assert not L._multiscale(big3[:5000], big3[:5000])  # small: dense
    assert not SamplesLoss("sinkhorn", p=1)._multiscale(big3, big3)
    assert not SamplesLoss("sinkhorn", backend="online")._multiscale(big3, big3)


def test_samples_loss_multiscale_potentials_in_caller_order():
    a, x, b, y = problem(5, n=100, m=80, y_low=0.15)
    L = SamplesLoss("sinkhorn", blur=0.1, backend="multiscale", cluster_scale=0.2, potentials=True)
    f, g = L(a, x, b, y)
    r = sinkhorn(x, y, a, b, blur=0.1, multiscale=True, cluster_scale=0.2)
    np.testing.assert_allclose(f, r.f - r.f_aa, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g, r.g - r.g_bb, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "kw, error, match",
    [
        ({"cluster_scale": -0.1}, ValueError, "cluster_scale must be a non-negative"),
        ({"cluster_scale": float("nan")}, ValueError, "cluster_scale must be a non-negative"),
        ({"truncate": -1.0}, ValueError, "truncate must be a positive"),
        ({"cluster_levels": 0}, ValueError, "cluster_levels must be a positive integer"),
        ({"cost": lambda u, v: u.sqdist(v)}, ValueError, "custom cost"),
    ],
)
def test_bad_options(kw, error, match):
    a, x, b, y = problem(6, n=20, m=20, y_low=0.15)
    with pytest.raises(error, match=match):
        sinkhorn(x, y, a, b, multiscale=True, **kw)


def test_batches_are_refused():
    x = np.random.default_rng(7).random((2, 20, 2))
    with pytest.raises(ValueError, match="not batches of 2"):
        sinkhorn(x, x, multiscale=True)


def test_blur_above_cluster_scale_is_the_dense_solver(monkeypatch):
    """No level pays when the loop never goes below the cluster scale: the dense solver, the
    same iterations when converged (tol); at the default schedule, followed by the polishing
    iterations (closer to the converged value than the dense schedule alone; without them,
    the dense result)."""
    import lazymat.solvers.multiscale as ms_module

    a, x, b, y = problem(8, n=40, m=30, y_low=0.15)
    converged = sinkhorn(x, y, a, b, blur=0.3, tol=1e-11, max_iter=5000)
    ms = sinkhorn(x, y, a, b, blur=0.3, multiscale=True, cluster_scale=0.1, tol=1e-11, max_iter=5000)
    assert converged.converged and ms.n_iter == converged.n_iter
    np.testing.assert_allclose(float(ms.value), float(converged.value), rtol=1e-12)
    dense = sinkhorn(x, y, a, b, blur=0.3)
    ms = sinkhorn(x, y, a, b, blur=0.3, multiscale=True, cluster_scale=0.1)
    assert abs(float(ms.value - converged.value)) < abs(float(dense.value - converged.value))
    monkeypatch.setattr(ms_module, "POLISH", 0)
    ms = sinkhorn(x, y, a, b, blur=0.3, multiscale=True, cluster_scale=0.1)
    np.testing.assert_allclose(float(ms.value), float(dense.value), rtol=1e-12)


def test_capped_and_refinement_levels_match_bruteforce(caplog):
    """A blur above the second scale caps that level's jump before the last eps, and a third
    scale only refines the truncation (its jump repeats the previous one); the converged
    value and gradients still match the bruteforce solver."""
    a, x, b, y = problem(11, n=5000, m=4000, y_low=0.15)
    options = {"blur": 0.1, "tol": 1e-5, "max_iter": 2000}
    ref = sinkhorn(x, y, a, b, **options)
    with caplog.at_level(logging.INFO, logger="lazymat.solvers.multiscale"):
        ms = sinkhorn(x, y, a, b, multiscale=True, cluster_scale=0.2, verbose=True, **options)
    out = logged(caplog)
    jumps = [int(v) for v in out.split("jumps after [")[1].split("]")[0].split(",")]
    assert len(jumps) == 3 and jumps[-1] == jumps[-2]  # the last cluster level does not iterate
    assert ref.converged and ms.converged
    np.testing.assert_allclose(float(ms.value), float(ref.value), rtol=1e-2)
    assert rel(ms.gradients(), ref.gradients()) < 1e-2
