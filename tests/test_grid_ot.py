"""OT on grids (lazymat.solvers.solve_grid, ImagesLoss, the separable log-sum-exp), against references.

References: a dense float64 Sinkhorn written here (GeomLoss's loop with numpy cost matrices and
SciPy's logsumexp), our point-cloud solver on the grid's points (same schedule: equal to 1e-10),
POT's converged entropic plan on the grid's points (plan, marginals, largest entries, barycentric
map), SciPy's logsumexp on dense matrices (separable passes), numpy sums (pyramids), central
finite differences of the value (gradients in the densities), and GeomLoss's image routine (on
pykeops) for ImagesLoss at a slow annealing.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.special import logsumexp
from test_sinkhorn import BACKENDS, WITH_STRICT, arr, needs_jax, npy

from lazymat.solvers import ImagesLoss, OTResult, sinkhorn, solve_grid
from lazymat.solvers.grid_measures import check_grid_measures, coarsen
from lazymat.solvers.separable import grid_logsumexp

SHAPES = [(13,), (6, 7), (4, 3, 5)]


def densities(seed: int, shape: tuple[int, ...], batch: int | None = None, zeros: bool = False):
    """Two random densities of mass 1 on a grid (b sharply peaked); ``zeros``: empty cells in a."""
    rng = np.random.default_rng(seed)
    lead = () if batch is None else (batch,)
    a = rng.random((*lead, *shape)) + 0.1
    b = rng.random((*lead, *shape)) ** 4
    if zeros:
        a = np.where(rng.random(a.shape) < 0.3, 0.0, a)
    axes = tuple(range(len(lead), a.ndim))
    return a / a.sum(axes, keepdims=True), b / b.sum(axes, keepdims=True)


def points(shape: tuple[int, ...], axes=None) -> np.ndarray:
    """Cell centres in C order: (k + 1/2) / n on [0, 1) by default, else the given coordinates."""
    coords = axes or [(np.arange(n) + 0.5) / n for n in shape]
    return np.stack(np.meshgrid(*coords, indexing="ij"), -1).reshape(-1, len(shape))


def dense_sinkhorn(a, b, x, blur, scaling=0.5, reach=None, debias=True, tol=None):
    """GeomLoss's symmetric Sinkhorn loop with eps-scaling (Feydy's thesis, alg. 3.5), dense float64.

    Returns (value, f, g, f_aa, g_bb); balanced or KL-unbalanced.
    """
    C = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1) / 2
    d = float(np.linalg.norm(x.max(0) - x.min(0)))
    eps_list = [d**2, *np.exp(np.arange(2 * math.log(d), 2 * math.log(blur), 2 * math.log(scaling))), blur**2]
    la, lb = (np.where(w > 0, np.log(np.where(w > 0, w, 1)), -1e5) for w in (a, b))

    def step(eps, h):
        damping = 1.0 if reach is None else 1 / (1 + eps / reach**2)
        return -damping * eps * logsumexp(h[None, :] - C / eps, axis=1)

    def update(eps, f, g, faa, gbb):
        return (
            step(eps, lb + g / eps),
            step(eps, la + f / eps),
            step(eps, la + faa / eps),
            step(eps, lb + gbb / eps),
        )

    pots = update(eps_list[0], *[np.zeros_like(a)] * 4)
    for eps in eps_list:
        pots = tuple((p + q) / 2 for p, q in zip(pots, update(eps, *pots), strict=True))
    while tol is not None:
        new = tuple((p + q) / 2 for p, q in zip(pots, update(eps_list[-1], *pots), strict=True))
        change = max(np.abs(p - q).max() for p, q in zip(pots, new, strict=True))
        pots = new
        if change < tol:
            break
    f, g, faa, gbb = update(blur**2, *pots)
    if reach is None:
        value = a @ (f - faa) + b @ (g - gbb) if debias else a @ f + b @ g
    else:
        rho, eps = reach**2, blur**2
        value = (rho + eps / 2) * (
            a @ (np.exp(-faa / rho) - np.exp(-f / rho)) + b @ (np.exp(-gbb / rho) - np.exp(-g / rho))
        )
    return value, f, g, faa, gbb


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reach", [None, 0.4])
def test_equals_dense_float64_sinkhorn(shape, reach):
    a, b = densities(1, shape, zeros=True)
    r = solve_grid(a, b, blur=0.07, reach=reach)
    value, f, g, faa, gbb = dense_sinkhorn(a.ravel(), b.ravel(), points(shape), 0.07, reach=reach)
    assert isinstance(r, OTResult) and r.f.shape == shape
    np.testing.assert_allclose(r.value, value, rtol=1e-10, atol=1e-15)
    for mine, ref in zip((r.f, r.g, r.f_aa, r.g_bb), (f, g, faa, gbb), strict=True):
        np.testing.assert_allclose(mine.ravel(), ref, rtol=1e-10, atol=1e-12)


OPTIONS = {
    "balanced": {},
    "no-debias": {"debias": False},
    "kl": {"reach": 0.3},
    "tv": {"reach": 0.3, "penalty": "tv"},
    "tol": {"blur": 0.25, "scaling": 0.8, "tol": 1e-8},
}
# numpy: every shape and option; the other backends (the same array-API code): 2-D grids
CLOUD_CASES = [("numpy", shape, name) for shape in SHAPES for name in OPTIONS] + [
    (backend, (6, 7), name) for backend in WITH_STRICT if backend != "numpy" for name in ("balanced", "tv")
]


@pytest.mark.parametrize(("backend", "shape", "option"), CLOUD_CASES)
def test_equals_point_cloud_sinkhorn(backend, shape, option):
    a, b = densities(2, shape)
    options = {"blur": 0.06, **OPTIONS[option]}
    r = solve_grid(arr(backend, a), arr(backend, b), **options)
    x = arr(backend, points(shape))
    ref = sinkhorn(x, x, arr(backend, a.ravel()), arr(backend, b.ravel()), **options)
    assert r.n_iter == ref.n_iter and r.converged == ref.converged
    np.testing.assert_allclose(r.schedule, ref.schedule, rtol=1e-14)
    np.testing.assert_allclose(npy(r.value), npy(ref.value), rtol=1e-10, atol=1e-15)
    names = ("f", "g") if options.get("debias") is False else ("f", "g", "f_aa", "g_bb")
    for name in names:
        mine, theirs = npy(getattr(r, name)), npy(getattr(ref, name))
        assert mine.shape == shape
        np.testing.assert_allclose(mine.ravel(), theirs, rtol=1e-10, atol=1e-10)


def test_batches_and_axes():
    """(B, n1, n2) with dim=2 equals each grid alone; explicit axes equal the cloud on those points."""
    a, b = densities(3, (5, 6), batch=3)
    r = solve_grid(a, b, dim=2, blur=0.08)
    assert r.value.shape == (3,) and r.f.shape == (3, 5, 6)
    for k in range(3):
        one = solve_grid(a[k], b[k], blur=0.08)
        np.testing.assert_allclose(r.value[k], one.value, rtol=1e-12)
        np.testing.assert_allclose(r.f[k], one.f, rtol=1e-12, atol=1e-14)
    given = [np.linspace(-1, 2, 5), np.sort(np.random.default_rng(0).random(6)) * 3]
    centres = [-1 + 3 * (np.arange(n) + 0.5) / n for n in (5, 6)]  # cells of [-1, 2)
    for axes, coords in (
        (given, given),
        ([(-1.0, 2.0), given[1]], [centres[0], given[1]]),
        ((-1.0, 2.0), centres),
    ):
        r = solve_grid(a[0], b[0], axes=axes, blur=0.2)
        x = points((5, 6), coords)
        ref = sinkhorn(x, x, a[0].ravel(), b[0].ravel(), blur=0.2)
        np.testing.assert_allclose(r.value, ref.value, rtol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_separable_logsumexp_equals_dense(backend):
    rng = np.random.default_rng(4)
    for cols_shape, rows_shape in [((9,), (4,)), ((5, 7), (3, 8)), ((3, 4, 2), (2, 5, 3))]:
        cols = [np.sort(rng.random(n)) for n in cols_shape]
        rows = [np.sort(rng.random(n)) * 2 for n in rows_shape]
        h = rng.standard_normal((2, 3, *cols_shape)) * 5
        h[0, 0].flat[0] = -1e5  # an empty cell
        C = ((points(rows_shape, rows)[:, None] - points(cols_shape, cols)[None]) ** 2).sum(-1) / 2
        for eps in (1.0, 1e-3):
            out = grid_logsumexp(
                arr(backend, h), [arr(backend, t) for t in rows], [arr(backend, t) for t in cols], eps
            )
            ref = logsumexp(h.reshape(2, 3, 1, -1) - C / eps, axis=-1).reshape(2, 3, *rows_shape)
            np.testing.assert_allclose(npy(out), ref, rtol=1e-12, atol=1e-9)


def test_pyramid_sums_cells_in_pairs():
    a, b = densities(5, (5, 4, 3))
    m = check_grid_measures(a, b, axes=[np.arange(5.0), np.arange(4.0) * 2, np.array([0.0, 1.0, 3.0])])
    c = coarsen(m)
    assert c.shape == (3, 2, 2)
    padded = np.zeros((6, 4, 4))
    padded[:5, :4, :3] = a
    np.testing.assert_allclose(
        c.a.reshape(3, 2, 2), padded.reshape(3, 2, 2, 2, 2, 2).sum((1, 3, 5)), rtol=1e-14
    )
    for mine, ref in zip(c.axes, ([0.5, 2.5, 4.0], [1.0, 5.0], [0.5, 3.0]), strict=True):
        np.testing.assert_allclose(mine, ref)


def test_multiscale_reaches_the_same_fixed_point():
    a, b = densities(6, (16, 12))
    opts = {"blur": 0.2, "scaling": 0.7, "tol": 1e-11}
    single = solve_grid(a, b, **opts)
    multi = solve_grid(a, b, **opts, multiscale=True)
    assert single.converged and multi.converged and multi.schedule == single.schedule
    np.testing.assert_allclose(multi.value, single.value, rtol=1e-9)
    # balanced potentials are defined up to (f + c, g - c)
    shift = multi.f.mean() - single.f.mean()
    np.testing.assert_allclose(multi.f - shift, single.f, atol=1e-9)
    np.testing.assert_allclose(multi.g + shift, single.g, atol=1e-9)
    np.testing.assert_allclose(multi.f_aa, single.f_aa, atol=1e-9)
    # GeomLoss's short schedule: a few percent from the converged value
    short = solve_grid(a, b, blur=0.2, scaling=0.7, multiscale=True)
    assert short.n_iter == len(single.schedule)
    assert abs(short.value - single.value) < 0.05 * single.value


def test_plan_marginals_sparse_and_map_match_pot():
    ot = pytest.importorskip("ot")
    shape = (6, 5)
    a, b = densities(7, shape)
    r = solve_grid(a, b, blur=0.3, tol=1e-13)
    x = points(shape)
    C = ((x[:, None] - x[None]) ** 2).sum(-1) / 2
    P = ot.sinkhorn(a.ravel(), b.ravel(), C, 0.3**2, method="sinkhorn_log", stopThr=1e-14, numItermax=10**5)
    v = np.random.default_rng(0).standard_normal((30, 2))
    np.testing.assert_allclose(r.plan @ v, P @ v, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(r.plan.T @ v[:, 0], P.T @ v[:, 0], rtol=1e-8, atol=1e-12)
    # the LazyMatrix's own reductions (N^2) agree with the separable products
    np.testing.assert_allclose(r.plan.sum(axis=1)[:, 0], P.sum(1), rtol=1e-8)
    rows, cols = r.marginals
    assert rows.shape == shape and cols.shape == shape
    np.testing.assert_allclose(rows, a, rtol=1e-9)
    np.testing.assert_allclose(cols, b, rtol=1e-9)
    assert r.marginal_errors[0] < 1e-9 and r.marginal_errors[1] < 1e-9
    moved = (P @ x / a.reshape(-1, 1)).reshape(6, 5, 2)
    np.testing.assert_allclose(r.barycentric_map(), moved, rtol=1e-8)
    S = r.plan.to_sparse(top_k=3).toarray()
    top = np.argsort(-P, axis=1)[:, :3]
    np.testing.assert_allclose(S[np.arange(30)[:, None], top], P[np.arange(30)[:, None], top], rtol=1e-8)
    assert (S > 0).sum() == 90


def dense_grid_plan(a, b, f, g, eps, shape):
    """a_i b_j exp((f_i + g_j - |x_i - x_j|^2 / 2) / eps) on the grid, dense (tests only)."""
    x = points(shape)
    C = ((x[:, None] - x[None]) ** 2).sum(-1) / 2
    return a.reshape(-1, 1) * b.reshape(1, -1) * np.exp((f.reshape(-1, 1) + g.reshape(1, -1) - C) / eps)


@pytest.mark.parametrize("backend", WITH_STRICT)
def test_plan_products_on_every_backend(backend):
    """Separable plan @ v, plan.T @ v, marginals and maps against the dense plan of the potentials."""
    batched = backend != "array_api_strict"
    a, b = densities(8, (4, 5), batch=2 if batched else None)
    r = solve_grid(arr(backend, a), arr(backend, b), dim=2, blur=0.2)
    lead = (2,) if batched else ()
    rows, cols = r.marginals
    maps = npy(r.barycentric_map())
    assert npy(rows).shape == (*lead, 4, 5) and maps.shape == (*lead, 4, 5, 2)
    v = np.random.default_rng(1).standard_normal((*lead, 20, 3))
    out, out_t = npy(r.plan @ arr(backend, v)), npy(r.plan.T @ arr(backend, v))
    for k in range(2 if batched else 1):
        at = (k,) if batched else ()
        P = dense_grid_plan(a[at], b[at], npy(r.f)[at], npy(r.g)[at], r.eps, (4, 5))
        np.testing.assert_allclose(out[at], P @ v[at], rtol=1e-9, atol=1e-13)
        np.testing.assert_allclose(out_t[at], P.T @ v[at], rtol=1e-9, atol=1e-13)
        np.testing.assert_allclose(npy(rows)[at].ravel(), P.sum(1), rtol=1e-9)
        np.testing.assert_allclose(npy(cols)[at].ravel(), P.sum(0), rtol=1e-9)
        moved = P @ points((4, 5)) / a[at].reshape(-1, 1)
        np.testing.assert_allclose(maps[at].reshape(-1, 2), moved, rtol=1e-9)


def test_torch_gradients_match_finite_differences():
    """torch.autograd through the value in a and b, against central differences (numpy solves)."""
    torch = pytest.importorskip("torch")
    a, b = densities(9, (5, 4))
    rng = np.random.default_rng(0)
    for reach in (None, 0.5):
        opts = {"blur": 0.3, "reach": reach, "tol": 1e-13}
        A, B = (torch.tensor(v, requires_grad=True) for v in (a, b))
        ga, gb = torch.autograd.grad(solve_grid(A, B, **opts).value, [A, B])
        da, db = (w * rng.standard_normal(w.shape) for w in (a, b))  # relative: masses stay positive
        if reach is None:  # balanced: directions that keep the masses
            da, db = da - a * da.sum(), db - b * db.sum()
        h = 1e-5
        fd = (
            solve_grid(a + h * da, b + h * db, **opts).value
            - solve_grid(a - h * da, b - h * db, **opts).value
        )
        exact = float((ga.numpy() * da).sum() + (gb.numpy() * db).sum())
        np.testing.assert_allclose(exact, fd / (2 * h), rtol=1e-6, atol=1e-10)


@needs_jax
def test_jax_value_and_gradient():
    """jax: the value of numpy, and jax.grad = (f - f_aa, g - g_bb), the balanced value's formula."""
    import jax

    a, b = densities(10, (6, 5))
    r = solve_grid(a, b, blur=0.1)
    A, B = arr("jax", a), arr("jax", b)
    np.testing.assert_allclose(npy(solve_grid(A, B, blur=0.1).value), r.value, rtol=1e-12)
    ga, gb = jax.grad(lambda u, v: solve_grid(u, v, blur=0.1).value, argnums=(0, 1))(A, B)
    np.testing.assert_allclose(np.asarray(ga), r.f - r.f_aa, atol=1e-12)
    np.testing.assert_allclose(np.asarray(gb), r.g - r.g_bb, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_images_loss(backend):
    """ImagesLoss: the grid divergence (values, batches, potentials shaped like the images)."""
    a, b = densities(11, (7, 6), batch=2)
    loss = ImagesLoss("sinkhorn", blur=0.1, dim=2)
    values = npy(loss(arr(backend, a), arr(backend, b)))
    assert values.shape == (2,)
    for k in range(2):
        ref, *_ = dense_sinkhorn(a[k].ravel(), b[k].ravel(), points((7, 6)), 0.1)
        np.testing.assert_allclose(values[k], ref, rtol=1e-10)
    F, G = ImagesLoss(blur=0.1, dim=2, potentials=True)(arr(backend, a), arr(backend, b))
    _, f, g, faa, gbb = dense_sinkhorn(a[1].ravel(), b[1].ravel(), points((7, 6)), 0.1)
    assert npy(F).shape == (2, 7, 6)
    np.testing.assert_allclose(npy(F)[1].ravel(), f - faa, atol=1e-12)
    np.testing.assert_allclose(npy(G)[1].ravel(), g - gbb, atol=1e-12)


def test_images_loss_matches_geomloss_image_routine_on_pykeops():
    """GeomLoss 0.3.1's image routine (``geomloss.sinkhorn_divergence``, separable pykeops soft-mins,
    its own pyramid and coordinates k / n): another annealing, the same limit. At scaling 0.99 both
    are within 1e-7 of it (at GeomLoss's default 0.5 its value is 16% off; BENCHMARKS.md run P)."""
    torch = pytest.importorskip("torch")
    geomloss = pytest.importorskip("geomloss")
    n = 16
    t = (np.arange(n) + 0.5) / n
    X, Y = np.meshgrid(t, t, indexing="ij")

    def blob(cx: float, cy: float, s: float) -> np.ndarray:
        d = np.exp(-((X - cx) ** 2 + (Y - cy) ** 2) / (2 * s**2)) + 1e-3
        return d / d.sum()

    a = np.stack([blob(0.3, 0.4, 0.1), blob(0.5, 0.5, 0.2)])
    b = np.stack([blob(0.6, 0.7, 0.15), blob(0.4, 0.3, 0.1)])
    mine = ImagesLoss(blur=1 / n, scaling=0.99, dim=2)(a, b)
    A, B = (torch.from_numpy(v)[:, None] for v in (a, b))  # (batch, channel, n, n)
    theirs = geomloss.sinkhorn_divergence(A, B, p=2, blur=1 / n, scaling=0.99).reshape(-1).numpy()
    np.testing.assert_allclose(mine, theirs, rtol=1e-6)


def test_bad_input_gets_clear_errors():
    a, b = densities(12, (4, 5))
    with pytest.raises(ValueError, match="nonnegative"):
        solve_grid(a - 0.1, b)
    for bad in (np.nan, np.inf):
        c = a.copy()
        c[1, 2] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            solve_grid(c, b)
    with pytest.raises(ValueError, match="same grid"):
        solve_grid(a, b[:, :4])
    with pytest.raises(ValueError, match=r"shape \(n_1, n_2\) or \(B, n_1, n_2\)"):
        solve_grid(a[None, None], b[None, None], dim=2)
    with pytest.raises(ValueError, match="dimension 3"):
        solve_grid(a, b, dim=3)
    with pytest.raises(ValueError, match="positive integer"):
        solve_grid(a, b, dim=0)
    with pytest.raises(ValueError, match="empty grid"):
        solve_grid(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(ValueError, match="no mass"):
        solve_grid(np.zeros_like(a), b, reach=0.5)
    with pytest.raises(ValueError, match="equal total mass"):
        solve_grid(a, 2 * b)
    with pytest.raises(ValueError, match="p=2"):
        solve_grid(a, b, p=1)
    with pytest.raises(TypeError, match="different dtypes"):
        solve_grid(a, b.astype(np.float32))
    with pytest.raises(TypeError, match="real floating"):
        solve_grid(a.astype(np.int64), b.astype(np.int64))
    with pytest.raises(ValueError, match=r"axes\[1\] must hold the grid's 5 coordinates"):
        solve_grid(a, b, axes=[np.arange(4.0), np.arange(4.0)])
    with pytest.raises(ValueError, match="increasing"):
        solve_grid(a, b, axes=[np.arange(4.0)[::-1].copy(), np.arange(5.0)])
    with pytest.raises(ValueError, match="lo < hi"):
        solve_grid(a, b, axes=(1.0, 0.0))
    with pytest.raises(ValueError, match="axes must be None"):
        solve_grid(a, b, dim=2, axes=[(0.0, 1.0)] * 3)
    with pytest.raises(ValueError, match="dimension 3"):  # three axes: a grid of dimension 3
        solve_grid(a, b, axes=[(0.0, 1.0)] * 3)
    with pytest.raises(ValueError, match="single cell"):
        solve_grid(np.ones((1, 1)), np.ones((1, 1)))
    with pytest.raises(ValueError, match="blur must be"):
        solve_grid(a, b, blur=-1.0)
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="different array libraries"):
        solve_grid(a, torch.tensor(b))


def load_example(name: str) -> Any:
    """``examples/<name>.py`` as a module."""
    path = Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.filterwarnings("ignore:divide by zero encountered in log")  # POT's log(0)
def test_transport_example_against_pot(tmp_path):
    """examples/grid_transport.py at n = 20: the entropic OT value and the map of POT's plan."""
    ot = pytest.importorskip("ot")
    pytest.importorskip("matplotlib")
    out = tmp_path / "transport.png"
    r = load_example("grid_transport").run(n=20, out=str(out))
    assert out.stat().st_size > 0 and r["converged"]
    a, b = r["a"].ravel(), r["b"].ravel()
    x = points((20, 20))
    C = ((x[:, None] - x[None]) ** 2).sum(-1) / 2
    eps = (3.0 / 20) ** 2
    P = ot.sinkhorn(a, b, C, eps, method="sinkhorn_log", stopThr=1e-12, numItermax=10**5)
    kept = P > 0
    value = (P * C).sum() + eps * (P[kept] * np.log(P[kept] / np.outer(a, b)[kept])).sum()
    np.testing.assert_allclose(r["value"], value, rtol=1e-3)
    inside = a > 0
    moved = (P @ x)[inside] / a[inside, None]
    np.testing.assert_allclose(r["map"].reshape(-1, 2)[inside], moved, atol=2e-3)
