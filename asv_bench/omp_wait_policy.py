"""OpenMP's wait policy and lazymat's loops (issue 17): the same work with OMP_WAIT_POLICY unset and PASSIVE.

torch and the native-cpu kernels share one OpenMP runtime (torch's libgomp), whose idle
threads spin-wait for the next parallel region; on a machine with fewer free cores than
threads the spinning takes the cores the working threads need. libgomp reads the policy once,
at start-up, for the whole process, so each setting runs in a fresh process (alternating,
``--rounds`` times each, so that both see the same load):

- a 64^2 grid barycenter (3 shapes, 50 iterations; ``peer_grid``'s case), torch and numpy;
- a torch ``SamplesLoss("sinkhorn", blur=0.05)`` value and backward at N = 2,000.

``.venv/bin/python asv_bench/omp_wait_policy.py`` prints one markdown row per case (medians of
3 calls per process) with the load average (README, "Small problems in loops"; BENCHMARKS.md,
run Q2).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _median_seconds(fn: Callable[[], Any], repeats: int = 3) -> float:
    fn()  # warm-up: kernels loaded, caches filled
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure() -> dict[str, float]:
    """The cases' median seconds in this process (whatever its wait policy)."""
    sys.path.insert(0, str(HERE))
    import numpy as np
    import torch
    from comparison.peer_grid import BARYCENTER_WEIGHTS, GRID_BARYCENTER_REG, grid_shapes

    import lazymat as lm
    from lazymat.solvers import barycenter_grid

    out = {}
    t = np.linspace(0, 1, 64)
    blur = math.sqrt(GRID_BARYCENTER_REG / 2)
    for backend in ("torch", "numpy"):
        conv: Callable[[Any], Any] = torch.from_numpy if backend == "torch" else np.asarray
        shapes, axis = conv(grid_shapes(t)), conv(t.astype(np.float32))
        weights = conv(np.asarray(BARYCENTER_WEIGHTS, np.float32))

        def barycenter(shapes: Any = shapes, axis: Any = axis, weights: Any = weights) -> Any:
            return barycenter_grid(
                shapes, weights, axes=(axis, axis), blur=blur, scaling=None, tol=None, max_iter=50
            ).barycenter

        out[f"barycenter 64^2 ({backend})"] = _median_seconds(barycenter)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((2000, 3), dtype=np.float32)).requires_grad_()
    y = torch.from_numpy(rng.random((2000, 3), dtype=np.float32))
    loss = lm.solvers.SamplesLoss("sinkhorn", blur=0.05)
    out["Sinkhorn + gradient, N = 2,000 (torch)"] = _median_seconds(lambda: loss(x, y).backward())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="fresh processes per setting")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure()))
        return
    load = Path("/proc/loadavg").read_text().split()[:3]
    columns: list[tuple[str, dict[str, float]]] = []
    for _ in range(args.rounds):
        for policy in (None, "PASSIVE"):
            env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
            if policy is not None:
                env["OMP_WAIT_POLICY"] = policy
            done = subprocess.run(
                [sys.executable, __file__, "--child"], env=env, capture_output=True, text=True, check=True
            )
            columns.append((policy or "unset", json.loads(done.stdout.strip().splitlines()[-1])))
    end = Path("/proc/loadavg").read_text().split()[:3]
    print(f"load average {' '.join(load)} at the start, {' '.join(end)} at the end")
    print("| | " + " | ".join(name for name, _ in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for case in columns[0][1]:
        print(f"| {case} | " + " | ".join(f"{c[case]:.2f} s" for _, c in columns) + " |")


if __name__ == "__main__":
    main()
