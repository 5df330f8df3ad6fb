"""The jax-xla engine on block-sparse reductions (``ranges``).

The conformance suite's block-sparse tests run with the engine forced (``TestJaxXlaBlockSparse``);
the rest checks that dispatch picks jax-xla for ranged requests, and jit, vmap and grad of
a ranged reduction against the dense masked reduction in float64 numpy.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

import lazymat as lm
import lazymat.testing
from lazymat.block_sparse import BlockSparsity, cluster_centroids, grid_cluster, mask_from_cost, sort_clusters
from lazymat.dispatch import select_engine
from lazymat.request import build_request

jax.config.update("jax_enable_x64", True)

RNG = np.random.default_rng(3)
X = RNG.random((61, 2))
Y = RNG.random((47, 2))
B = RNG.standard_normal((47, 2))
#: uneven blocks, an empty i-block, an unvisited j-block, runs of adjacent j-blocks
SPARSITY = BlockSparsity(
    (0, 3, 20, 21, 40, 61), (0, 9, 10, 30, 47), ((0, 2), (1, 2, 3), (), (3,), (0, 1, 2, 3))
)
MASK = SPARSITY.dense_mask()
D2 = ((X[:, None] - Y[None]) ** 2).sum(-1)
S = 0.05


class TestJaxXlaBlockSparse(lazymat.testing.BackendConformance):
    """The conformance suite's block-sparse tests with the jax-xla engine forced."""

    backend = "jax"
    engine = "jax-xla"


# the rest of the suite runs in test_jax_conformance.py
for _name in dir(TestJaxXlaBlockSparse):
    if _name.startswith("test_") and "block_sparse" not in _name:
        setattr(TestJaxXlaBlockSparse, _name, None)


def _lazy(x: jax.Array, y: jax.Array) -> lm.LazyMatrix:
    return -lm.Vi(x).sqdist(lm.Vj(y)) / S


def test_dispatch_picks_jax_xla_for_ranges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A small block-sparse request whose native kernel is neither loaded nor on disk (an empty
    kernel cache, no background build) goes to jax-xla: a formula no other test compiles."""
    monkeypatch.setenv("LAZYMAT_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("LAZYMAT_NATIVE_BACKGROUND", "0")
    lazy = -lm.Vi(jnp.asarray(X)).sqdist(lm.Vj(jnp.asarray(Y))) / (S * 1.0625)
    spec, args = lazy.prepare("lse", 1, 0, SPARSITY)
    request = build_request(spec, args, lm.get_registry().backend("jax"), 1 << 20)
    assert select_engine(request, None).name == "jax-xla"


@pytest.mark.parametrize("tile_bytes", [None, 2**11])
@pytest.mark.parametrize("axis", [0, 1])
def test_jit_sum_lse_min_kmin_vs_dense_masked(axis: int, tile_bytes: int | None) -> None:
    """Under jit, with the default budget and one that splits blocks into several tiles."""
    x, y = jnp.asarray(X), jnp.asarray(Y)
    ref = np.where(MASK, -D2 / S, -np.inf)
    ref = ref if axis == 1 else ref.T
    w = B if axis == 1 else RNG.standard_normal((61, 2))

    @jax.jit
    def run(x: jax.Array, y: jax.Array, w: jax.Array) -> tuple[jax.Array, ...]:
        F = _lazy(x, y)
        W = lm.Vj(w) if axis == 1 else lm.Vi(w)
        s = (F.exp() * W).sum(axis=axis, ranges=SPARSITY)
        lse = F.logsumexp(axis=axis, ranges=SPARSITY)
        v, i = (-F).min_argmin(axis=axis, ranges=SPARSITY)
        kv, ki = (-F).Kmin_argKmin(4, axis=axis, ranges=SPARSITY)
        return s, lse, v, i, kv, ki

    with lm.config(engine="jax-xla", **({} if tile_bytes is None else {"tile_bytes": tile_bytes})):
        s, lse, v, i, kv, ki = (np.asarray(a) for a in run(x, y, jnp.asarray(w)))
    np.testing.assert_allclose(s, np.exp(ref) @ w, rtol=1e-12, atol=1e-14)
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(lse[:, 0], logsumexp(ref, axis=1), rtol=1e-12)
    neg = -ref
    visited = np.isfinite(neg).any(1)
    np.testing.assert_allclose(v[:, 0], neg.min(1), rtol=1e-14)
    np.testing.assert_array_equal(i[visited, 0], neg.argmin(1)[visited])
    assert np.all(i[~visited] == -1)
    np.testing.assert_allclose(kv, np.sort(neg, 1)[:, :4], rtol=1e-14)
    finite = np.isfinite(kv)
    np.testing.assert_array_equal(ki[finite], np.argsort(neg, 1, kind="stable")[:, :4][finite])
    assert np.all(ki[~finite] == -1)


def test_vmap_over_a_batch_of_data() -> None:
    xs = jnp.asarray(np.stack([X, X[::-1] * 0.5, X + 0.1]))

    def lse(x: jax.Array) -> jax.Array:
        return _lazy(x, jnp.asarray(Y)).logsumexp(axis=1, ranges=SPARSITY)[:, 0]

    with lm.config(engine="jax-xla"):
        got = np.asarray(jax.vmap(lse)(xs))
    for b in range(3):
        d2 = ((np.asarray(xs[b])[:, None] - Y[None]) ** 2).sum(-1)
        with np.errstate(divide="ignore"):
            np.testing.assert_allclose(
                got[b], logsumexp(np.where(MASK, -d2 / S, -np.inf), axis=1), rtol=1e-12
            )


@pytest.mark.parametrize("reduction", ["sum", "lse"])
def test_grad_vs_dense_masked(reduction: str) -> None:
    """jax.grad (jvp + transpose of the primitive) keeps the sparsity, on both sides."""
    g = RNG.standard_normal(61)

    def loss(x: jax.Array, y: jax.Array) -> jax.Array:
        F = _lazy(x, y)
        out = (
            F.exp().sum(axis=1, ranges=SPARSITY)
            if reduction == "sum"
            else F.logsumexp(axis=1, ranges=SPARSITY)
        )
        out = jnp.where(jnp.isfinite(out[:, 0]), out[:, 0], 0.0)  # rows that visit nothing: -inf
        return jnp.sum(out * g)

    with lm.config(engine="jax-xla"):
        gx, gy = (np.asarray(a) for a in jax.jit(jax.grad(loss, (0, 1)))(jnp.asarray(X), jnp.asarray(Y)))
    k = np.where(MASK, np.exp(-D2 / S), 0.0)
    if reduction == "lse":
        k = k / np.where(k.sum(1, keepdims=True) > 0, k.sum(1, keepdims=True), 1.0)
    w = (g[:, None] * k)[:, :, None] * (-2 / S) * (X[:, None] - Y[None])
    scale = np.abs(w.sum(1)).max()
    np.testing.assert_allclose(gx, w.sum(1), rtol=1e-10, atol=1e-12 * scale)
    np.testing.assert_allclose(gy, -w.sum(0), rtol=1e-10, atol=1e-12 * scale)


def test_grid_clusters_many_blocks() -> None:
    """Hundreds of blocks of uneven sizes (tile shapes from the structure) vs dense masked."""
    rng = np.random.default_rng(5)
    pts = []
    for n in (1500, 1200):
        p = rng.random((n, 2))
        perm, bounds = sort_clusters(grid_cluster(p, 0.07))
        pts.append((p[perm], bounds))
    (x, xb), (y, yb) = pts
    cx, cy = cluster_centroids(x, xb)[0], cluster_centroids(y, yb)[0]
    ranges = BlockSparsity.from_mask(xb, yb, mask_from_cost(((cx[:, None] - cy[None]) ** 2).sum(-1), 0.02))
    assert len(xb) > 150 and 0.02 < ranges.density() < 0.3
    F = lm.Vi(jnp.asarray(x)).sqdist(lm.Vj(jnp.asarray(y)))
    with lm.config(engine="jax-xla"):
        lse = np.asarray((-F / S).logsumexp(axis=0, ranges=ranges))[:, 0]
        kv, ki = (np.asarray(a) for a in F.Kmin_argKmin(3, axis=1, ranges=ranges))
    d2 = np.where(ranges.dense_mask(), ((x[:, None] - y[None]) ** 2).sum(-1), np.inf)
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(lse, logsumexp(-d2.T / S, axis=1), rtol=1e-12)
    np.testing.assert_allclose(kv, np.sort(d2, 1)[:, :3], rtol=1e-14)
    finite = np.isfinite(kv)
    np.testing.assert_array_equal(ki[finite], np.argsort(d2, 1, kind="stable")[:, :3][finite])
    assert np.all(ki[~finite] == -1)
