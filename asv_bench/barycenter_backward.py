"""The cost of differentiating free-support barycenter points, against the forward solve.

For N = M points per cloud (K = 3 noisy, scaled and shifted copies of one uniform cloud of the unit square,
random weights),
times ``free_support_barycenter`` to its fixed point (the forward: Sinkhorn solves and
fixed-point steps) and ``torch.autograd.grad`` of a loss on the points (the backward: one
CG solve with the barycenter's Hessian, each product one CG solve with the Sinkhorn
Jacobian per cloud, then one more per cloud and a reduction's VJP), in the same run, best
of ``--repeats``, float64 torch on the CPU. Prints a markdown table with the ratios
backward / forward and backward / one step of the forward (its K Sinkhorn solves and the
move), and the load average.

    .venv/bin/python asv_bench/barycenter_backward.py --sizes 100 300 1000 --repeats 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lazymat.solvers import free_support_barycenter


def clouds(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """K noisy, scaled and shifted copies of one uniform cloud, their weights, and a start."""
    rng = np.random.default_rng(seed)
    base = rng.random((n, 2))
    scale = np.array([1.0, 1.2, 0.9])[:k, None, None]
    shift = np.array([[0.0, 0.0], [0.2, 0.1], [-0.1, 0.2]])[:k, None, :]
    y = base * scale + shift + 0.01 * rng.standard_normal((k, n, 2))
    a = rng.random((k, n)) + 0.5
    # the barycenter of the copies without noise (uniform lambdas): the forward starts near x*
    return y, a / a.sum(1, keepdims=True), base * scale.mean() + shift.mean(axis=0)


def measure(n: int, repeats: int, blur: float, tol: float, stop: float) -> tuple[float, float, int]:
    y, a, start = clouds(n, 3, n)
    x0 = torch.tensor(start)
    forward, backward, steps = np.inf, np.inf, 0
    for _ in range(repeats):
        yt, at = torch.tensor(y, requires_grad=True), torch.tensor(a, requires_grad=True)
        start = time.perf_counter()
        r = free_support_barycenter(yt, x0, at, blur=blur, tol=tol, max_iter=1000, stop=stop)
        middle = time.perf_counter()
        torch.autograd.grad((r.points**2).sum(), [yt, at])
        end = time.perf_counter()
        forward, backward, steps = min(forward, middle - start), min(backward, end - middle), r.n_iter
    return forward, backward, steps


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--blur", type=float, default=0.05)
    parser.add_argument("--tol", type=float, default=1e-9)
    parser.add_argument("--stop", type=float, default=1e-14)
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    print(f"load average before: {load()}")
    print(f"blur {args.blur}, Sinkhorn tol {args.tol}, stop {args.stop}, K = 3, D = 2, float64 torch (CPU)\n")
    print("| N = M | steps | forward (s) | backward (s) | backward / forward | backward / one step |")
    print("|---|---|---|---|---|---|")
    for n in args.sizes:
        forward, backward, steps = measure(n, args.repeats, args.blur, args.tol, args.stop)
        step = forward / (steps + 1)  # the first solves, then one per step
        print(
            f"| {n} | {steps} | {forward:.3g} | {backward:.3g} | {backward / forward:.3f} "
            f"| {backward / step:.2f} |",
            flush=True,
        )
    print(f"\nload average after: {load()}")


if __name__ == "__main__":
    main()
