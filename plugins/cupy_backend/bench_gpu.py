"""Benchmark: lazymat's cupy-nvrtc engine against pykeops on the same GPU (Markdown table).

Three reductions over N = M points in 3D (float32 by default), the same data for both:

- Gaussian kernel product  out_i = sum_j exp(-|x_i - y_j|^2 / (2 s^2)) b_j
- softmin (log-sum-exp)    out_i = log sum_j exp(-|x_i - y_j|^2 / eps)
- argKmin(10)              the 10 nearest y_j of each x_i

Run on a machine with a CUDA GPU, cupy, lazymat-cupy and (for the comparison) pykeops::

    python plugins/cupy_backend/bench_gpu.py                 # N = M = 1e5 and 1e6
    python plugins/cupy_backend/bench_gpu.py --sizes 100000 --repeat 7 --output bench.md

Each timing is the median of ``--repeat`` calls after one warm-up call (which compiles
the kernels; compile times are reported separately), synchronised with CUDA events
(cupy) or ``torch.cuda.synchronize`` (pykeops). pykeops runs on torch CUDA tensors that
share the cupy arrays' memory through DLPack; without a CUDA build of torch it falls back
to ``pykeops.numpy`` (host arrays: its times then include the copies, and the table says
so). The "agreement" column compares the first rows of both results: the largest
difference for values (relative to the largest value), the fraction of identical neighbour distances for
argKmin (indices may legitimately differ on exact ties).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

SIGMA = 0.1
EPS = 0.01
K = 10
CHECK_ROWS = 2000


def _median_ms(fn: Callable[[], Any], sync: Callable[[], None], repeat: int) -> tuple[float, float, Any]:
    """(first call in ms, median of the next ``repeat`` calls in ms, last result)."""
    sync()
    t0 = time.perf_counter()
    out = fn()
    sync()
    first = (time.perf_counter() - t0) * 1e3
    times = []
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return first, statistics.median(times), out


def lazymat_ops(x: Any, y: Any, b: Any) -> dict[str, Callable[[], Any]]:
    import lazymat as lm

    X, Y, B = lm.Vi(x), lm.Vj(y), lm.Vj(b)
    engine = "cupy-nvrtc"
    return {
        "Gaussian product": lambda: ((-X.sqdist(Y) * (0.5 / SIGMA**2)).exp() * B).sum(axis=1, engine=engine),
        "softmin (log-sum-exp)": lambda: (-X.sqdist(Y) * (1 / EPS)).logsumexp(axis=1, engine=engine),
        f"argKmin({K})": lambda: X.sqdist(Y).argKmin(K, axis=1, engine=engine),
    }


def keops_ops(x: Any, y: Any, b: Any) -> tuple[dict[str, Callable[[], Any]], Callable[[], None], str]:
    """pykeops versions of the same reductions, their synchronisation, and a note."""
    try:
        import torch

        cuda_torch = torch.cuda.is_available()
    except ImportError:
        cuda_torch = False
    if cuda_torch:
        from pykeops.torch import LazyTensor

        xs, ys, bs = (torch.from_dlpack(a) for a in (x, y, b))  # same memory as the cupy arrays
        sync = _torch_sync
        note = "pykeops.torch on the same CUDA memory (DLPack)"
    else:
        import cupy
        from pykeops.numpy import LazyTensor  # type: ignore[no-redef]

        xs, ys, bs = (cupy.asnumpy(a) for a in (x, y, b))
        sync = _no_sync
        note = "pykeops.numpy (host arrays: times include host-device copies)"
    X = LazyTensor(xs[:, None, :])
    Y = LazyTensor(ys[None, :, :])
    B = LazyTensor(bs[None, :, :])
    D = ((X - Y) ** 2).sum(-1)
    ops = {
        "Gaussian product": lambda: ((-D * (0.5 / SIGMA**2)).exp() * B).sum(dim=1),
        "softmin (log-sum-exp)": lambda: (-D * (1 / EPS)).logsumexp(dim=1),
        f"argKmin({K})": lambda: D.argKmin(K, dim=1),
    }
    return ops, sync, note


def _no_sync() -> None:
    return None


def _torch_sync() -> None:
    import torch

    torch.cuda.synchronize()


def _host(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    if type(a).__module__.startswith("cupy"):
        import cupy

        return cupy.asnumpy(a)
    return np.asarray(a)


def agreement(name: str, ours: Any, theirs: Any, x: Any, y: Any) -> str:
    a, b = _host(ours)[:CHECK_ROWS], _host(theirs)[:CHECK_ROWS]
    if name.startswith("argKmin"):
        xh, yh = _host(x)[:CHECK_ROWS].astype(np.float64), _host(y).astype(np.float64)
        da = np.sum((xh[:, None, :] - yh[a.astype(np.int64)]) ** 2, -1)
        db = np.sum((xh[:, None, :] - yh[b.astype(np.int64)]) ** 2, -1)
        return f"{np.mean(np.isclose(da, db, rtol=1e-5, atol=1e-7)):.4f} same distances"
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    scale = max(float(np.max(np.abs(b64))), 1e-30)  # relative to the largest value
    return f"{np.max(np.abs(a64 - b64)) / scale:.1e} max rel. diff"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e5, 1e6], help="N = M values")
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per measurement")
    parser.add_argument("--dtype", default="float32", choices=["float16", "float32", "float64"])
    parser.add_argument("--device", type=int, default=0)
    parser.add_argument("--no-keops", action="store_true", help="time lazymat only")
    parser.add_argument("--output", help="also write the Markdown table to this file")
    args = parser.parse_args(argv)

    import cupy

    import lazymat as lm

    cupy.cuda.Device(args.device).use()
    props = cupy.cuda.runtime.getDeviceProperties(args.device)
    gpu = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    sync = cupy.cuda.get_current_stream().synchronize
    keops_note = "pykeops not run (--no-keops)"
    versions = [f"lazymat {lm.__version__}", f"cupy {cupy.__version__}"]
    if not args.no_keops:
        try:
            import pykeops

            versions.append(f"pykeops {pykeops.__version__}")
        except ImportError as exc:
            keops_note = f"pykeops not available: {exc}"
            args.no_keops = True

    rows = []
    compile_rows = []
    for size in (int(s) for s in args.sizes):
        rng = cupy.random.default_rng(0)
        x = rng.random((size, 3), dtype=np.float64).astype(args.dtype)
        y = rng.random((size, 3), dtype=np.float64).astype(args.dtype)
        b = rng.standard_normal((size, 1), dtype=np.float64).astype(args.dtype)
        ours = lazymat_ops(x, y, b)
        theirs: dict[str, Callable[[], Any]] = {}
        keops_sync: Callable[[], None] = _no_sync
        if not args.no_keops:
            try:
                theirs, keops_sync, keops_note = keops_ops(x, y, b)
            except Exception as exc:  # pykeops cannot compile or run here
                keops_note = f"pykeops failed: {type(exc).__name__}: {exc}"
        for name, fn in ours.items():
            first, ms, out = _median_ms(fn, sync, args.repeat)
            cell, ratio, agree, k_compile = "n/a", "", "", "n/a"
            if name in theirs:
                try:
                    k_first, k_ms, k_out = _median_ms(theirs[name], keops_sync, args.repeat)
                    cell, ratio = f"{k_ms:.2f}", f"{k_ms / ms:.2f}x"
                    agree = agreement(name, out, k_out, x, y)
                    k_compile = f"{k_first:.0f}"
                except Exception as exc:
                    cell = f"failed ({type(exc).__name__})"
                    keops_note = f"pykeops failed on {name}: {exc}"
            rows.append(f"| {name} | {size:.0e} | {ms:.2f} | {cell} | {ratio} | {agree} |")
            compile_rows.append(f"| {name} | {size:.0e} | {first:.0f} | {k_compile} |")
            print(rows[-1], file=sys.stderr, flush=True)

    lines = [
        f"GPU: {gpu}; {', '.join(versions)}; dtype {args.dtype}; "
        f"median of {args.repeat} calls after a warm-up.",
        f"KeOps: {keops_note}.",
        "",
        "| reduction | N = M | cupy-nvrtc (ms) | pykeops (ms) | pykeops / cupy-nvrtc | agreement |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "First call (includes compiling the kernel, unless cached on disk), ms:",
        "",
        "| reduction | N = M | cupy-nvrtc | pykeops |",
        "|---|---|---|---|",
        *compile_rows,
    ]
    table = "\n".join(lines)
    print(table)
    if args.output:
        with open(args.output, "w") as f:
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
