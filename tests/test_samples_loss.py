"""SamplesLoss (GeomLoss's interface) on lazymat: kernel norms, Hausdorff, Sinkhorn, call forms.

Kernel norms are checked against GeomLoss 0.3.1 (torch, tensorized); the Hausdorff
divergence, which GeomLoss 0.3.1 lists but cannot run, against a dense numpy
implementation of its definition and against its two limits (chamfer distance as
blur -> 0, kernel norm as blur -> infinity).
"""

from __future__ import annotations

import numpy as np
import pytest

import lazymat
from lazymat.solvers import SamplesLoss
from lazymat.solvers.costs import half_sqdist
from lazymat.solvers.hausdorff import hausdorff_loss
from lazymat.solvers.measures import check_measures
from lazymat.solvers.penalties import Balanced
from lazymat.solvers.schedule import epsilon_schedule

BACKENDS = [name for name in ("numpy", "torch") if name in lazymat.backends()]


def arr(name: str, v: np.ndarray) -> object:
    return lazymat.get_registry().backend(name).from_numpy(np.ascontiguousarray(v))


def npy(v: object) -> np.ndarray:
    b = lazymat.backend_for(v)
    return np.asarray(b.to_numpy(b.stop_gradient(v)))


def problem(seed: int, n: int = 21, m: int = 26, d: int = 3):
    rng = np.random.default_rng(seed)
    a, b = rng.random(n) + 0.1, rng.random(m) + 0.1
    return a / a.sum(), rng.random((n, d)), b / b.sum(), rng.random((m, d)) + 0.25


def exact_kernel(name: str, blur: float):
    """GeomLoss's kernels as torch functions, without its 1e-4 clamp of |x - y|."""

    def kernel(x, y, **_):
        d2 = ((x[:, :, None, :] - y[:, None, :, :]) ** 2).sum(-1)
        if name == "gaussian":
            return (-d2 / (2 * blur**2)).exp()
        d = (d2 + 1e-30).sqrt()
        return (-d / blur).exp() if name == "laplacian" else -d

    return kernel


def geomloss(loss: str, *args, exact: bool = True, **kw):
    gl = pytest.importorskip("geomloss")
    torch = pytest.importorskip("torch")
    if exact and loss in ("laplacian", "energy"):
        kw["kernel"] = exact_kernel(loss, kw.get("blur", 0.05))
    out = gl.SamplesLoss(loss, backend="tensorized", **kw)(*(torch.tensor(v) for v in args))
    return tuple(o.numpy() for o in out) if isinstance(out, tuple) else out.numpy()


# -- kernel norms ----------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss", ["gaussian", "laplacian", "energy"])
@pytest.mark.parametrize("blur", [0.1, 0.7])
def test_kernel_losses_match_geomloss(backend, loss, blur):
    a, x, b, y = problem(0)
    ours = SamplesLoss(loss, blur=blur)(*(arr(backend, v) for v in (a, x, b, y)))
    np.testing.assert_allclose(npy(ours), geomloss(loss, a, x, b, y, blur=blur), rtol=1e-9)
    # GeomLoss's own kernels clamp |x - y| at 1e-4, which moves the diagonal a little
    np.testing.assert_allclose(npy(ours), geomloss(loss, a, x, b, y, blur=blur, exact=False), rtol=2e-3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss", ["gaussian", "energy"])
def test_kernel_potentials_and_batches_match_geomloss(backend, loss):
    a, x, b, y = problem(1)
    F, G = SamplesLoss(loss, blur=0.3, potentials=True)(*(arr(backend, v) for v in (a, x, b, y)))
    ref_f, ref_g = geomloss(loss, a, x, b, y, blur=0.3, potentials=True)
    np.testing.assert_allclose(npy(F), ref_f.reshape(-1), rtol=1e-9, atol=1e-13)  # GeomLoss: (1, N)
    np.testing.assert_allclose(npy(G), ref_g.reshape(-1), rtol=1e-9, atol=1e-13)
    rng = np.random.default_rng(2)
    xb, yb = rng.random((3, 11, 2)), rng.random((3, 13, 2))
    values = SamplesLoss(loss, blur=0.3)(arr(backend, xb), arr(backend, yb))
    assert npy(values).shape == (3,)
    np.testing.assert_allclose(npy(values), geomloss(loss, xb, yb, blur=0.3), rtol=1e-9)


# -- Sinkhorn through SamplesLoss ------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_sinkhorn_forms_match_geomloss(backend):
    a, x, b, y = problem(3)
    L = SamplesLoss("sinkhorn", p=2, blur=0.1, scaling=0.8)
    np.testing.assert_allclose(
        npy(L(*(arr(backend, v) for v in (a, x, b, y)))),
        geomloss("sinkhorn", a, x, b, y, p=2, blur=0.1, scaling=0.8),
        rtol=1e-7,
    )
    # two-argument form: uniform weights; (N, 1) weights; potentials shaped like the weights
    uniform = [np.full(len(x), 1 / len(x)), x, np.full(len(y), 1 / len(y)), y]
    np.testing.assert_allclose(
        npy(L(arr(backend, x), arr(backend, y))), npy(L(*(arr(backend, v) for v in uniform))), rtol=1e-12
    )
    F, G = SamplesLoss(blur=0.1, potentials=True)(*(arr(backend, v) for v in (a[:, None], x, b[:, None], y)))
    assert npy(F).shape == (len(x), 1) and npy(G).shape == (len(y), 1)
    ref_f, ref_g = geomloss("sinkhorn", a[:, None], x, b[:, None], y, blur=0.1, potentials=True)
    np.testing.assert_allclose(npy(F).ravel(), ref_f.ravel(), rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(npy(G).ravel(), ref_g.ravel(), rtol=1e-7, atol=1e-12)


def test_backend_options_share_one_path():
    a, x, b, y = problem(4)
    values = {be: SamplesLoss(blur=0.2, backend=be)(a, x, b, y) for be in ("auto", "tensorized", "online")}
    assert values["auto"] == values["tensorized"] == values["online"]


def test_unbalanced_sinkhorn_matches_geomloss():
    a, x, b, y = problem(5)
    b = 1.7 * b
    for reach in (0.1, 0.5):
        ours = SamplesLoss(blur=0.1, reach=reach, scaling=0.8)(a, x, b, y)
        np.testing.assert_allclose(
            ours, geomloss("sinkhorn", a, x, b, y, blur=0.1, reach=reach, scaling=0.8), rtol=1e-7
        )


# -- Hausdorff -------------------------------------------------------------------------------
def _lse(v, axis):
    mx = v.max(axis=axis, keepdims=True)
    return np.squeeze(mx + np.log(np.exp(v - mx).sum(axis=axis, keepdims=True)), axis=axis)


def dense_hausdorff(a, x, b, y, eps):
    """1/2 <a, G_b(x) - f_aa> + 1/2 <b, F_a(y) - g_bb>, dense, at fixed eps (p=2)."""

    def cost(u, v):
        return ((u[:, None, :] - v[None, :, :]) ** 2).sum(-1) / 2

    def self_potential(w, z):
        f = np.zeros(len(w))
        for _ in range(10000):
            new = 0.5 * (f - eps * _lse(np.log(w)[None, :] + (f[None, :] - cost(z, z)) / eps, axis=1))
            if np.abs(new - f).max() < 1e-15:
                break
            f = new
        return f

    def extend(w, z, f, points):
        return -eps * _lse(np.log(w)[None, :] + (f[None, :] - cost(points, z)) / eps, axis=1)

    f_aa, g_bb = self_potential(a, x), self_potential(b, y)
    return 0.5 * (a @ (extend(b, y, g_bb, x) - f_aa) + b @ (extend(a, x, f_aa, y) - g_bb))


@pytest.mark.parametrize("backend", BACKENDS)
def test_hausdorff_matches_dense_definition(backend):
    a, x, b, y = problem(6, n=12, m=14, d=2)
    eps = 0.2**2
    m = check_measures(*(arr(backend, v) for v in (x, y, a, b)))
    schedule = epsilon_schedule(2, 2.0, 0.2, 0.5) + [eps] * 200  # anneal, then converge
    ours = hausdorff_loss(m, half_sqdist, schedule, Balanced())
    np.testing.assert_allclose(npy(ours)[0], dense_hausdorff(a, x, b, y, eps), rtol=1e-9)


def test_hausdorff_limits():
    a, x, b, y = problem(7, n=15, m=17, d=2)
    d = np.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1))
    chamfer = 0.5 * (a @ (d**2 / 2).min(1) + b @ (d**2 / 2).min(0))
    np.testing.assert_allclose(SamplesLoss("hausdorff", blur=1e-3)(a, x, b, y), chamfer, rtol=1e-3)
    energy = SamplesLoss("energy")(a, x, b, y)
    np.testing.assert_allclose(SamplesLoss("hausdorff", p=1, blur=1e4)(a, x, b, y), energy, rtol=1e-3)


def test_hausdorff_is_a_divergence():
    a, x, b, y = problem(8)
    L = SamplesLoss("hausdorff", blur=0.1)
    np.testing.assert_allclose(L(a, x, a, x), 0.0, atol=1e-14)
    assert L(a, x, b, y) > 1e-3
    np.testing.assert_allclose(L(a, x, b, y), L(b, y, a, x), rtol=1e-12)


# -- options and bad input -------------------------------------------------------------------
def test_custom_cost_and_kernel():
    a, x, b, y = problem(9)
    np.testing.assert_allclose(
        SamplesLoss(cost=lambda u, v: u.sqdist(v) / 2, blur=0.1)(a, x, b, y),
        SamplesLoss(blur=0.1)(a, x, b, y),
        rtol=1e-13,
    )
    np.testing.assert_allclose(
        SamplesLoss("gaussian", kernel=lambda u, v: (-u.sqdist(v) / (2 * 0.3**2)).exp())(a, x, b, y),
        SamplesLoss("gaussian", blur=0.3)(a, x, b, y),
        rtol=1e-13,
    )


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"loss": "wasserstein"}, ValueError, "unknown loss"),
        ({"backend": "gpu"}, ValueError, "unknown backend"),
        ({"loss": "energy", "backend": "multiscale"}, NotImplementedError, "multiscale"),
        ({"backend": "multiscale", "cluster_scale": -0.1}, ValueError, "cluster_scale"),
        ({"backend": "multiscale", "truncate": 0}, ValueError, "truncate"),
        ({"blur": 0}, ValueError, "blur"),
        ({"p": 3}, ValueError, "p=3"),
        ({"cost": "SqDist(X,Y)"}, TypeError, "formula strings"),
        ({"reach": 0.1, "penalty": "l1"}, ValueError, "penalty"),
    ],
)
def test_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        SamplesLoss(**kwargs)


def test_bad_calls():
    a, x, b, y = problem(10)
    L = SamplesLoss("gaussian")
    assert L(None, a, x, None, b, y) == L(a, x, b, y)  # no labels: GeomLoss's four-argument call
    with pytest.raises(NotImplementedError, match="multiscale Sinkhorn"):
        L(np.zeros(len(x), dtype=int), a, x, None, b, y)
    with pytest.raises(TypeError, match=r"\(x, y\), \(a, x, b, y\) or \(l_x, a, x, l_y, b, y\)"):
        L(x, y, a)
    with pytest.raises(ValueError, match="same space"):
        L(x, y[:, :2])
    with pytest.raises(ValueError, match="nonnegative"):
        L(-a, x, b, y)
    with pytest.raises(ValueError, match="reach"):
        SamplesLoss("sinkhorn")(a, x, 2 * b, y)
