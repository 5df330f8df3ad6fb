"""Memory is part of correctness: no reduction allocates anything of size N*M.

The reference engine's arrays are numpy arrays, which ``tracemalloc`` traces: the peak of
the traced memory during a reduction (inputs allocated before tracing starts) is what the
reduction itself allocated. The native CPU engine allocates in C; its peak is measured as
the growth of the process's maximum resident set size in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import lazymat as lm

MB = 2**20


@pytest.fixture(autouse=True, scope="module")
def warm_up() -> None:
    """One small reduction and gradient first: lazy imports and caches are not the reduction's."""
    x = np.random.default_rng(9).random((50, 3))
    gaussian_sum(x, x)()
    with lm.config(engine="reference"):
        lm.grad((-lm.Vi(x).sqdist(lm.Vj(x)) * 10.0).exp() * lm.Vj(x[:, :1]), wrt=[x])


def traced_peak(run: Callable[[], Any]) -> tuple[int, Any]:
    """Peak bytes traced by tracemalloc while ``run()`` executes, and its result."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        out = run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, out


def gaussian_sum(x: np.ndarray, y: np.ndarray, **config: Any) -> Callable[[], Any]:
    def run() -> Any:
        with lm.config(engine="reference", **config):
            return (-lm.Vi(x).sqdist(lm.Vj(y)) * 10.0).exp().sum(axis=1)

    return run


def dense_rows(x: np.ndarray, y: np.ndarray, rows: slice) -> np.ndarray:
    """The Gaussian kernel sum of a few rows, in float64 (an (rows, M) dense block)."""
    xr, yd = x[rows].astype(np.float64), y.astype(np.float64)
    return np.exp(-10.0 * ((xr[:, None, :] - yd[None, :, :]) ** 2).sum(-1)).sum(1)


@pytest.mark.slow
def test_kernel_sum_of_20000_points_stays_small() -> None:
    """N = M = 2*10^4 (4*10^8 pairs; a dense float32 matrix would take 1.6 GB): < 200 MB."""
    n = 20_000
    rng = np.random.default_rng(0)
    x, y = rng.random((n, 3), dtype=np.float32), rng.random((n, 3), dtype=np.float32)
    peak, out = traced_peak(gaussian_sum(x, y))
    assert peak < 200 * MB, f"peak {peak / MB:.0f} MB"
    assert peak < n * n * 4 / 50
    np.testing.assert_allclose(out[:50, 0], dense_rows(x, y, slice(0, 50)), rtol=1e-4)


def test_peak_follows_the_tile_budget_not_n_times_m() -> None:
    rng = np.random.default_rng(1)
    peaks = {}
    for n in (1000, 2000):
        x, y = rng.random((n, 3)), rng.random((n, 3))
        for tile in (1 * MB, 4 * MB, 16 * MB):
            peaks[n, tile], out = traced_peak(gaussian_sum(x, y, tile_bytes=tile))
            np.testing.assert_allclose(out[:20, 0], dense_rows(x, y, slice(0, 20)), rtol=1e-12)
            # within the budget, plus O(N) for the outputs and the running sums
            assert peaks[n, tile] < 1.25 * tile + 64 * n, (n, tile, peaks[n, tile])
    # a larger budget is used (bigger tiles), so the bound above is not vacuous
    assert peaks[2000, 16 * MB] > 4 * peaks[2000, 1 * MB]
    # four times the pairs, the same peak up to O(N)
    for tile in (1 * MB, 4 * MB, 16 * MB):
        assert abs(peaks[2000, tile] - peaks[1000, tile]) < 64 * 2000 + tile / 4


def test_gradients_stay_small() -> None:
    """The VJP reductions (x-, y- and b-gradients of a kernel product) are linear-memory too."""
    n = 3000
    rng = np.random.default_rng(2)
    x, y, b = rng.random((n, 3)), rng.random((n, 3)), rng.random((n, 1))
    g = rng.random((n, 1))

    def run() -> Any:
        with lm.config(engine="reference", tile_bytes=2 * MB):
            K = (-lm.Vi(x).sqdist(lm.Vj(y)) * 10.0).exp() * lm.Vj(b)
            return lm.vjp(K, g, wrt=[x, y, b])

    peak, (gx, gy, gb) = traced_peak(run)
    assert peak < 2.5 * 2 * MB + 200 * n, f"peak {peak / MB:.1f} MB"
    d = x[:5, None, :] - y[None, :, :]
    k = np.exp(-10.0 * (d**2).sum(-1))
    np.testing.assert_allclose(gx[:5], -20.0 * ((g[:5] * k * b[:, 0])[..., None] * d).sum(1), rtol=1e-11)
    assert gy.shape == y.shape and gb.shape == b.shape


NATIVE_RUN = """
import json, resource, sys
import numpy as np, lazymat as lm
n = int(sys.argv[1])
rng = np.random.default_rng(0)
x, y = rng.random((n, 3), dtype=np.float32), rng.random((n, 3), dtype=np.float32)
with lm.config(engine="native-cpu"):
    (-lm.Vi(x[:64]).sqdist(lm.Vj(y[:64])) * 10.0).exp().sum(axis=1)  # compile and load the kernel
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = (-lm.Vi(x).sqdist(lm.Vj(y)) * 10.0).exp().sum(axis=1)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_kb": after - before, "rows": out[:20, 0].tolist()}))
"""


@pytest.mark.slow
@pytest.mark.skipif("native-cpu" not in lm.engines(), reason="no native CPU engine in this build")
def test_native_kernel_sum_of_200000_points_stays_small() -> None:
    """N = M = 2*10^5 (4*10^10 pairs, a dense matrix of 160 GB) on the native CPU engine: < 200 MB."""
    n = 200_000
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAZYMAT_")}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(NATIVE_RUN), str(n)],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,  # a hang guard only: 4*10^10 pairs take minutes on a busy machine
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    growth = out["growth_kb"] * 1024  # ru_maxrss is in kilobytes on Linux
    assert growth < 200 * MB, f"max RSS grew by {growth / MB:.0f} MB"
    rng = np.random.default_rng(0)
    x, y = rng.random((n, 3), dtype=np.float32), rng.random((n, 3), dtype=np.float32)
    np.testing.assert_allclose(out["rows"], dense_rows(x, y, slice(0, 20)), rtol=1e-4)
