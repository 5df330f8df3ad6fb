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
from lazymat_torch import merges, sqdist_kmin


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


def test_fallback_rows_when_candidates_are_not_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hundreds of y_j within rounding of the same distance: the bound cannot separate the
    K' candidates from the rest, so the rows are evaluated exactly (and still right)."""
    exact_rows = []
    tile_kmin = merges.KMinReducer.tile_kmin

    def spy(self: merges.KMinReducer, vals: torch.Tensor, j0: int) -> tuple[torch.Tensor, torch.Tensor]:
        exact_rows.append(vals.shape[0])
        return tile_kmin(self, vals, j0)

    monkeypatch.setattr(merges.KMinReducer, "tile_kmin", spy)
    x, y = near_ties(20, 40, seed=3)
    check(x, y, 10)
    assert sum(exact_rows) >= 1


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
