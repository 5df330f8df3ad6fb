"""Small problems on one dense tile (solvers/tile_transports.py) against GeomLoss, float64.

GeomLoss's tutorials call SamplesLoss on 5 to 100 points: there lazymat runs the Sinkhorn
loop, its last extrapolation and the kernel norms on one dense tile of the stacked problems
(within the reductions' tile budget), and on lazy stacked reductions above it. Both paths
are checked here against GeomLoss's "tensorized" backend in the same process (float64, no
clamp: p = 2 and the Gaussian kernel, where GeomLoss's values are exact), on clouds of
different sizes (padded blocks), down to blur 0.001: padding that a small eps could
outweigh (a constant log-weight LOG_ZERO on the padded columns) shows there. Gradients on
both paths are checked against finite differences in tests/test_geomloss_gradients.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_stacked_softmins import dense_divergence

import lazymat
import lazymat.solvers.kernel_losses as kl
import lazymat.solvers.stacked_softmins as st
from lazymat.solvers import SamplesLoss, sinkhorn
from lazymat.solvers.costs import half_sqdist
from lazymat.solvers.sinkhorn_loop import Transport
from lazymat.solvers.tile_transports import TILE_PAIRS, fits_one_tile

torch = pytest.importorskip("torch")
geomloss = pytest.importorskip("geomloss")

#: the two paths: the default tile budget (one dense tile), and one too small for the tile
PATHS = {"tile": None, "lazy": 4096}
#: (N, M, loss arguments): x near 0, y near 1, so that -C / eps dwarfs a finite padding
CASES = [
    (20, 5, {"blur": 0.001, "scaling": 0.9}),
    (5, 20, {"blur": 0.001, "scaling": 0.9}),
    (7, 30, {"blur": 0.01, "reach": 0.3}),
    (30, 7, {"blur": 0.05}),
]


def clouds(n: int, m: int, batch: int | None = None) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(n * 100 + m)
    shape = () if batch is None else (batch,)
    x, y = rng.random((*shape, n, 2)) * 0.1, rng.random((*shape, m, 2)) * 0.2 + 0.9
    a, b = rng.random((*shape, n)) + 0.2, rng.random((*shape, m)) + 0.2
    return a / a.sum(-1, keepdims=True), x, b / b.sum(-1, keepdims=True), y


def spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Which loop ran: 'tile' or 'lazy' per stacked Sinkhorn loop."""
    seen: list[str] = []
    real = st.fits_one_tile

    def fits(problems):  # type: ignore[no-untyped-def]
        out = real(problems)
        seen.append("tile" if out else "lazy")
        return out

    monkeypatch.setattr(st, "fits_one_tile", fits)
    return seen


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize(("n", "m", "kw"), CASES)
def test_sinkhorn_matches_geomloss(monkeypatch, path, n, m, kw):
    seen = spy(monkeypatch)
    args = [torch.tensor(v) for v in clouds(n, m)]
    ref = geomloss.SamplesLoss("sinkhorn", backend="tensorized", **kw)(*args)
    with lazymat.config(tile_bytes=PATHS[path]):
        ours = SamplesLoss("sinkhorn", **kw)(*args)
    assert seen and set(seen) == {path}
    np.testing.assert_allclose(float(ours), float(ref), rtol=1e-10)


@pytest.mark.parametrize("path", list(PATHS))
def test_batched_potentials_match_geomloss(monkeypatch, path):
    seen = spy(monkeypatch)
    a, x, b, y = (torch.tensor(v) for v in clouds(9, 4, batch=3))
    kw = {"blur": 0.01, "reach": 0.5, "potentials": True}
    f_ref, g_ref = geomloss.SamplesLoss("sinkhorn", backend="tensorized", **kw)(a, x, b, y)
    with lazymat.config(tile_bytes=PATHS[path]):
        f, g = SamplesLoss("sinkhorn", **kw)(a, x, b, y)
    assert set(seen) == {path}
    np.testing.assert_allclose(f.numpy(), f_ref.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g.numpy(), g_ref.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("path", list(PATHS))
def test_gaussian_kernel_matches_geomloss(monkeypatch, path):
    seen: list[bool] = []
    real = kl.fits_tile_budget
    monkeypatch.setattr(kl, "fits_tile_budget", lambda *args: seen.append(real(*args)) or seen[-1])
    a, x, b, y = (torch.tensor(v, requires_grad=True) for v in clouds(11, 4))
    ref = geomloss.SamplesLoss("gaussian", blur=0.2, backend="tensorized")(a, x, b, y)
    (ref_x,) = torch.autograd.grad(ref, [x])
    with lazymat.config(tile_bytes=PATHS[path]):
        ours = SamplesLoss("gaussian", blur=0.2)(a, x, b, y)
    (ours_x,) = torch.autograd.grad(ours, [x])
    assert seen == [path == "tile"]
    np.testing.assert_allclose(float(ours.detach()), float(ref.detach()), rtol=1e-12)
    np.testing.assert_allclose(ours_x.numpy(), ref_x.numpy(), rtol=1e-10, atol=1e-14)


def transports(n: int, m: int) -> list[Transport]:
    """The three problems of a debiased divergence between n and m points in 3-D."""
    x, y = np.zeros((1, n, 3)), np.zeros((1, m, 3))
    a, b = np.ones((1, n)), np.ones((1, m))
    return [
        Transport(x, y, a, b, False, half_sqdist),
        Transport(x, x, a, a, True, half_sqdist),
        Transport(y, y, b, b, True, half_sqdist),
    ]


def test_the_tile_follows_the_budget():
    problems = transports(60, 30)
    # 4 blocks of 60 x 60 pairs, (3 + 4) float64 per pair: 806,400 bytes
    with lazymat.config(tile_bytes=806_400):
        assert fits_one_tile(problems)
    with lazymat.config(tile_bytes=806_399):
        assert not fits_one_tile(problems)
    with lazymat.config(tile_bytes=2**40):  # 4 x 100 x 100 pairs: the lazy reductions pay
        assert TILE_PAIRS < 4 * 100 * 100 and not fits_one_tile(transports(100, 10))
    x, w = problems[0].x, problems[0].a
    custom = [Transport(x, x, w, w, True, lambda u, v: u.sqdist(v))]
    assert not fits_one_tile(custom)  # custom costs: no dense formula here


def test_numpy_tile_matches_dense_sinkhorn(monkeypatch):
    """A converged divergence on the tile (numpy) against dense float64 iterations (written in
    test_stacked_softmins.py, whose test runs the lazy stacked loop)."""
    seen = spy(monkeypatch)
    a, x, b, y = clouds(8, 13)
    r = sinkhorn(x, y, a, b, blur=0.2, tol=1e-13, max_iter=5000)
    assert r.converged and set(seen) == {"tile"}
    np.testing.assert_allclose(r.value, dense_divergence(x, y, a, b, 0.2**2, iters=2000), rtol=1e-9)
