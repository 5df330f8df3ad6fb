r"""LDDMM registration of two 2-D curves with lazymat's kernel Hamiltonian flows
============================================================================

A circle of n points (the source) is registered onto a target curve made by a known
deformation of it: the geodesic shooting of a hidden momentum under the Gaussian cometric
:math:`k(x, y) = \exp(-|x - y|^2 / 0.5^2)`. The registration looks for the initial momentum
:math:`p_0` minimising

.. math::

    \gamma\, H(q_0, p_0) + \tfrac12 \|\mu_{q_1} - \mu_\text{target}\|_{k'}^2,
    \qquad q_1 = \operatorname{shoot}(q_0, p_0),

(a kinetic energy plus a kernel norm between the deformed source and the target, which
needs no point correspondences) with lazymat's L-BFGS; the gradient is the symbolic
adjoint of the shooting, so it runs on numpy. A grid carried along by the optimal flow
shows the deformation of the whole plane (``lazymat.solvers.hamiltonian_flow.flow``).

Run ``python examples/lddmm.py`` (or ``make demo``, n = 200); ``--out`` writes a PNG. It prints
the registration's time and its number of reductions: thousands of small ones (n x n pairs),
whose per-call cost lazymat keeps low (issue 17: about 3 s at n = 200 once the kernels are
compiled; the first run on a machine also compiles them, in the background).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

import lazymat
from lazymat.call_cache import cache_info
from lazymat.solvers.hamiltonian_flow import flow, shoot
from lazymat.solvers.kernels import gaussian
from lazymat.solvers.registration import KernelNormLoss, register


def curves(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The source circle (n, 2) and the hidden momentum of the target's deformation."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    source = 0.5 * np.stack([np.cos(t), np.sin(t)], 1)
    momentum = (6.0 / n) * np.stack([np.cos(2 * t), 0.5 * np.sin(3 * t)], 1)  # displacements ~0.3
    return source, momentum


def run(
    n: int = 100,
    out: str | None = None,
    *,
    steps: int = 10,
    method: str = "rk4",
    gamma: float = 1e-3,
    maxiter: int = 40,
    backend: str = "numpy",
) -> dict[str, Any]:
    """Register the circle onto the deformed target; returns losses, iterations, timing."""
    lib = lazymat.get_registry().backend(backend)
    source_np, hidden = curves(n)
    kernel = gaussian(0.5)
    source = lib.from_numpy(source_np)
    target, _ = shoot(source, lib.from_numpy(hidden), kernel, steps=steps, method=method)
    loss = KernelNormLoss(gaussian(0.3))
    requests = _requests()
    start = time.perf_counter()
    result = register(source, target, kernel, loss, gamma=gamma, steps=steps, method=method, maxiter=maxiter)
    seconds = time.perf_counter() - start
    reductions = _requests() - requests

    if out is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        g = np.linspace(-1, 1, 21)
        grid_np = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
        moved = flow(lib.from_numpy(grid_np), source, result.momentum, kernel, steps=steps, method=method)
        moved_np = np.asarray(lib.to_numpy(moved)).reshape(21, 21, 2)
        tgt, q1 = np.asarray(lib.to_numpy(target)), np.asarray(lib.to_numpy(result.points))
        fig, ax = plt.subplots(figsize=(5, 5))
        for k in range(21):
            ax.plot(moved_np[k, :, 0], moved_np[k, :, 1], c="0.8", lw=0.6)
            ax.plot(moved_np[:, k, 0], moved_np[:, k, 1], c="0.8", lw=0.6)
        ax.plot(*np.vstack([source_np, source_np[:1]]).T, "-", c="tab:blue", label="source")
        ax.plot(*np.vstack([tgt, tgt[:1]]).T, "-", c="tab:orange", label="target")
        ax.plot(*np.vstack([q1, q1[:1]]).T, "--", c="tab:green", label="registered source")
        ax.set_aspect("equal")
        ax.legend(loc="lower right", fontsize=7)
        ax.set_title(f"LDDMM, n = {n}: loss {result.initial_loss:.2e} -> {result.loss:.2e}")
        fig.tight_layout()
        fig.savefig(out, dpi=110)
        plt.close(fig)
    return {
        "n": n,
        "initial_loss": result.initial_loss,
        "loss": result.loss,
        "energy": result.energy,
        "iterations": result.info.iterations,
        "seconds": seconds,
        "reductions": reductions,
        "out": out,
    }


def _requests() -> int:
    """Reduction requests built so far in this process (lazymat's call-path statistics)."""
    info = cache_info()["requests"]
    return info["hits"] + info["misses"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--out", default=None)
    parser.add_argument("--method", default="rk4")
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--maxiter", type=int, default=40, help="L-BFGS iterations at most")
    args = parser.parse_args()
    r = run(n=args.n, out=args.out, method=args.method, backend=args.backend, maxiter=args.maxiter)
    print(
        f"LDDMM on n={r['n']}: loss {r['initial_loss']:.3e} -> {r['loss']:.3e} "
        f"({100 * (1 - r['loss'] / r['initial_loss']):.1f}% lower) in {r['iterations']} L-BFGS iterations, "
        f"{r['seconds']:.2f} s ({r['reductions']} reductions, "
        f"{1e3 * r['seconds'] / max(1, r['reductions']):.2f} ms per reduction)"
    )


if __name__ == "__main__":
    main()
