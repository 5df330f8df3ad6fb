"""torch-tiled K-min / min of |x - y|^2: GEMM candidates, exact values and order.

The candidate filter (lazymat_torch.sqdist_kmin) must return what the exact evaluation
does: the K smallest float32 values of sum_d (x_d - y_d)^2, ties to the lower index. The
references are dense numpy: float32 summed over d in order (order and values), float64
(values up to float32 rounding).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lazymat as lm
from lazymat_torch import sqdist_kmin


def dense_kmin(x: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The K smallest float32 squared distances (summed over d in order) and their indices,
    ties to the lower index (a stable sort)."""
    diff = x[:, None, :] - y[None, :, :]
    sq = diff * diff
    d2 = sq[..., 0].copy()
    for d in range(1, x.shape[1]):
        d2 += sq[..., d]
    order = np.argsort(d2, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d2, order, axis=1), order


def check(x: np.ndarray, y: np.ndarray, k: int) -> None:
    values, index = (
        lm.Vi(torch.tensor(x)).sqdist(lm.Vj(torch.tensor(y))).Kmin_argKmin(k, engine="torch-tiled")
    )
    ref_values, ref_index = dense_kmin(x, y, k)
    np.testing.assert_array_equal(index.numpy(), ref_index)
    np.testing.assert_array_equal(values.numpy(), ref_values)
    d64 = ((x[:, None].astype(np.float64) - y[None].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_allclose(values.numpy(), np.sort(d64, axis=1)[:, :k], rtol=1e-5, atol=1e-6)


def near_ties(n: int, per: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each x_i has ``per`` y_j at almost the same distance (a sphere of radius 0.3, radii
    perturbed by a few float32 ulps), where GEMM rounding alone reorders them (far from
    the origin, so that the GEMM's cancellation is large), then 3 y_j further out; the
    x_i are far apart."""
    rng = np.random.default_rng(seed)
    x = (10.0 + 30.0 * rng.random((n, 3))).astype(np.float32)
    centre = np.repeat(x, per + 3, axis=0)
    direction = rng.standard_normal((len(centre), 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    radius = 0.3 * (1 + 1e-7 * rng.integers(-3, 4, len(centre)))
    radius.reshape(n, per + 3)[:, per:] = [1.0, 1.5, 2.0]
    y = (centre + radius[:, None] * direction).astype(np.float32)
    return x, y[rng.permutation(len(y))]


@pytest.mark.parametrize("k", [1, 5, 10])
def test_near_ties_match_dense_float32_order(k: int) -> None:
    for per in (3, 6, 12):
        x, y = near_ties(40, per, seed=k)
        check(x, y, k)


def test_exact_ties_go_to_the_lower_index() -> None:
    grid = np.stack(np.meshgrid(*[np.arange(6.0)] * 3), -1).reshape(-1, 3).astype(np.float32)
    y = np.concatenate([grid, grid[::-1]])  # every distance at least twice
    check(grid[::7] + np.float32(0.5), y, 10)


def test_many_candidates_per_row_near_ties(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dozens of y_j within rounding of the same distance: every one is a candidate (more
    than K in a row), and the exact values order them."""
    widest = []
    merge = sqdist_kmin._RowBlock.merge

    def spy(self: sqdist_kmin._RowBlock, row: torch.Tensor, col: torch.Tensor) -> None:
        widest.append(int(torch.bincount(row).max()))
        merge(self, row, col)

    monkeypatch.setattr(sqdist_kmin._RowBlock, "merge", spy)
    x, y = near_ties(20, 40, seed=3)
    check(x, y, 10)
    assert max(widest) > 10


def test_far_chunks_are_skipped_and_the_result_is_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """x in a corner of the cube of uniform y: most chunks lie beyond every row's K-th
    distance and are never multiplied; the K-lists still match the dense ones."""
    monkeypatch.setattr(sqdist_kmin, "ROW_BLOCK", 32)
    visited = []
    visit = sqdist_kmin._RowBlock.visit

    def spy(self: sqdist_kmin._RowBlock, ids: torch.Tensor, per_tile: int, buffer: torch.Tensor) -> None:
        visited.append(ids.shape[0])
        visit(self, ids, per_tile, buffer)

    monkeypatch.setattr(sqdist_kmin._RowBlock, "visit", spy)
    rng = np.random.default_rng(11)
    x = np.float32(0.2) * rng.random((300, 3), dtype=np.float32)
    y = rng.random((3000, 3), dtype=np.float32)
    check(x, y, 10)
    blocks, chunks = -(-300 // 32), -(-3000 // sqdist_kmin.CHUNK)
    assert sum(visited) < blocks * chunks / 4


@pytest.mark.parametrize(("m", "k"), [(64 * 5 + 3, 10), (300, 70), (64, 64)])
def test_partial_last_chunk_and_k_beyond_a_chunk(m: int, k: int) -> None:
    """The last chunk holds fewer than K columns (3), K exceeds a chunk (70), K = M."""
    rng = np.random.default_rng(m + k)
    x, y = rng.random((90, 2), dtype=np.float32), rng.random((m, 2), dtype=np.float32)
    check(x, y, k)


def test_float64_points_far_from_the_origin() -> None:
    rng = np.random.default_rng(13)
    check(1e3 + rng.random((80, 4)), 1e3 + rng.random((700, 4)), 6)


def test_several_column_tiles_and_padding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqdist_kmin, "MAX_TILE_J", 3 * sqdist_kmin.CHUNK)
    rng = np.random.default_rng(5)
    x, y = rng.random((50, 3), dtype=np.float32), rng.random((1000, 3), dtype=np.float32)
    y[500:] = y[:500]  # ties across column tiles
    with lm.config(tile_bytes=2**14):
        check(x, y, 7)


def test_argmin_matches_dense() -> None:
    x, y = near_ties(60, 4, seed=7)
    got = lm.Vi(torch.tensor(x)).sqdist(lm.Vj(torch.tensor(y))).min_argmin(engine="torch-tiled")
    ref_values, ref_index = dense_kmin(x, y, 1)
    np.testing.assert_array_equal(got[1].numpy(), ref_index)
    np.testing.assert_array_equal(got[0].numpy(), ref_values)


def test_non_finite_inputs_take_the_exact_path() -> None:
    rng = np.random.default_rng(9)
    x, y = rng.random((30, 3), dtype=np.float32), rng.random((200, 3), dtype=np.float32)
    y[3] = np.inf
    check(x, y, 4)
