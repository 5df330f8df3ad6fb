"""Direction-finding timings of the jax-xla engine against dense jax.numpy and OTT-JAX.

Two reductions on float32 point clouds in D=3 (default N = M = 10^4):

- Gaussian kernel product  a_i = sum_j exp(-|x_i - y_j|^2 / 2s^2) b_j;
- softmin (log-sum-exp)    f_i = -eps log sum_j exp((g_j - |x_i - y_j|^2) / eps).

Peers: the same formulas written densely with jax.numpy (an N*M matrix, GEMM for the
distances), and OTT-JAX's ``PointCloud(x, y, epsilon=eps, batch_size=B).apply_lse_kernel``
(online log-sum-exp over row batches). Every function is jitted twice, with XLA's default
options and with XLA:CPU's experimental YNNPACK fusions off (:data:`YNN_OFF`; jax 0.10
turns them on, and they speed some fused reductions up and slow others down several
fold), and warmed up (compile time excluded); the figure is the median of
``--repeat`` runs. Results are checked against each other. Not a test: no assertion on time.

    python plugins/jax_backend/benchmarks/compare_peers.py --n 10000
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import lazymat as lm

#: XLA:CPU's experimental YNNPACK fusions off (as XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=)
YNN_OFF = {"xla_cpu_experimental_ynn_fusion_type": ""}


def _timed(fn: Callable[..., Any], args: tuple[Any, ...], repeat: int) -> float:
    jax.block_until_ready(fn(*args))  # warm up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _sqdist(x: Any, y: Any) -> Any:
    return jnp.sum(x**2, 1)[:, None] + jnp.sum(y**2, 1)[None, :] - 2 * x @ y.T


def _ott_lse(batch_size: int | None, eps: float) -> Callable[..., Any]:
    # OTT-JAX 0.6 calls jax.interpreters.batching.is_vmappable, which jax 0.10 no longer
    # exports; its batched (online) mode needs the name back to run at all.
    import jax.interpreters.batching as public_batching
    from jax._src.interpreters import batching as _batching
    from ott.geometry.pointcloud import PointCloud

    if not hasattr(public_batching, "is_vmappable"):
        public_batching.is_vmappable = _batching.is_vmappable  # type: ignore[attr-defined]

    def f(x: Any, y: Any, g: Any) -> Any:
        geom = PointCloud(x, y, epsilon=eps, batch_size=batch_size)
        return -geom.apply_lse_kernel(jnp.zeros(x.shape[0], x.dtype), g, eps, axis=1)[0]

    return f


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1024, help="OTT-JAX's batch_size")
    parser.add_argument("--no-dense", action="store_true", help="skip the dense N*M peers")
    opts = parser.parse_args()
    rng = np.random.default_rng(0)
    n = opts.n
    x, y = (jnp.asarray(rng.random((n, 3)), jnp.float32) for _ in range(2))
    b, g = jnp.asarray(rng.standard_normal((n, 1)), jnp.float32), jnp.asarray(rng.random(n), jnp.float32)
    s2, eps = 0.1**2, 0.05

    def lazy_gauss(x: Any, y: Any, b: Any) -> Any:
        return (-lm.Vi(x).sqdist(lm.Vj(y)) / (2 * s2)).exp() @ b

    def lazy_softmin(x: Any, y: Any, g: Any) -> Any:
        return -eps * ((lm.Vj(g) - lm.Vi(x).sqdist(lm.Vj(y))) / eps).logsumexp(axis=1)[:, 0]

    def dense_gauss(x: Any, y: Any, b: Any) -> Any:
        return jnp.exp(-_sqdist(x, y) / (2 * s2)) @ b

    def dense_softmin(x: Any, y: Any, g: Any) -> Any:
        return -eps * jax.nn.logsumexp((g[None, :] - _sqdist(x, y)) / eps, axis=1)

    cases: list[tuple[str, str, Callable[..., Any], tuple[Any, ...]]] = [
        ("gaussian K @ b", "lazymat jax-xla", lazy_gauss, (x, y, b)),
        ("softmin (lse)", "lazymat jax-xla", lazy_softmin, (x, y, g)),
        ("softmin (lse)", f"OTT-JAX batch_size={opts.batch_size}", _ott_lse(opts.batch_size, eps), (x, y, g)),
    ]
    if not opts.no_dense:
        cases += [
            ("gaussian K @ b", "dense jax.numpy", dense_gauss, (x, y, b)),
            ("softmin (lse)", "dense jax.numpy", dense_softmin, (x, y, g)),
        ]
    reference: dict[str, Any] = {}
    print(f"N = M = {n}, D = 3, float32, {jax.devices()[0]}; median of {opts.repeat} (compile excluded)")
    print(f"  {'':16s} {'':28s} {'XLA defaults':>12s} {'YNN off':>12s}")
    for what, who, fn, args in cases:
        seconds = []
        for options in (None, YNN_OFF):
            jitted = jax.jit(fn, compiler_options=options)
            out = np.asarray(jitted(*args)).ravel()
            ref = reference.setdefault(what, out)
            err = float(np.max(np.abs(out - ref)) / max(1.0, float(np.max(np.abs(ref)))))
            if err > 1e-4:
                raise AssertionError(f"{who} disagrees on {what}: relative difference {err:.1e}")
            seconds.append(_timed(jitted, args, opts.repeat))
        print(f"  {what:16s} {who:28s} " + " ".join(f"{t * 1e3:9.1f} ms" for t in seconds))


if __name__ == "__main__":
    main()
