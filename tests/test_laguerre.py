"""Laguerre cells of prescribed volumes (lazymat.solvers.laguerre_cells), against independent truths.

References, all written here in numpy float64: the exact power cells of the squared
Euclidean cost (convex polygons: the unit square clipped by the half-planes
|y - x_i|^2 - f_i <= |y - x_k|^2 - f_k), their areas and centroids by the shoelace formula;
brute-force counts on a fine grid (argmin over the seeds of c - f at every fine point, any
cost, any piecewise-constant density); brute-force assignment of point samples; finite
differences of the exact areas for the volume Jacobian.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import lazymat
from lazymat.solvers.conjugate_gradient import ConvergenceWarning
from lazymat.solvers.laguerre import anisotropic_cost, grid_domain, laguerre_cells, squared_distance
from lazymat.solvers.laguerre_volumes import assign, box_cdf

BACKENDS = [name for name in ("numpy", "torch") if name in lazymat.backends()]


def arr(name: str, v: np.ndarray) -> object:
    return lazymat.get_registry().backend(name).from_numpy(np.ascontiguousarray(v))


def npy(v: object) -> np.ndarray:
    b = lazymat.backend_for(v)
    return np.asarray(b.to_numpy(v))


def problem(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeds in [0.05, 0.95]^2 and volumes of the unit square between 0.5 and 1.5 times the mean."""
    rng = np.random.default_rng(seed)
    x = 0.05 + 0.9 * rng.random((n, 2))
    v = rng.random(n) + 0.5
    return x, v / v.sum()


def _clip(poly: list[np.ndarray], a: np.ndarray, b: float) -> list[np.ndarray]:
    """The polygon's part where a . y <= b (Sutherland-Hodgman, one half-plane)."""
    out = []
    for k in range(len(poly)):
        p, q = poly[k], poly[(k + 1) % len(poly)]
        fp, fq = a @ p - b, a @ q - b
        if fp <= 0:
            out.append(p)
        if fp * fq < 0:
            out.append(p + fp / (fp - fq) * (q - p))
    return out


def exact_power_cells(x: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Areas (N,) and centroids (N, 2) of the power cells of (x, f) in the unit square."""
    areas, centroids = np.zeros(len(x)), np.zeros((len(x), 2))
    for i in range(len(x)):
        poly = [np.array(c, float) for c in ((0, 0), (1, 0), (1, 1), (0, 1))]
        for k in range(len(x)):
            if k != i and poly:  # 2 (x_k - x_i) . y <= |x_k|^2 - |x_i|^2 - f_k + f_i
                poly = _clip(poly, 2 * (x[k] - x[i]), x[k] @ x[k] - x[i] @ x[i] - f[k] + f[i])
        if len(poly) < 3:
            continue
        p = np.array(poly)
        px, py, qx, qy = p[:, 0], p[:, 1], np.roll(p[:, 0], -1), np.roll(p[:, 1], -1)
        cross = px * qy - qx * py
        areas[i] = cross.sum() / 2
        centroids[i] = [((px + qx) * cross).sum(), ((py + qy) * cross).sum()]
        centroids[i] /= 6 * areas[i]
    return areas, centroids


def fine_count(cost_rows, n_seeds: int, density: np.ndarray | None, fine: int) -> np.ndarray:
    """Masses of the cells counted on a fine x fine grid of the unit square, by brute force.

    One point drawn uniformly in each fine square (a midpoint lattice miscounts edges of
    nearly rational slopes by a large part of their length). ``cost_rows(points) -> (P, N)``
    gives c(x_i, y) - f_i up to a term constant in i; ``density`` (n, n) is piecewise constant
    on its pixels (None: uniform 1), each point taking its pixel's value.
    """
    rng = np.random.default_rng(0)
    masses = np.zeros(n_seeds)
    step = max(1, 2**20 // fine)
    for start in range(0, fine, step):
        gx, gy = np.meshgrid(np.arange(start, min(start + step, fine)), np.arange(fine), indexing="ij")
        pts = (np.stack([gx.ravel(), gy.ravel()], axis=1) + rng.random((gx.size, 2))) / fine
        owner = np.argmin(cost_rows(pts), axis=1)
        if density is None:
            w = np.ones(len(pts))
        else:
            n = density.shape[0]
            w = density[(pts[:, 0] * n).astype(int), (pts[:, 1] * n).astype(int)]
        masses += np.bincount(owner, weights=w, minlength=n_seeds)
    return masses / fine**2


def sqdist_rows(x: np.ndarray, f: np.ndarray):
    """|y - x_i|^2 - f_i less |y|^2 (the same argmin), as one matrix product."""
    return lambda y: y @ (-2 * x.T) + ((x * x).sum(1) - f)[None, :]


def metric_rows(x: np.ndarray, metric: np.ndarray, f: np.ndarray):
    """(y - x_i)^T M_i (y - x_i) - f_i (2-D), expanded on the features [y1^2, y1 y2, y2^2, y1, y2, 1]."""
    mx = np.einsum("nij,nj->ni", metric, x)
    coef = np.stack(
        [
            metric[:, 0, 0],
            metric[:, 0, 1] + metric[:, 1, 0],
            metric[:, 1, 1],
            -2 * mx[:, 0],
            -2 * mx[:, 1],
            (x * mx).sum(1) - f,
        ]
    )
    return lambda y: (
        np.stack([y[:, 0] ** 2, y[:, 0] * y[:, 1], y[:, 1] ** 2, y[:, 0], y[:, 1], np.ones(len(y))], 1) @ coef
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_volumes_and_centroids_match_exact_power_cells(backend: str) -> None:
    x, v = problem(0, 8)
    r = laguerre_cells(arr(backend, x), arr(backend, v), density=arr(backend, np.ones((256, 256))), tol=1e-6)
    assert r.converged and r.n_iter <= 20
    f = npy(r.weights)
    areas, centroids = exact_power_cells(x, f)
    assert np.max(np.abs(areas - v) / v) < 1e-4  # the exact cells of our weights have the volumes
    assert np.max(np.abs(npy(r.volumes) - areas) / v) < 1e-4  # what we report is what they hold
    assert np.max(np.abs(npy(r.centroids) - centroids)) < 1e-4
    # the independent count on a fine grid (brute force over the seeds, 16.8 M points)
    counted = fine_count(sqdist_rows(x, f), len(x), None, 4096)
    assert np.max(np.abs(counted - v) / v) < 1e-4
    assert np.max(np.abs(counted - areas) / v) < 1e-4  # (the count's own accuracy)
    assert r.errors[-1] <= 1e-6 and r.errors[0] > 1e-2


@pytest.mark.skipif("array_api_strict" not in lazymat.backends(), reason="array-api-strict is not installed")
def test_array_api_only() -> None:
    """On array-api-strict (the standard and nothing more): the exact power cells' areas."""
    x, v = problem(9, 6)
    r = laguerre_cells(
        arr("array_api_strict", x),
        arr("array_api_strict", v),
        density=arr("array_api_strict", np.ones((64, 64))),
        tol=1e-6,
    )
    areas, _ = exact_power_cells(x, npy(r.weights))
    assert r.converged and np.max(np.abs(areas - v) / v) < 1e-4


def test_uneven_density_fine_count() -> None:
    """A piecewise-constant density with a hole: the cells hold the volumes of its mass."""
    n = 128
    g = (np.arange(n) + 0.5) / n
    gx, gy = np.meshgrid(g, g, indexing="ij")
    density = np.exp(-((gx - 0.3) ** 2 + (gy - 0.6) ** 2) / 0.05) + 0.1
    density[40:60, 70:100] = 0.0
    x, v = problem(1, 6)
    mass = density.sum() / n**2
    r = laguerre_cells(x, v * mass, density=density, tol=1e-6)
    assert r.converged
    counted = fine_count(sqdist_rows(x, npy(r.weights)), len(x), density, 4096)
    assert np.max(np.abs(counted - v * mass) / (v * mass)) < 1e-4


def test_anisotropic_cost_fine_count() -> None:
    """|A_i (y - x_i)|^2 with a metric per seed: curved cell boundaries, counted by brute force."""
    rng = np.random.default_rng(2)
    x, v = problem(2, 6)
    a = rng.normal(size=(6, 2, 2)) * 0.4 + np.eye(2)
    metric = np.einsum("nki,nkj->nij", a, a)  # M_i = A_i^T A_i
    seeds = np.concatenate([x, metric.reshape(6, 4)], axis=1)
    r = laguerre_cells(seeds, v, density=np.ones((256, 256)), cost=anisotropic_cost(2), tol=1e-6)
    assert r.converged
    rows = metric_rows(x, metric, npy(r.weights))
    counted = fine_count(rows, len(x), None, 4096)
    assert np.max(np.abs(counted - v) / v) < 1e-4
    # labels() assigns points with the same rule
    pts = rng.random((500, 2))
    assert np.array_equal(npy(r.labels(pts)), np.argmin(rows(pts), axis=1))


def exact_power_cell_volumes_3d(x: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Volumes of the power cells of (x, f) in the unit cube: convex polyhedra, cut out by
    SciPy's half-space intersection (interior point: the Chebyshev centre, by linprog)."""
    from scipy.optimize import linprog
    from scipy.spatial import ConvexHull, HalfspaceIntersection

    box = np.concatenate([np.eye(3), -np.eye(3)])  # y_k <= 1, -y_k <= 0
    volumes = np.zeros(len(x))
    for i in range(len(x)):
        others = np.delete(np.arange(len(x)), i)
        a = np.concatenate([2 * (x[others] - x[i]), box])
        b = np.concatenate(
            [(x[others] ** 2).sum(1) - x[i] @ x[i] - f[others] + f[i], np.ones(3), np.zeros(3)]
        )
        norms = np.linalg.norm(a, axis=1)
        centre = linprog([0, 0, 0, -1], A_ub=np.c_[a, norms], b_ub=b, bounds=[(None, None)] * 3 + [(0, None)])
        halfspaces = HalfspaceIntersection(np.c_[a, -b], centre.x[:3])
        volumes[i] = ConvexHull(halfspaces.intersections).volume
    return volumes


def test_three_dimensional_grid_exact_cells() -> None:
    """Voxels (sub-boxes at the edges where three cells meet) against the exact polyhedra."""
    pytest.importorskip("scipy")
    rng = np.random.default_rng(10)
    x = 0.1 + 0.8 * rng.random((5, 3))
    v = rng.random(5) + 0.5
    v /= v.sum()
    r = laguerre_cells(x, v, density=np.ones((32, 32, 32)), tol=1e-6)
    assert r.converged
    volumes = exact_power_cell_volumes_3d(x, npy(r.weights))
    # measured: 4.2e-5 (the sub-boxes' approximation); with the voxels' shares 10% off: 2.2e-4
    assert np.max(np.abs(volumes - v) / v) < 1e-4


def test_point_samples_brute_force() -> None:
    """Weighted samples: a cell's volume is the weight of its samples (argmin in numpy)."""
    rng = np.random.default_rng(3)
    y = rng.random((60_000, 2))
    w = rng.random(60_000)
    w /= w.sum()
    x, v = problem(3, 6)
    r = laguerre_cells(x, v, samples=y, sample_weights=w, tol=2e-3)
    assert r.converged
    owner = np.argmin(sqdist_rows(x, npy(r.weights))(y), axis=1)
    counted = np.bincount(owner, weights=w, minlength=6)
    assert np.allclose(counted, npy(r.volumes), rtol=1e-12, atol=0)
    assert np.max(np.abs(counted - v) / v) < 2e-3
    # the centroids are the weighted means of each cell's samples
    means = np.stack([np.bincount(owner, weights=w * y[:, k]) / counted for k in range(2)], axis=1)
    assert np.allclose(npy(r.centroids), means, atol=1e-12)


def test_volume_jacobian_against_finite_differences_of_exact_areas() -> None:
    """The Newton model: J u vs (A(f + h u) - A(f - h u)) / 2h on the exact power cells."""
    x, _ = problem(4, 15)
    rng = np.random.default_rng(4)
    f = rng.normal(size=15) * 1e-3
    domain = grid_domain(np.ones((512, 512)))
    jac = assign(domain, x, f, squared_distance).jacobian()
    for _ in range(2):
        u = rng.normal(size=15)
        h = 1e-6
        fd = (exact_power_cells(x, f + h * u)[0] - exact_power_cells(x, f - h * u)[0]) / (2 * h)
        assert np.linalg.norm(jac.matvec(u) - fd) < 0.05 * np.linalg.norm(fd)


def test_box_cdf_against_sampling_and_edges() -> None:
    rng = np.random.default_rng(5)
    t = rng.random((400_000, 3)) - 0.5
    for d in (1, 2, 3):
        widths = rng.random((4, d)) + 0.05
        z = rng.normal(size=4) * 0.3
        sampled = [np.mean((t[:, :d] * widths[k]).sum(1) <= z[k]) for k in range(4)]
        assert np.allclose(box_cdf(np, z, widths), sampled, atol=4e-3)
    # one zero width: a uniform variable of width 1; all zero: a step at 0
    assert np.allclose(box_cdf(np, np.array([0.25, -0.1]), np.array([[1.0, 0.0], [1.0, 0.0]])), [0.75, 0.4])
    assert np.array_equal(box_cdf(np, np.array([0.1, -0.1]), np.zeros((2, 2))), [1.0, 0.0])


def test_init_and_single_cell() -> None:
    x, v = problem(6, 9)
    first = laguerre_cells(x, v, density=np.ones((128, 128)), tol=1e-6)
    again = laguerre_cells(x, v, density=np.ones((128, 128)), tol=1e-6, init=first.weights)
    assert again.n_iter == 0 and again.warm_start_iter == 0 and again.n_evaluations == 1
    # weights that leave cells empty: the warm start takes over
    crowded = np.zeros(9)
    crowded[0] = 10.0
    rescued = laguerre_cells(x, v, density=np.ones((128, 128)), tol=1e-6, init=crowded)
    assert rescued.converged and rescued.warm_start_iter > 0
    one = laguerre_cells(x[:1], density=np.ones((16, 16)) * 2.0)
    assert np.allclose(npy(one.volumes), [2.0]) and np.allclose(npy(one.centroids), [[0.5, 0.5]])


def test_not_converged_warns() -> None:
    x, v = problem(7, 10)
    with pytest.warns(ConvergenceWarning, match="max_iter=1"):
        r = laguerre_cells(x, v, density=np.ones((64, 64)), tol=1e-9, max_iter=1)
    assert not r.converged


def test_bad_input() -> None:
    x, v = problem(8, 5)
    ones = np.ones((32, 32))
    with pytest.raises(ValueError, match="nonnegative"):
        laguerre_cells(x, v, density=ones - 2 * (np.arange(32)[:, None] == 3))
    with pytest.raises(ValueError, match="NaN"):
        laguerre_cells(x, v, density=np.where(np.eye(32) > 0, np.nan, 1.0))
    with pytest.raises(ValueError, match="NaN"):
        laguerre_cells(np.where(x > 0.5, np.nan, x), v, density=ones)
    with pytest.raises(ValueError, match="sum to"):
        laguerre_cells(x, 2 * v, density=ones)
    with pytest.raises(ValueError, match="positive"):
        laguerre_cells(x, np.concatenate([[-v[0]], v[1:]]), density=ones)
    with pytest.raises(ValueError, match="zero everywhere"):
        laguerre_cells(x, v, density=np.zeros((8, 8)))
    with pytest.raises(ValueError, match="equal"):  # two seeds at one place: one cell stays empty
        laguerre_cells(np.concatenate([x, x[:1]]), density=ones)
    with pytest.raises(ValueError, match="empty at every start"):  # its Voronoi cell misses the support
        laguerre_cells(
            np.array([[0.1, 0.5], [0.2, 0.5], [0.9, 0.5]]),
            density=ones * (np.arange(32) >= 16)[:, None],
            warm_start=False,
        )
    with pytest.raises(TypeError, match="float64"):
        laguerre_cells(x.astype(np.float32), v, density=ones)
    with pytest.raises(ValueError, match="either"):
        laguerre_cells(x, v, density=ones, samples=x)
    with pytest.raises(ValueError, match="3 coordinates"):
        laguerre_cells(np.ones((5, 3)), v, density=ones)
    with pytest.raises(ValueError, match="bounds"):
        laguerre_cells(x, v, density=ones, bounds=[(0.0, 1.0), (1.0, 0.0)])
    with pytest.raises(ValueError, match="shape"):
        laguerre_cells(x, v[:4], density=ones)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="bandwidth"):
            laguerre_cells(x, v, density=ones, bandwidth=0.1)


def test_result_reads_as_an_ot_result() -> None:
    """value, f, g (the c-transform on the pixel centres) and marginal errors against numpy brute force."""
    from lazymat.solvers import OTResult

    x, v = problem(11, 30)
    n = 64
    density = np.ones((n, n))
    r = laguerre_cells(x, v, density=density, tol=1e-6)
    assert isinstance(r, OTResult) and r.f is r.weights and r.eps == 0.0 and r.schedule
    t = (np.arange(n) + 0.5) / n
    y = np.stack(np.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    mu = np.full(n * n, 1.0 / (n * n))
    shifted = ((y[:, None, :] - x[None, :, :]) ** 2).sum(-1) - npy(r.f)[None, :]
    g = shifted.min(axis=1)
    np.testing.assert_allclose(npy(r.g), g, atol=1e-13)
    np.testing.assert_allclose(float(r.value), float(npy(r.f) @ v + mu @ g), rtol=1e-12)
    # the dual at the pixel centres: the primal cost of their assignment, up to the volume mismatch
    labels = shifted.argmin(axis=1)
    np.testing.assert_array_equal(npy(r.labels(y)), labels)
    primal = float((mu * ((y - x[labels]) ** 2).sum(-1)).sum())
    counted = np.bincount(labels, weights=mu, minlength=len(x))
    assert abs(float(r.value) - primal) <= np.abs(npy(r.f)).max() * np.abs(counted - v).sum() + 1e-12
    volume_error, domain_error = r.marginal_errors
    np.testing.assert_allclose(float(volume_error), np.abs(npy(r.volumes) - v).sum(), rtol=1e-12)
    assert float(domain_error) == 0.0
    with pytest.raises(NotImplementedError, match="labels"):
        _ = r.plan
