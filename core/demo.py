"""``lazymat demo``: the main job, on numpy, measured next to what a dense approach needs.

Two reductions over N 3-D points x_i and N points y_j, on the best installed engine:
the K nearest neighbours of every x_i among the y_j (``argKmin``) and a Gaussian kernel
product ``K @ b``. For each, the demo prints the time, the peak memory the reduction
allocated (numpy allocations traced by ``tracemalloc``, and the growth of the process's
peak resident memory, which also sees C allocations) and the size of the dense N-by-M
matrix a direct computation would build. The results are checked against dense numpy
on a sample of rows.

Solvers add their own demos (gradient flow, kriging, LDDMM) to :data:`EXTRA_DEMOS`.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import lazymat as lm

from .dispatch import select_backend, select_engine
from .options import get_option
from .request import build_request

#: further demos run after the main one: functions ``(quick: bool) -> None`` that print
#: what they do (``quick``: a small, fast version, as in ``lazymat demo --quick``)
EXTRA_DEMOS: list[Callable[[bool], None]] = []

#: size with an engine that compiles fused kernels (native-cpu, ...)
FAST_N = 100_000
#: size with the reference engine: about 10^7 pairs per second on 2 cores, so the two
#: reductions over 15000^2 pairs take about a minute
REFERENCE_N = 15_000
#: size of the quick demo
QUICK_N = 2_000
#: rows checked against dense numpy
CHECKED_ROWS = 200


@dataclass
class Measured:
    """One timed reduction: seconds, peak traced numpy bytes, peak RSS growth, result."""

    seconds: float
    traced_bytes: int
    rss_bytes: int | None
    result: Any


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (Linux); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(run: Callable[[], Any]) -> Measured:
    """Run ``run()`` once, timing it and recording its peak memory above the start."""
    rss_ok = _reset_peak_rss()
    rss_before = _status_kb("VmRSS")
    tracemalloc.start()
    try:
        start = time.perf_counter()
        result = run()
        seconds = time.perf_counter() - start
        _, traced = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    peak = _status_kb("VmHWM")
    rss = None if not rss_ok or rss_before is None or peak is None else max(0, peak - rss_before) * 1024
    return Measured(seconds, traced, rss, result)


def engine_for(matrix: lm.LazyMatrix, reduction: str, k: int = 0) -> str:
    """Name of the engine that dispatch picks for this reduction (over j)."""
    spec, args = matrix.prepare(reduction, 1, k)
    request = build_request(spec, args, select_backend(args), get_option("tile_bytes"))
    return select_engine(request).name


def _size(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if nbytes < 1024 or unit == "TB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    raise AssertionError("unreachable")


def _memory(m: Measured) -> str:
    rss = "n/a" if m.rss_bytes is None else _size(m.rss_bytes)
    return f"peak numpy allocations {_size(m.traced_bytes)}, peak RSS growth {rss}"


def _points(n: int, seed: int) -> np.ndarray:
    """n noisy points on the unit sphere (float32), a typical 3-D point cloud."""
    rng = np.random.default_rng(seed)
    p = rng.standard_normal((n, 3))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    return (p + 0.02 * rng.standard_normal((n, 3))).astype(np.float32)


def main_demo(n: int | None = None, quick: bool = False, k: int = 10, sigma: float = 0.1) -> None:
    """K nearest neighbours and a Gaussian kernel product of N points, measured."""
    x_all, y_all = _points(FAST_N, 0), _points(FAST_N, 1)
    probe = lm.Vi(x_all).sqdist(lm.Vj(y_all))
    fast = engine_for(probe, "argkmin", k)
    if n is None:
        n = QUICK_N if quick else (FAST_N if fast != "reference" else REFERENCE_N)
        why = (
            "quick run"
            if quick
            else f"the {fast!r} engine is available"
            if fast != "reference"
            else "only the reference engine runs numpy here: N chosen so that the demo takes "
            "about a minute on 2 cores (--n to change)"
        )
    else:
        why = "--n"
    x, y = (_points(n, 0), _points(n, 1)) if n > FAST_N else (x_all[:n], y_all[:n])
    b = np.random.default_rng(2).standard_normal((n, 1)).astype(np.float32)
    dist = lm.Vi(x).sqdist(lm.Vj(y))
    gauss = (-dist / (2 * sigma**2)).exp()
    knn_engine, kp_engine = engine_for(dist, "argkmin", k), engine_for(gauss * lm.Vj(b), "sum")
    print(f"lazymat {lm.__version__} demo: N = M = {n} points in 3-D (float32, numpy), {why}")
    print(
        f"engines: {knn_engine!r} (nearest neighbours), {kp_engine!r} (kernel product); "
        f"a dense N x M float32 matrix would take {_size(n * n * 4)}"
    )
    # compile or load the kernels on a few points first: the timings below are the reductions'
    start = time.perf_counter()
    xs, ys = lm.Vi(x[:64]), lm.Vj(y[:64])
    with lm.config(engine=knn_engine):
        xs.sqdist(ys).argKmin(k)
    with lm.config(engine=kp_engine):
        (-xs.sqdist(ys) / (2 * sigma**2)).exp() @ b[:64]
    print(f"warm-up (kernel compilation or cache load): {time.perf_counter() - start:.2f} s")

    knn = measure(lambda: dist.argKmin(k))
    print(f"{k} nearest neighbours (argKmin): {knn.seconds:.2f} s, {_memory(knn)}")
    kp = measure(lambda: gauss @ b)
    print(f"Gaussian kernel product K @ b (sigma = {sigma}): {kp.seconds:.2f} s, {_memory(kp)}")

    rows = np.random.default_rng(3).choice(n, size=min(CHECKED_ROWS, n), replace=False)
    d = ((x[rows, None, :].astype(np.float64) - y[None, :, :]) ** 2).sum(-1)
    got_d = np.sort(np.take_along_axis(d, knn.result[rows], axis=1), axis=1)
    knn_err = np.abs(got_d - np.sort(d, axis=1)[:, :k]).max()
    want = np.exp(-d / (2 * sigma**2)) @ b[:, 0].astype(np.float64)
    kp_err = np.abs(kp.result[rows, 0] - want).max() / np.abs(want).max()
    print(
        f"checked on {len(rows)} rows against dense numpy (float64): neighbour distances off by at most "
        f"{knn_err:.1e}, kernel product relative error {kp_err:.1e}"
    )


def run(n: int | None = None, quick: bool = False) -> None:
    """The main demo, then every extra demo."""
    main_demo(n, quick)
    for extra in EXTRA_DEMOS:
        print()
        extra(quick)
